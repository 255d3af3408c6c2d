"""Declarative distillation methods.

A *method* is data, not code in the train loop: a CE weight and a tuple of weighted loss *terms*.
Each term names a registered loss adapter, its hyper-parameters, the student/teacher taps it reads
and (optionally) a trainable connector module. The train step only calls :meth:`Method.loss`; it
never branches on method names. "Main + additional" combinations (zkxufo/TTM's ``-b main -a add``,
e.g. WTTM + CRD) are simply two terms.

Config form (``config.method``)::

  method.ce_weight = 0.1
  method.terms.kd = dict(weight=0.9, temperature=4.0)          # registered term 'kd'
  method.terms.kd_extra = dict(loss='kd', weight=..., ...)      # same loss twice: give 'loss'

Validation happens in :func:`build_method` and :meth:`Method.check_shapes`, before compilation:
unknown terms or hyper-parameters, negative weights, invalid values, missing taps and shape
mismatches raise ``ValueError`` naming the offending config key.

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


class Outputs(NamedTuple):
  """A network's outputs as the losses see them."""
  logits: jnp.ndarray
  taps: Mapping[str, jnp.ndarray]


class Batch(NamedTuple):
  labels: jnp.ndarray      # (B,) int
  index: jnp.ndarray       # (B,) dataset index of each example (CRD, analysis)
  epoch: Any = 1           # current epoch counted from 1 (scalar; DKD warm-up and friends)
  mix_labels: Any = None   # mixup: the partner labels (B,) ...
  mix_lam: Any = None      # ... and the mixing weight (scalar): CE = lam CE(y) + (1-lam) CE(y')


@dataclasses.dataclass(frozen=True)
class ViewSpec:
  """Several views of every training example (SSKD's four rotations), declared by a term.

  ``make(images, rng, transform) -> (V·B, ...)`` builds the views from the raw batch, in the view
  layout (row ``b·V + v``, ``v = 0`` the normal view) and applies ``transform(x, rng)``, the
  dataset's train augmentation without its flip (the view maker owns the flip). The train step
  runs student and teacher on all ``V·B`` rows (BatchNorm sees them all, as in SSKD); the CE and
  every term without views see only the normal rows, the view-aware terms see all of them.
  """
  name: str
  num_views: int
  make: Callable


@dataclasses.dataclass(frozen=True)
class TermSpec:
  """A registered loss adapter.

  ``fn(student: Outputs, teacher: Outputs, batch: Batch, *, connector=None, **hparams) -> (B,)``
  returns per-example values; ``connector`` is a callable applying the term's trainable module
  (or None). ``connector_fn(student_tap_shapes, teacher_tap_shapes, **hparams) -> nn.Module``
  builds that module from the tap shapes (shape inference).
  """
  name: str
  fn: Callable
  student_taps: Tuple[str, ...] = ()
  teacher_taps: Tuple[str, ...] = ()
  needs_teacher: bool = True
  connector_fn: Optional[Callable] = None
  init_state: Optional[Callable] = None
  doc: str = ""
  views: Optional[ViewSpec] = None


_TERMS: Dict[str, TermSpec] = {}


def register_term(name, *, student_taps=(), teacher_taps=(), needs_teacher=True,
                  connector_fn=None, init_state=None, views: Optional[ViewSpec] = None):
  """Decorator registering a loss adapter as a method term (see :class:`TermSpec`). A term with
  ``views`` receives the outputs of all ``V·B`` view rows (:class:`ViewSpec`)."""

  def deco(fn):
    if name in _TERMS:
      raise ValueError(f"method term {name!r} registered twice")
    _TERMS[name] = TermSpec(name, fn, tuple(student_taps), tuple(teacher_taps), needs_teacher,
                            connector_fn, init_state, (fn.__doc__ or "").strip(), views)
    return fn

  return deco


def term_names():
  _ensure_loaded()
  return sorted(_TERMS)


