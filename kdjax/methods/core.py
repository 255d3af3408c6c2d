"""Declarative distillation methods: :class:`Method`, :class:`Stage`, :func:`build_method`.

A *method* is data, not code in the train loop: a CE weight and a tuple of weighted loss *terms*.
Each term names a registered loss adapter (:mod:`kdjax.methods.registry`), its hyper-parameters,
the student/teacher taps it reads and (optionally) a trainable connector module. The train step
only calls :meth:`Method.loss`; it never branches on method names. "Main + additional"
combinations (zkxufo/TTM's ``-b main -a add``, e.g. WTTM + CRD) are simply two terms.

Config form (``config.method``; named recipes: :func:`kdjax.methods.preset`)::

  method.ce_weight = 0.1
  method.terms.kd = dict(weight=0.9, temperature=4.0)          # registered term 'kd'
  method.terms.kd_extra = dict(loss='kd', weight=..., ...)      # same loss twice: give 'loss'
  method.terms.at = dict(weight=1000.0, layers='all')          # taps are hyper-parameters

Two steps. :func:`build_method` validates the config (unknown terms or hyper-parameters,
negative weights, invalid values) without any model. :meth:`Method.bind` then resolves every
term's taps against the pair's tap shapes (``at(layers='all')`` = ``stage1..N``, N the pair's
common stage count) and reports missing taps; ``kdjax.train.state.init_train_state`` does it
and initialises the connectors on zeros of those taps.

Stages (methods.md §7.3). A method may declare an *init stage* run before the main one
(RepDistiller's ``helper/pretrain.py:init`` for AB, FT and FSP)::

  method.terms = {}                              # main stage: CE only (AB, FSP)
  method.trainable = 'student'                   # main stage's trainable set
  method.init.epochs = 30                        # 0 = no init stage
  method.init.ce_weight = 0.0                    # the init stage's own loss: CE weight + terms
  method.init.terms.ab = dict(loss='ab', weight=1.0, margin=1.0)
  method.init.trainable = 'student_features+connectors'
  method.init.lr = 0.0                           # lr of the stage; 0 = optim.lr
  method.init.milestones = ()                    # stage epochs where lr *= optim.decay

Gradient groups. Every term belongs to a loss *group*, ``'distill'`` unless its config gives
``group=...`` (``method.terms.kd = dict(weight=0.9, group='distill')``); the CE is the group
``'task'``. Groups change nothing for an ordinary optimiser (the step differentiates the total
loss, as always); an optimiser that takes one gradient per group (``optim.name = 'dot'``,
:class:`kdjax.train.optim.GroupedGradientTransformation`) gets ``grad(sum of the group's
weighted losses)`` for each group (:meth:`Method.loss` with ``by_group``).

A stage's trainable set is a ``+``-joined list of selectors (:data:`TRAINABLE_GROUPS` or a
parameter path ``student/<module>/...`` / ``connectors/<term key>/<submodule>/...``); the rest of
the parameters is frozen (no update, no weight decay, BatchNorm statistics kept). ``connectors``
means the connectors of the stage's own terms. A term key used in both stages shares one
connector (both terms must build the same module): FT's init term ``ft`` (loss
``ft_paraphraser``) trains the paraphraser of the main term ``ft``'s connector.
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect
from typing import Any, Callable, Dict, Mapping, NamedTuple, Optional, Tuple

import jax
import jax.numpy as jnp

from kdjax import checks
from kdjax.errors import UserError
from kdjax.losses.logits import cross_entropy
from kdjax.methods.registry import _TERMS, BuildContext, TermSpec, ViewSpec


class Outputs(NamedTuple):
  """A network's outputs as the losses see them."""

  logits: jnp.ndarray
  taps: Mapping[str, jnp.ndarray]


