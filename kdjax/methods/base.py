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


_TERMS: Dict[str, TermSpec] = {}


def register_term(name, *, student_taps=(), teacher_taps=(), needs_teacher=True,
                  connector_fn=None, init_state=None):
  """Decorator registering a loss adapter as a method term (see :class:`TermSpec`)."""

  def deco(fn):
    if name in _TERMS:
      raise ValueError(f"method term {name!r} registered twice")
    _TERMS[name] = TermSpec(name, fn, tuple(student_taps), tuple(teacher_taps), needs_teacher,
                            connector_fn, init_state, (fn.__doc__ or "").strip())
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


@dataclasses.dataclass(frozen=True)
class Method:
  """A distillation method: ``loss = ce_weight * CE + sum_k weight_k * term_k`` (batch-averaged)."""
  name: str
  ce_weight: float
  terms: Tuple[Term, ...]
  label_smoothing: float = 0.0

  @property
  def needs_teacher(self) -> bool:
    return any(t.spec.needs_teacher and t.weight != 0 for t in self.terms)

  @property
  def student_taps(self):
    return tuple(sorted({k for t in self.terms for k in t.spec.student_taps}))

  @property
  def teacher_taps(self):
    return tuple(sorted({k for t in self.terms for k in t.spec.teacher_taps}))

  # -- connectors -------------------------------------------------------------------------------
  def connectors(self, student_shapes, teacher_shapes) -> Dict[str, Any]:
    """Builds the connector modules (term key -> (nn.Module, init_shapes)) from the tap shapes."""
    out = {}
    for t in self.terms:
      if t.spec.connector_fn is not None:
        out[t.key] = t.spec.connector_fn(student_shapes, teacher_shapes, **t.hparams)
    return out

  def init_states(self, num_examples, student_shapes, teacher_shapes, rng) -> Dict[str, Any]:
    """Initial explicit states of the stateful terms (term key -> pytree)."""
    out = {}
    for i, t in enumerate(self.terms):
      if t.spec.init_state is not None:
        out[t.key] = t.spec.init_state(num_examples, student_shapes, teacher_shapes,
                                       jax.random.fold_in(rng, i), **t.hparams)
    return out

  def check_shapes(self, student_shapes: Mapping, teacher_shapes: Optional[Mapping]):
    """Config-time check that the models provide every tap the terms need."""
    for t in self.terms:
      for side, need, have in (("student", t.spec.student_taps, student_shapes),
                               ("teacher", t.spec.teacher_taps, teacher_shapes or {})):
        missing = [k for k in need if k not in have]
        if missing:
          raise ValueError(
              f"method.terms.{t.key} ({t.spec.name}) needs {side} taps {missing}, but the "
              f"{side} model provides {sorted(have)}.")

  # -- loss -------------------------------------------------------------------------------------
  def loss(self, student: Outputs, teacher: Optional[Outputs], batch: Batch, *,
           connectors: Optional[Mapping[str, Callable]] = None,
           states: Optional[Mapping[str, Any]] = None, return_states: bool = False):
    """Per-example total loss ``(B,)`` and a dict of batch-mean metrics (unweighted terms); with
    ``return_states`` also the updated term states."""
    new_states = dict(states or {})
    logp = jax.nn.log_softmax(student.logits.astype(jnp.float32))
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
      if t.spec.init_state is not None:
        v, new_states[t.key] = t.spec.fn(student, teacher, batch, state=new_states[t.key], **kw)
      else:
        v = t.spec.fn(student, teacher, batch, **kw)
      metrics[t.key] = v.mean()
      total = total + t.weight * v
    if return_states:
      return total, metrics, new_states
    return total, metrics


def _check_hparams(key, spec: TermSpec, hparams: Mapping):
  sig = inspect.signature(spec.fn)
  allowed = [p.name for p in sig.parameters.values()
             if p.kind == p.KEYWORD_ONLY and p.name not in ("connector", "state")]
  for h in hparams:
    if h not in allowed:
      close = difflib.get_close_matches(h, allowed, n=1)
      hint = f" Did you mean {close[0]!r}?" if close else ""
      raise ValueError(f"method.terms.{key}: unknown hyper-parameter {h!r} for loss "
                       f"{spec.name!r}.{hint} Allowed: {allowed}.")
  required = [p.name for p in sig.parameters.values()
              if p.kind == p.KEYWORD_ONLY and p.default is p.empty
              and p.name not in ("connector", "state")]
  missing = [r for r in required if r not in hparams]
  if missing:
    raise ValueError(f"method.terms.{key}: loss {spec.name!r} needs {missing}.")


def build_method(cfg) -> Method:
  """Builds and validates a :class:`Method` from the ``config.method`` block."""
  _ensure_loaded()
  cfg = dict(cfg) if cfg is not None else {}
  name = cfg.get("name", "custom")
  ce_weight = float(cfg.get("ce_weight", 1.0))
  ls = float(cfg.get("label_smoothing", 0.0))
  if ce_weight < 0:
    raise ValueError(f"method.ce_weight must be >= 0, got {ce_weight}.")
  if not 0.0 <= ls < 1.0:
    raise ValueError(f"method.label_smoothing must be in [0, 1), got {ls}.")
  unknown = set(cfg) - {"name", "ce_weight", "terms", "label_smoothing"}
  if unknown:
    raise ValueError(f"Unknown key(s) {sorted(unknown)} in config.method; allowed: name, "
                     "ce_weight, label_smoothing, terms.")
  terms = []
  for key, tc in dict(cfg.get("terms") or {}).items():
    tc = dict(tc)
    loss_name = tc.pop("loss", key)
    if loss_name not in _TERMS:
      close = difflib.get_close_matches(loss_name, list(_TERMS), n=3)
      hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
      raise ValueError(f"method.terms.{key}: unknown loss {loss_name!r}.{hint} "
                       f"Registered: {sorted(_TERMS)}.")
    if "weight" not in tc:
      raise ValueError(f"method.terms.{key} has no 'weight'.")
    weight = float(tc.pop("weight"))
    if weight < 0:
      raise ValueError(f"method.terms.{key}.weight must be >= 0, got {weight}.")
    spec = _TERMS[loss_name]
    _check_hparams(key, spec, tc)
    terms.append(Term(key, spec, weight, tc))
  method = Method(name, ce_weight, tuple(terms), ls)
  method.dry_run()
  return method


def _dry_run(self: Method, num_classes: int = 5, batch: int = 4):
  """Evaluates every logit-only term once on tiny inputs so hyper-parameter errors (T <= 0, ...)
  surface at config time, before any compilation."""
  s = Outputs(jnp.zeros((batch, num_classes)), {})
  b = Batch(jnp.zeros((batch,), jnp.int32), jnp.arange(batch))
  for t in self.terms:
    if (t.spec.student_taps or t.spec.teacher_taps or t.spec.connector_fn is not None
        or t.spec.init_state is not None):
      continue
    try:
      jax.eval_shape(lambda s_, t_: t.spec.fn(s_, t_, b, **t.hparams), s, s)
    except (ValueError, TypeError) as e:
      raise ValueError(f"method.terms.{t.key}: {e}") from None


Method.dry_run = _dry_run


def _ensure_loaded():
  from kdjax.methods import terms  # noqa: F401  (registers the built-in terms)