@dataclasses.dataclass(frozen=True)
class Term:
  key: str                      # config key (unique within the method)
  spec: TermSpec
  weight: float
  hparams: Mapping[str, Any]


# Named parameter groups a stage's ``trainable`` may list (besides parameter paths).
TRAINABLE_GROUPS = {
    "student": "every student parameter",
    "student_features": "the student parameters its taps depend on (all but the classifier; "
                        "RepDistiller's get_feat_modules())",
    "student_head": "the student parameters only the logits depend on (the classifier)",
    "connectors": "the connectors of the stage's own terms",
}
DEFAULT_TRAINABLE = ("student", "connectors")


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
  path: str = "method"          # config path, for messages

  @property
  def needs_teacher(self) -> bool:
    """Whether any stage of the method needs the teacher (the trainer loads it)."""
    return self.loss_needs_teacher or (self.init is not None and self.init.method.needs_teacher)

  @property
  def views(self) -> Optional[ViewSpec]:
    """The :class:`ViewSpec` of this method's view-aware terms (one at most), or None."""
    specs = {t.spec.views for t in self.terms if t.spec.views is not None and t.weight != 0}
    if len(specs) > 1:
      raise ValueError(f"{self.path}.terms combine terms with different view sets "
                       f"({sorted(v.name for v in specs)}): one method can use one.")
    return next(iter(specs), None)

  @property
  def loss_needs_teacher(self) -> bool:
    """Whether this method's own loss reads the teacher (the step runs it)."""
    return any(t.spec.needs_teacher and t.weight != 0 for t in self.terms)

  @property
  def student_taps(self):
    return tuple(sorted({k for t in self.terms for k in t.spec.student_taps}))

  @property
  def teacher_taps(self):
    return tuple(sorted({k for t in self.terms for k in t.spec.teacher_taps}))

  # -- connectors -------------------------------------------------------------------------------
  def connector_keys(self):
    """Keys of the connectors this method's own terms use (the ``connectors`` group)."""
    return tuple(t.key for t in self.terms if t.spec.connector_fn is not None)

  def connectors(self, student_shapes, teacher_shapes) -> Dict[str, Any]:
    """Builds the connector modules (term key -> (nn.Module, init_shapes)) from the tap shapes,
    those of the init stage included (a key used by both stages is one shared module)."""
    out = {}
    for t in self.terms:
      if t.spec.connector_fn is not None:
        out[t.key] = t.spec.connector_fn(student_shapes, teacher_shapes, **t.hparams)
    if self.init is not None:
      for key, (mod, shapes) in self.init.method.connectors(student_shapes,
                                                            teacher_shapes).items():
        if key in out and out[key][0] != mod:
          raise ValueError(
              f"{self.init.method.path}.terms.{key} and {self.path}.terms.{key} share the "
              f"connector {key!r} (a term key used in both stages shares its trainable module), "
              f"but build different modules ({type(mod).__name__} vs "
              f"{type(out[key][0]).__name__}, or other hyper-parameters): give both the same "
              f"connector hyper-parameters, or the init term another key.")
        out.setdefault(key, (mod, shapes))
    return out

  def init_states(self, num_examples, student_shapes, teacher_shapes, rng, *,
                  teacher_variables=None) -> Dict[str, Any]:
    """Initial explicit states of the stateful terms (term key -> pytree), the init stage's
    included (a key used by both stages shares one state). ``teacher_variables`` (the loaded
    teacher's variables, a list for an ensemble) reach the ``init_state`` functions that take a
    ``teacher_variables`` keyword (OH's margins from the teacher's BatchNorms)."""
    out = {}
    if self.init is not None:
      out.update(self.init.method.init_states(num_examples, student_shapes, teacher_shapes,
                                              jax.random.fold_in(rng, 1_000_003),
                                              teacher_variables=teacher_variables))
    for i, t in enumerate(self.terms):
      if t.spec.init_state is not None:
        kw = dict(t.hparams)
        if "teacher_variables" in inspect.signature(t.spec.init_state).parameters:
          kw["teacher_variables"] = teacher_variables
        out[t.key] = t.spec.init_state(num_examples, student_shapes, teacher_shapes,
                                       jax.random.fold_in(rng, i), **kw)
    return out

  def check_shapes(self, student_shapes: Mapping, teacher_shapes: Optional[Mapping]):
    """Config-time check that the models provide every tap the terms (of every stage) need."""
    for t in self.terms:
      for side, need, have in (("student", t.spec.student_taps, student_shapes),
                               ("teacher", t.spec.teacher_taps, teacher_shapes or {})):
        missing = [k for k in need if k not in have]
        if missing:
          raise ValueError(
              f"{self.path}.terms.{t.key} ({t.spec.name}) needs {side} taps {missing}, but the "
              f"{side} model provides {sorted(have)}.")
    if self.init is not None:
      self.init.method.check_shapes(student_shapes, teacher_shapes)

  # -- loss -------------------------------------------------------------------------------------
  def loss(self, student: Outputs, teacher: Optional[Outputs], batch: Batch, *,
           connectors: Optional[Mapping[str, Callable]] = None,
           states: Optional[Mapping[str, Any]] = None, return_states: bool = False):
    """Per-example total loss ``(B,)`` and a dict of batch-mean metrics (unweighted terms); with
    ``return_states`` also the updated term states."""
    new_states = dict(states or {})
    views = self.views
    full_student, full_teacher = student, teacher
    if views is not None:      # CE and the ordinary terms see the normal views (rows b·V)
      student = _normal_rows(student, views.num_views, batch.labels.shape[0], "student")
      if teacher is not None:
        teacher = _normal_rows(teacher, views.num_views, batch.labels.shape[0], "teacher")
    # At least float32 (half-precision logits are upcast); float64 stays float64 under x64.
    logp = jax.nn.log_softmax(student.logits.astype(
        jnp.promote_types(student.logits.dtype, jnp.float32)))
    k = student.logits.shape[-1]
    onehot = jax.nn.one_hot(batch.labels, k, dtype=logp.dtype)
    if batch.mix_labels is not None:
      onehot = batch.mix_lam * onehot + (1.0 - batch.mix_lam) * jax.nn.one_hot(
          batch.mix_labels, k, dtype=logp.dtype)
    if self.label_smoothing:
      onehot = onehot * (1.0 - self.label_smoothing) + self.label_smoothing / k
    ce = -jnp.sum(onehot * logp, axis=-1)
    total = self.ce_weight * ce
    metrics = {"ce": ce.mean()}
    for t in self.terms:
      if t.weight == 0:
        continue
      conn = (connectors or {}).get(t.key)
      kw = dict(t.hparams)
      if t.spec.connector_fn is not None:
        kw["connector"] = conn
      s_in, t_in = (full_student, full_teacher) if t.spec.views is not None else (student, teacher)
      if t.spec.init_state is not None:
        v, new_states[t.key] = t.spec.fn(s_in, t_in, batch, state=new_states[t.key], **kw)
      else:
        v = t.spec.fn(s_in, t_in, batch, **kw)
      metrics[t.key] = v.mean()
      total = total + t.weight * v
    if return_states:
      return total, metrics, new_states
    return total, metrics