class Batch(NamedTuple):
  labels: jnp.ndarray  # (B,) int
  index: jnp.ndarray  # (B,) dataset index of each example (CRD, analysis)
  epoch: Any = 1  # current epoch counted from 1 (scalar; DKD warm-up and friends)
  mix_labels: Any = None  # mixup: the partner labels (B,) ...
  mix_lam: Any = None  # ... and the mixing weight (scalar): CE = lam CE(y) + (1-lam) CE(y')


# ---- tap resolution (used by the families' ``taps`` functions) -------------------------------
def common_stages(student_shapes: Mapping, teacher_shapes: Mapping, prefix: str = "stage") -> int:
  """The number N of stages both models tap (``<prefix>1..N`` present in both): RepDistiller's
  ``zip`` over ``feat[1:-1]``, i.e. the smaller of the two stage counts."""
  n = 0
  while f"{prefix}{n + 1}" in student_shapes and f"{prefix}{n + 1}" in teacher_shapes:
    n += 1
  return n


def stage_layers(
  term: str, layers, s_shapes: Mapping, t_shapes: Mapping, prefix: str = "stage"
) -> Tuple[str, ...]:
  """``layers='all'`` -> ``<prefix>1..N`` (N = :func:`common_stages`); a sequence of stage
  numbers -> those stages."""
  n = common_stages(s_shapes, t_shapes, prefix)
  if n == 0:
    raise UserError(
      f"term {term}: the student and teacher share no '{prefix}1' tap (student "
      f"has {sorted(s_shapes)}, teacher {sorted(t_shapes)}): use models with "
      f"stage taps."
    )
  if isinstance(layers, str):
    if layers != "all":
      raise UserError(
        f"term {term}: layers must be 'all' or a sequence of stage numbers in "
        f"1..{n}, got {layers!r}."
      )
    return tuple(f"{prefix}{i}" for i in range(1, n + 1))
  try:
    idx = tuple(layers)
  except TypeError:
    idx = None
  if (
    not idx
    or not all(isinstance(i, int) and not isinstance(i, bool) and 1 <= i <= n for i in idx)
    or len(set(idx)) != len(idx)
  ):
    raise UserError(
      f"term {term}: layers must be 'all' or distinct stage numbers in 1..{n} "
      f"(the pair's common stages), got {layers!r}."
    )
  return tuple(f"{prefix}{i}" for i in idx)


def stage_layer(
  term: str, layer, s_shapes: Mapping, t_shapes: Mapping, prefix: str = "stage"
) -> str:
  """``layer='last'`` -> ``<prefix>N`` (RepDistiller's ``feat[-2]``); an int k -> ``<prefix>k``."""
  if layer == "last":
    return stage_layers(term, "all", s_shapes, t_shapes, prefix)[-1]
  if isinstance(layer, str):
    raise UserError(f"term {term}: layer must be 'last' or a stage number, got {layer!r}.")
  return stage_layers(term, (layer,), s_shapes, t_shapes, prefix)[0]


# ---- terms and methods -----------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Term:
  key: str  # config key (unique within the method)
  spec: TermSpec
  weight: float
  hparams: Mapping[str, Any]
  student_taps: Optional[Tuple[str, ...]] = None  # resolved taps (None until Method.bind)
  teacher_taps: Optional[Tuple[str, ...]] = None
  connector: Any = None  # the term's nn.Module (spec.connector(**hparams)) or None
  group: str = "distill"  # gradient group (module docstring); the CE is TASK_GROUP

  @property
  def resolved(self) -> bool:
    return self.student_taps is not None


# Named parameter groups a stage's ``trainable`` may list (besides parameter paths).
TRAINABLE_GROUPS = {
  "student": "every student parameter",
  "student_features": "the student parameters its taps depend on (all but the classifier; "
  "RepDistiller's get_feat_modules())",
  "student_head": "the student parameters only the logits depend on (the classifier)",
  "connectors": "the connectors of the stage's own terms",
}
DEFAULT_TRAINABLE = ("student", "connectors")
TASK_GROUP, DEFAULT_GROUP = "task", "distill"  # the CE's gradient group; a term's default


def _select(out: Optional[Outputs], keys, side: str, term: Term) -> Optional[Outputs]:
  if out is None:
    return None
  missing = [k for k in keys if k not in out.taps]
  if missing:
    raise UserError(
      f"term {term.key} ({term.spec.name}) reads {side} taps {missing}, but the "
      f"{side} outputs have {sorted(out.taps)}."
    )
  return Outputs(out.logits, {k: out.taps[k] for k in keys})


@dataclasses.dataclass(frozen=True)
class Method:
  """A distillation method: ``loss = ce_weight * CE + sum_k weight_k * term_k`` (batch-averaged),
  trained with ``trainable`` after an optional :class:`Stage` ``init``."""

  name: str
  ce_weight: float
  terms: Tuple[Term, ...]
  label_smoothing: float = 0.0
  trainable: Tuple[str, ...] = DEFAULT_TRAINABLE
  init: Optional["Stage"] = None
  path: str = "method"  # config path, for messages

  @property
  def needs_teacher(self) -> bool:
    """Whether any stage of the method needs the teacher (the trainer loads it)."""
    return self.loss_needs_teacher or (self.init is not None and self.init.method.needs_teacher)

  @property
  def views(self) -> Optional[ViewSpec]:
    """The :class:`ViewSpec` of this method's view-aware terms (one at most), or None."""
    specs = {t.spec.views for t in self.terms if t.spec.views is not None and t.weight != 0}
    if len(specs) > 1:
      raise UserError(
        f"{self.path}.terms combine terms with different view sets "
        f"({sorted(v.name for v in specs)}): one method can use one."
      )
    return next(iter(specs), None)

  @property
  def grad_groups(self) -> Tuple[str, ...]:
    """The gradient groups of this method's loss: ``'task'`` (the CE) and each contributing
    term's group, in order of first appearance."""
    groups = [TASK_GROUP] + [t.group for t in self.terms if t.weight != 0 and not t.spec.monitor]
    return tuple(dict.fromkeys(groups))

  @property
  def loss_needs_teacher(self) -> bool:
    """Whether this method's own loss reads the teacher (the step runs it)."""
    return any(t.spec.needs_teacher and (t.weight != 0 or t.spec.monitor) for t in self.terms)

  @property
  def is_bound(self) -> bool:
    """Whether every term's taps are resolved (:meth:`bind`), the init stage's included."""
    return all(t.resolved for t in self.terms) and (self.init is None or self.init.method.is_bound)

  def _resolved_terms(self):
    unbound = [t.key for t in self.terms if not t.resolved]
    if unbound:
      raise UserError(
        f"{self.path}.terms {unbound} read taps that depend on the models: bind the "
        "method to the pair first (method.bind(student_shapes, teacher_shapes); "
        "kdjax.train.state.init_train_state does it)."
      )
    return self.terms

  @property
  def student_taps(self):
    return tuple(sorted({k for t in self._resolved_terms() for k in t.student_taps}))

  @property
  def teacher_taps(self):
    return tuple(sorted({k for t in self._resolved_terms() for k in t.teacher_taps}))

  # -- binding to the pair's models -------------------------------------------------------------
  def bind(self, student_shapes: Mapping, teacher_shapes: Optional[Mapping]) -> "Method":
    """This method with every term's taps resolved against the models' tap shapes (key ->
    shape), the init stage's included. Raises :class:`UserError` for taps the models lack."""
    teacher_shapes = teacher_shapes or {}
    terms = []
    for t in self.terms:
      try:
        s_keys, t_keys = t.spec.resolve_taps(t.hparams, student_shapes, teacher_shapes)
      except UserError as e:
        raise UserError(f"{self.path}.terms.{t.key}: {e}") from None
      for side, need, have in (
        ("student", s_keys, student_shapes),
        ("teacher", t_keys, teacher_shapes),
      ):
        missing = [k for k in need if k not in have]
        if missing:
          raise UserError(
            f"{self.path}.terms.{t.key} ({t.spec.name}) needs {side} taps {missing}, but the "
            f"{side} model provides {sorted(have)}."
          )
      terms.append(dataclasses.replace(t, student_taps=s_keys, teacher_taps=t_keys))
    init = self.init
    if init is not None:
      init = dataclasses.replace(init, method=init.method.bind(student_shapes, teacher_shapes))
    return dataclasses.replace(self, terms=tuple(terms), init=init)

  def check_shapes(self, student_shapes: Mapping, teacher_shapes: Optional[Mapping]) -> "Method":
    """Config-time check that the models provide every tap the terms (of every stage) need;
    returns the bound method (:meth:`bind`)."""
    return self.bind(student_shapes, teacher_shapes)

  # -- connectors -------------------------------------------------------------------------------
  def connector_keys(self):
    """Keys of the connectors this method's own terms use (the ``connectors`` group)."""
    return tuple(t.key for t in self.terms if t.connector is not None)

  def connector_terms(self) -> Dict[str, Term]:
    """term key -> the term that owns (and initialises) each connector, the init stage's
    included; a key used by both stages is one shared module, initialised on the main stage's
    taps."""
    out = {t.key: t for t in self.terms if t.connector is not None}
    if self.init is not None:
      for key, t in self.init.method.connector_terms().items():
        if key in out and out[key].connector != t.connector:
          raise UserError(
            f"{self.init.method.path}.terms.{key} and {self.path}.terms.{key} share the "
            f"connector {key!r} (a term key used in both stages shares its trainable module), "
            f"but build different modules ({type(t.connector).__name__} vs "
            f"{type(out[key].connector).__name__}, or other hyper-parameters): give both the "
            f"same connector hyper-parameters, or the init term another key."
          )
        out.setdefault(key, t)
    return out

  def connectors(self) -> Dict[str, Any]:
    """term key -> connector ``nn.Module`` (both stages; see :meth:`connector_terms`)."""
    return {k: t.connector for k, t in self.connector_terms().items()}

  def init_connectors(self, student_shapes: Mapping, teacher_shapes: Optional[Mapping], rng):
    """``(modules, params, batch_stats)`` of the connectors, each ``init``-ed on zeros of its
    term's tap shapes (key ``i`` in sorted order with ``fold_in(rng, i)``). Needs a bound
    method."""
    modules, params, stats = {}, {}, {}
    for i, (key, t) in enumerate(sorted(self.connector_terms().items())):
      if not t.resolved:
        raise UserError(
          f"terms.{key} ({t.spec.name}): bind the method to the pair first "
          "(method.bind(student_shapes, teacher_shapes))."
        )
      s_in = tuple(jnp.zeros(student_shapes[k], jnp.float32) for k in t.student_taps)
      t_in = tuple(jnp.zeros((teacher_shapes or {})[k], jnp.float32) for k in t.teacher_taps)
      try:
        v = t.connector.init(jax.random.fold_in(rng, i), s_in, t_in, train=False)
      except UserError:
        raise
      except ValueError as e:  # a reference module's own shape check (losses.connectors)
        raise UserError(f"method terms.{key} ({t.spec.name}): {e}") from None
      modules[key] = t.connector
      params[key] = v.get("params", {})
      if "batch_stats" in v:
        stats[key] = v["batch_stats"]
    return modules, params, stats

  # -- explicit term states ---------------------------------------------------------------------
  def init_states(self, ctx: BuildContext, rng) -> Dict[str, Any]:
    """Initial explicit states of the stateful terms (term key -> pytree), the init stage's
    included (a key used by both stages shares one state). ``ctx`` carries what the terms need
    from the run; each term's ``init_state`` sees its own taps' shapes in it."""
    out = {}
    if self.init is not None:
      out.update(self.init.method.init_states(ctx, jax.random.fold_in(rng, 1_000_003)))
    for i, t in enumerate(self._resolved_terms()):
      if t.spec.init_state is not None:
        tctx = dataclasses.replace(
          ctx,
          student_shapes={k: tuple(ctx.student_shapes[k]) for k in t.student_taps},
          teacher_shapes={k: tuple(ctx.teacher_shapes[k]) for k in t.teacher_taps},
        )
        out[t.key] = t.spec.init_state(tctx, jax.random.fold_in(rng, i), **t.hparams)
    return out

  # -- loss -------------------------------------------------------------------------------------
  def loss(
    self,
    student: Outputs,
    teacher: Optional[Outputs],
    batch: Batch,
    *,
    connectors: Optional[Mapping[str, Callable]] = None,
    states: Optional[Mapping[str, Any]] = None,
    return_states: bool = False,
    by_group: Optional[Tuple[str, ...]] = None,
  ):
    """Per-example total loss ``(B,)`` and a dict of batch-mean metrics (unweighted terms); with
    ``return_states`` also the updated term states. Each term sees its own taps only. With
    ``by_group`` (a tuple of gradient group names covering :attr:`grad_groups`) the loss is
    ``(G, B)`` instead: row ``i`` the weighted sum of group ``by_group[i]``'s losses (zeros for
    a group without terms), the rows summing to the total."""
    if by_group is not None:
      extra = [g for g in self.grad_groups if g not in by_group]
      if extra:
        raise UserError(
          f"{self.path}.terms use gradient group(s) {extra}, which the optimiser does not "
          f"take (its groups: {list(by_group)}): set those terms' 'group' to one of them."
        )
      parts = {}
    new_states = dict(states or {})
    views = self.views
    full_student, full_teacher = student, teacher
    if views is not None:  # CE and the ordinary terms see the normal views (rows b·V)
      student = _normal_rows(student, views.num_views, batch.labels.shape[0], "student")
      if teacher is not None:
        teacher = _normal_rows(teacher, views.num_views, batch.labels.shape[0], "teacher")
    # At least float32 (half-precision logits are upcast); float64 stays float64 under x64.
    z = student.logits.astype(jnp.promote_types(student.logits.dtype, jnp.float32))
    k = student.logits.shape[-1]
    onehot = jax.nn.one_hot(batch.labels, k, dtype=z.dtype)
    if batch.mix_labels is not None:
      onehot = batch.mix_lam * onehot + (1.0 - batch.mix_lam) * jax.nn.one_hot(
        batch.mix_labels, k, dtype=z.dtype
      )
    if self.label_smoothing:
      onehot = onehot * (1.0 - self.label_smoothing) + self.label_smoothing / k
    ce = cross_entropy(z, onehot)
    total = self.ce_weight * ce
    if by_group is not None:
      parts[TASK_GROUP] = total
    metrics = {"ce": ce.mean()}
    for t in self._resolved_terms():
      if t.spec.monitor:  # metrics only: stop-gradient outputs, no loss
        s_in = _select(student, t.student_taps, "student", t)
        t_in = _select(teacher, t.teacher_taps, "teacher", t)
        vals = t.spec.fn(
          jax.lax.stop_gradient(s_in), jax.lax.stop_gradient(t_in), batch, **t.hparams
        )
        metrics.update({f"{t.key}/{n}": jnp.mean(v) for n, v in vals.items()})
        continue
      if t.weight == 0:
        continue
      kw = dict(t.hparams)
      if t.connector is not None:
        kw["connector"] = (connectors or {}).get(t.key)
      s_in, t_in = (full_student, full_teacher) if t.spec.views is not None else (student, teacher)
      s_in = _select(s_in, t.student_taps, "student", t)
      t_in = _select(t_in, t.teacher_taps, "teacher", t)
      if t.spec.init_state is not None:
        v, new_states[t.key] = t.spec.fn(s_in, t_in, batch, state=new_states[t.key], **kw)
      else:
        v = t.spec.fn(s_in, t_in, batch, **kw)
      metrics[t.key] = v.mean()
      total = total + t.weight * v
      if by_group is not None:
        parts[t.group] = parts[t.group] + t.weight * v if t.group in parts else t.weight * v
    if by_group is not None:
      total = jnp.stack([parts[g] if g in parts else jnp.zeros_like(ce) for g in by_group])
    if return_states:
      return total, metrics, new_states
    return total, metrics

  def dry_run(self, num_classes: int = 5, batch: int = 4):
    """Evaluates every logit-only term once on tiny inputs so hyper-parameter errors (T <= 0,
    ...) surface at config time, before any compilation."""
    b = Batch(jnp.zeros((batch,), jnp.int32), jnp.arange(batch))
    for t in self.terms:
      if (
        not t.spec.static_taps
        or t.spec.student_taps
        or t.spec.teacher_taps
        or t.connector is not None
        or t.spec.init_state is not None
      ):
        continue
      rows = batch * (t.spec.views.num_views if t.spec.views is not None else 1)
      s = Outputs(jnp.zeros((rows, num_classes)), {})
      try:
        jax.eval_shape(lambda s_, t_: t.spec.fn(s_, t_, b, **t.hparams), s, s)
      except (ValueError, TypeError) as e:
        raise UserError(f"{self.path}.terms.{t.key}: {e}") from None
    if self.init is not None:
      self.init.method.dry_run(num_classes, batch)