def _normal_rows(out: Outputs, num_views: int, batch: int, side: str) -> Outputs:
  """The normal-view rows ``0, V, 2V, ...`` of ``V·B``-row outputs (:class:`ViewSpec`)."""
  if out.logits.shape[0] != num_views * batch:
    raise ValueError(f"the method's terms use {num_views} views per example, so the {side} "
                     f"outputs need {num_views} x {batch} rows (row b*V + v), got "
                     f"{out.logits.shape[0]}: run the forward on the views (the train step does).")
  return Outputs(out.logits[::num_views], {k: v[::num_views] for k, v in out.taps.items()})


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
    raise ValueError(f"{where} must be a '+'-joined string of selectors, got {spec!r}.")
  allowed = ", ".join(f"{k!r} ({v})" for k, v in TRAINABLE_GROUPS.items())
  if not parts or not all(parts):
    raise ValueError(f"{where} = {spec!r}: give one or more selectors joined by '+': {allowed}, "
                     "or a parameter path 'student/...' / 'connectors/<term key>/...'.")
  for p in parts:
    if p in TRAINABLE_GROUPS:
      continue
    top, sep, rest = p.partition("/")
    if top in ("student", "connectors") and sep and rest and all(rest.split("/")):
      continue
    close = difflib.get_close_matches(p, list(TRAINABLE_GROUPS), n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise ValueError(f"{where}: unknown selector {p!r}.{hint} Use {allowed}, or a parameter "
                     "path 'student/...' / 'connectors/<term key>/...'.")
  return tuple(dict.fromkeys(parts))


def _check_hparams(key, spec: TermSpec, hparams: Mapping, prefix: str = "method.terms"):
  sig = inspect.signature(spec.fn)
  allowed = [p.name for p in sig.parameters.values()
             if p.kind == p.KEYWORD_ONLY and p.name not in ("connector", "state")]
  for h in hparams:
    if h not in allowed:
      close = difflib.get_close_matches(h, allowed, n=1)
      hint = f" Did you mean {close[0]!r}?" if close else ""
      raise ValueError(f"{prefix}.{key}: unknown hyper-parameter {h!r} for loss "
                       f"{spec.name!r}.{hint} Allowed: {allowed}.")
  required = [p.name for p in sig.parameters.values()
              if p.kind == p.KEYWORD_ONLY and p.default is p.empty
              and p.name not in ("connector", "state")]
  missing = [r for r in required if r not in hparams]
  if missing:
    raise ValueError(f"{prefix}.{key}: loss {spec.name!r} needs {missing}.")


_INIT_KEYS = ("epochs", "ce_weight", "terms", "trainable", "lr", "milestones")


def _build_terms(terms_cfg, prefix: str) -> Tuple[Term, ...]:
  terms = []
  for key, tc in dict(terms_cfg or {}).items():
    tc = dict(tc)
    loss_name = tc.pop("loss", key)
    if loss_name not in _TERMS:
      close = difflib.get_close_matches(loss_name, list(_TERMS), n=3)
      hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
      raise ValueError(f"{prefix}.{key}: unknown loss {loss_name!r}.{hint} "
                       f"Registered: {sorted(_TERMS)}.")
    if "weight" not in tc:
      raise ValueError(f"{prefix}.{key} has no 'weight'.")
    weight = float(tc.pop("weight"))
    if weight < 0:
      raise ValueError(f"{prefix}.{key}.weight must be >= 0, got {weight}.")
    spec = _TERMS[loss_name]
    _check_hparams(key, spec, tc, prefix)
    terms.append(Term(key, spec, weight, tc))
  return tuple(terms)


def _build_init(name, cfg) -> Optional[Stage]:
  """The ``config.method.init`` block -> :class:`Stage` (None when ``epochs`` is 0)."""
  cfg = dict(cfg) if cfg is not None else {}
  unknown = set(cfg) - set(_INIT_KEYS)
  if unknown:
    raise ValueError(f"Unknown key(s) {sorted(unknown)} in config.method.init; allowed: "
                     f"{', '.join(_INIT_KEYS)}.")
  epochs = cfg.get("epochs", 0)
  if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 0:
    raise ValueError(f"method.init.epochs must be an integer >= 0 (0 = no init stage), got "
                     f"{epochs!r}.")
  if epochs == 0:
    return None
  ce_weight = float(cfg.get("ce_weight", 0.0))
  if ce_weight < 0:
    raise ValueError(f"method.init.ce_weight must be >= 0, got {ce_weight}.")
  lr = float(cfg.get("lr", 0.0) or 0.0)
  if lr < 0:
    raise ValueError(f"method.init.lr must be >= 0 (0 = optim.lr), got {lr}.")
  milestones = tuple(cfg.get("milestones") or ())
  if (not all(isinstance(m, int) and not isinstance(m, bool) for m in milestones)
      or list(milestones) != sorted(set(milestones))
      or any(not 0 < m < epochs for m in milestones)):
    raise ValueError(f"method.init.milestones must be increasing integer epochs inside the stage "
                     f"(0 < m < method.init.epochs = {epochs}), got {milestones!r}.")
  terms = _build_terms(cfg.get("terms"), "method.init.terms")
  if ce_weight == 0 and not any(t.weight > 0 for t in terms):
    raise ValueError(f"method.init.epochs = {epochs} but the init stage has no loss: give "
                     "method.init.terms (e.g. method.init.terms.ab = dict(loss='ab', "
                     "weight=1.0)) or method.init.ce_weight > 0, or set method.init.epochs = 0.")
  if not cfg.get("trainable"):
    raise ValueError(f"method.init.epochs = {epochs} but method.init.trainable is not set: name "
                     f"what the init stage trains, e.g. 'student_features+connectors' (groups: "
                     f"{', '.join(TRAINABLE_GROUPS)}; or parameter paths).")
  trainable = parse_trainable(cfg["trainable"], "method.init.trainable")
  method = Method(f"{name}/init", ce_weight, terms, path="method.init")
  return Stage("init", method, epochs, trainable, lr or None, milestones)


def build_method(cfg) -> Method:
  """Builds and validates a :class:`Method` (with its init :class:`Stage`, if any) from the
  ``config.method`` block."""
  _ensure_loaded()
  cfg = dict(cfg) if cfg is not None else {}
  name = cfg.get("name", "custom")
  ce_weight = float(cfg.get("ce_weight", 1.0))
  ls = float(cfg.get("label_smoothing", 0.0))
  if ce_weight < 0:
    raise ValueError(f"method.ce_weight must be >= 0, got {ce_weight}.")
  if not 0.0 <= ls < 1.0:
    raise ValueError(f"method.label_smoothing must be in [0, 1), got {ls}.")
  unknown = set(cfg) - {"name", "ce_weight", "terms", "label_smoothing", "trainable", "init"}
  if unknown:
    raise ValueError(f"Unknown key(s) {sorted(unknown)} in config.method; allowed: name, "
                     "ce_weight, label_smoothing, terms, trainable, init.")
  terms = _build_terms(cfg.get("terms"), "method.terms")
  trainable = parse_trainable(cfg.get("trainable") or "+".join(DEFAULT_TRAINABLE),
                              "method.trainable")
  init = _build_init(name, cfg.get("init"))
  method = Method(name, ce_weight, terms, ls, trainable, init)
  _ = method.views                          # one view set per stage (raises otherwise)
  if init is not None:
    _ = init.method.views
  method.dry_run()
  return method


def _dry_run(self: Method, num_classes: int = 5, batch: int = 4):
  """Evaluates every logit-only term once on tiny inputs so hyper-parameter errors (T <= 0, ...)
  surface at config time, before any compilation."""
  b = Batch(jnp.zeros((batch,), jnp.int32), jnp.arange(batch))
  for t in self.terms:
    if (t.spec.student_taps or t.spec.teacher_taps or t.spec.connector_fn is not None
        or t.spec.init_state is not None):
      continue
    rows = batch * (t.spec.views.num_views if t.spec.views is not None else 1)
    s = Outputs(jnp.zeros((rows, num_classes)), {})
    try:
      jax.eval_shape(lambda s_, t_: t.spec.fn(s_, t_, b, **t.hparams), s, s)
    except (ValueError, TypeError) as e:
      raise ValueError(f"{self.path}.terms.{t.key}: {e}") from None
  if self.init is not None:
    _dry_run(self.init.method, num_classes, batch)


Method.dry_run = _dry_run


def _ensure_loaded():
  from kdjax.methods import terms  # noqa: F401  (registers the built-in terms)