def _normal_rows(out: Outputs, num_views: int, batch: int, side: str) -> Outputs:
  """The normal-view rows ``0, V, 2V, ...`` of ``V·B``-row outputs (:class:`ViewSpec`)."""
  if out.logits.shape[0] != num_views * batch:
    raise UserError(
      f"the method's terms use {num_views} views per example, so the {side} "
      f"outputs need {num_views} x {batch} rows (row b*V + v), got "
      f"{out.logits.shape[0]}: run the forward on the views (the train step does)."
    )
  return Outputs(out.logits[::num_views], {k: v[::num_views] for k, v in out.taps.items()})


def connector_calls(
  modules: Mapping[str, Any], params: Mapping[str, Any], batch_stats: Mapping[str, Any]
):
  """``(calls, new_stats)``: term key -> callable applying that connector with ``params[key]``
  (what :meth:`Method.loss` passes the adapters), and a dict of BatchNorm statistics that the
  calls update in place (a connector with ``batch_stats`` runs with them mutable)."""
  new_stats = dict(batch_stats)

  def make(k, m):
    def call(*a, **kw):
      v = {"params": params.get(k, {})}
      if k in new_stats:
        v["batch_stats"] = new_stats[k]
        out, upd = m.apply(v, *a, mutable=["batch_stats"], **kw)
        new_stats[k] = upd["batch_stats"]
        return out
      return m.apply(v, *a, **kw)

    return call

  return {k: make(k, m) for k, m in modules.items()}, new_stats


@dataclasses.dataclass(frozen=True)
class Stage:
  """A training stage run before the main one (methods.md §7.3; RepDistiller's 30-epoch
  ``helper/pretrain.py:init`` of AB, FT and FSP).

  ``method`` is the stage's loss (its own ``ce_weight`` and terms, run by its own jitted step),
  ``trainable`` the selectors of the parameters it optimises (the rest is frozen: no update, no
  weight decay, BatchNorm statistics kept), ``epochs`` its length, ``lr`` its constant learning
  rate (None = ``optim.lr``; momentum, Nesterov and weight decay are ``optim``'s), multiplied by
  ``optim.decay`` at each of the stage's own ``milestones`` (epochs from the stage's start; SSKD's
  teacher head: 30, 45). The main stage follows with a fresh optimiser state and keeps every
  parameter the stage trained.
  """

  name: str
  method: "Method"
  epochs: int
  trainable: Tuple[str, ...]
  lr: Optional[float] = None
  milestones: Tuple[int, ...] = ()


def parse_trainable(spec, where: str) -> Tuple[str, ...]:
  """``'student_features+connectors'`` -> ``('student_features', 'connectors')``; checks the
  syntax (paths are checked against the parameters by ``kdjax.train.stages``)."""
  if isinstance(spec, str):
    parts = [p.strip() for p in spec.split("+")]
  elif isinstance(spec, (tuple, list)):
    parts = [str(p).strip() for p in spec]
  else:
    raise UserError(f"{where} must be a '+'-joined string of selectors, got {spec!r}.")
  allowed = ", ".join(f"{k!r} ({v})" for k, v in TRAINABLE_GROUPS.items())
  if not parts or not all(parts):
    raise UserError(
      f"{where} = {spec!r}: give one or more selectors joined by '+': {allowed}, "
      "or a parameter path 'student/...' / 'connectors/<term key>/...'."
    )
  for p in parts:
    if p in TRAINABLE_GROUPS:
      continue
    top, sep, rest = p.partition("/")
    if top in ("student", "connectors") and sep and rest and all(rest.split("/")):
      continue
    close = difflib.get_close_matches(p, list(TRAINABLE_GROUPS), n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise UserError(
      f"{where}: unknown selector {p!r}.{hint} Use {allowed}, or a parameter "
      "path 'student/...' / 'connectors/<term key>/...'."
    )
  return tuple(dict.fromkeys(parts))


def _hparam_names(fn):
  params = inspect.signature(fn).parameters.values()
  kw = [p for p in params if p.kind == p.KEYWORD_ONLY and p.name not in ("connector", "state")]
  return [p.name for p in kw], [p.name for p in kw if p.default is p.empty]


def _check_hparams(key, spec: TermSpec, hparams: Mapping, prefix: str = "method.terms"):
  allowed, required = _hparam_names(spec.fn)
  for h in hparams:
    if h not in allowed:
      close = difflib.get_close_matches(h, allowed, n=1)
      hint = f" Did you mean {close[0]!r}?" if close else ""
      raise UserError(
        f"{prefix}.{key}: unknown hyper-parameter {h!r} for loss "
        f"{spec.name!r}.{hint} Allowed: {allowed}."
      )
  missing = [r for r in required if r not in hparams]
  if missing:
    raise UserError(f"{prefix}.{key}: loss {spec.name!r} needs {missing}.")


_INIT_KEYS = ("epochs", "ce_weight", "terms", "trainable", "lr", "milestones")


def _build_terms(terms_cfg, prefix: str) -> Tuple[Term, ...]:
  terms = []
  for key, tc in dict(terms_cfg or {}).items():
    tc = dict(tc)
    loss_name = tc.pop("loss", key)
    group = tc.pop("group", DEFAULT_GROUP)
    if not isinstance(group, str) or not group:
      raise UserError(
        f"{prefix}.{key}.group must be a gradient group name (e.g. {TASK_GROUP!r} or "
        f"{DEFAULT_GROUP!r}, the default), got {group!r}."
      )
    if loss_name not in _TERMS:
      close = difflib.get_close_matches(loss_name, list(_TERMS), n=3)
      hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
      raise UserError(
        f"{prefix}.{key}: unknown loss {loss_name!r}.{hint} Registered: {sorted(_TERMS)}."
      )
    spec = _TERMS[loss_name]
    if spec.monitor:
      if float(tc.get("weight", 0.0)) != 0:
        raise UserError(
          f"{prefix}.{key} ({loss_name}) is a monitor (metrics only, no loss): "
          f"drop its 'weight' or set it to 0, got {tc['weight']!r}."
        )
      tc.setdefault("weight", 0.0)
    if "weight" not in tc:
      raise UserError(f"{prefix}.{key} has no 'weight'.")
    weight = checks.nonnegative(f"{prefix}.{key}.weight", tc.pop("weight"))
    _check_hparams(key, spec, tc, prefix)
    conn = None
    if spec.connector is not None:
      try:
        conn = spec.connector(**tc)
      except UserError as e:
        raise UserError(f"{prefix}.{key}: {e}") from None
    s_taps, t_taps = (spec.student_taps, spec.teacher_taps) if spec.static_taps else (None, None)
    terms.append(Term(key, spec, weight, tc, s_taps, t_taps, conn, group))
  return tuple(terms)


def _build_init(name, cfg) -> Optional[Stage]:
  """The ``config.method.init`` block -> :class:`Stage` (None when ``epochs`` is 0)."""
  cfg = dict(cfg) if cfg is not None else {}
  unknown = set(cfg) - set(_INIT_KEYS)
  if unknown:
    raise UserError(
      f"Unknown key(s) {sorted(unknown)} in config.method.init; allowed: {', '.join(_INIT_KEYS)}."
    )
  epochs = cfg.get("epochs", 0)
  if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 0:
    raise UserError(
      f"method.init.epochs must be an integer >= 0 (0 = no init stage), got {epochs!r}."
    )
  if epochs == 0:
    return None
  ce_weight = checks.nonnegative("method.init.ce_weight", cfg.get("ce_weight", 0.0))
  lr = checks.nonnegative("method.init.lr (0 = optim.lr)", cfg.get("lr", 0.0) or 0.0)
  milestones = tuple(cfg.get("milestones") or ())
  if (
    not all(isinstance(m, int) and not isinstance(m, bool) for m in milestones)
    or list(milestones) != sorted(set(milestones))
    or any(not 0 < m < epochs for m in milestones)
  ):
    raise UserError(
      f"method.init.milestones must be increasing integer epochs inside the stage "
      f"(0 < m < method.init.epochs = {epochs}), got {milestones!r}."
    )
  terms = _build_terms(cfg.get("terms"), "method.init.terms")
  if ce_weight == 0 and not any(t.weight > 0 for t in terms):
    raise UserError(
      f"method.init.epochs = {epochs} but the init stage has no loss: give "
      "method.init.terms (e.g. method.init.terms.ab = dict(loss='ab', "
      "weight=1.0)) or method.init.ce_weight > 0, or set method.init.epochs = 0."
    )
  if not cfg.get("trainable"):
    raise UserError(
      f"method.init.epochs = {epochs} but method.init.trainable is not set: name "
      f"what the init stage trains, e.g. 'student_features+connectors' (groups: "
      f"{', '.join(TRAINABLE_GROUPS)}; or parameter paths)."
    )
  trainable = parse_trainable(cfg["trainable"], "method.init.trainable")
  method = Method(f"{name}/init", ce_weight, terms, path="method.init")
  return Stage("init", method, epochs, trainable, lr or None, milestones)


def build_method(cfg) -> Method:
  """Builds and validates a :class:`Method` (with its init :class:`Stage`, if any) from the
  ``config.method`` block. Taps that depend on the models are resolved later
  (:meth:`Method.bind`)."""
  cfg = dict(cfg) if cfg is not None else {}
  name = cfg.get("name", "custom")
  ce_weight = checks.nonnegative("method.ce_weight", cfg.get("ce_weight", 1.0))
  ls = checks.in_range(
    "method.label_smoothing", cfg.get("label_smoothing", 0.0), 0, 1, open_hi=True
  )
  unknown = set(cfg) - {"name", "ce_weight", "terms", "label_smoothing", "trainable", "init"}
  if unknown:
    raise UserError(
      f"Unknown key(s) {sorted(unknown)} in config.method; allowed: name, "
      "ce_weight, label_smoothing, terms, trainable, init."
    )
  terms = _build_terms(cfg.get("terms"), "method.terms")
  trainable = parse_trainable(
    cfg.get("trainable") or "+".join(DEFAULT_TRAINABLE), "method.trainable"
  )
  init = _build_init(name, cfg.get("init"))
  method = Method(name, ce_weight, terms, ls, trainable, init)
  _ = method.views  # one view set per stage (raises otherwise)
  if init is not None:
    _ = init.method.views
  method.dry_run()
  return method
