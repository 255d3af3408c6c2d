r"""SFTN: student-friendly teacher networks (Park et al., "Learning Student-Friendly Teacher
Networks for Knowledge Distillation", NeurIPS 2021; methods.md §4).

Stage 1 is an ordinary supervised run of the train loop whose *model* is :class:`SFTN`, registered
as ``'sftn'``: a teacher plus one student branch per branch point ``i`` (default: every stage
boundary ``1..N-1``)::

  teacher stem -> stage 1 -> ... -> stage N -> head   z_T  (the logits)
                    |F_T^i
                    +-> [stop_gradient if detach_branch_input] -> Tr_i -> student stages i+1..N
                        -> student head   z_R^i  (taps['branch_logits'][k])

``Tr_i`` (methods.md §4.2, kimyuji/SFTN_kd ``FeatTrans``) maps the teacher stage-i map to the
student stage-i shape: student map smaller -> ``Conv 3x3 stride 2 pad 1``; larger ->
``ConvTranspose 4x4 stride 2 pad 1`` (torch semantics, output 2x); equal -> ``Conv 1x1``; then
``BN(s_C)`` + ReLU. Convolutions keep torch's defaults (bias on, default init) as the reference.
Shapes are inferred with ``jax.eval_shape`` from the stage outputs of the teacher and the student
at the input shape of the call. Each branch has its own copy of the student's stages and head
(``share_student_blocks=True``: one copy shared by all branches, the MRI adaptation).

The loss is the method term ``'sftn'`` (:func:`kdjax.methods.sftn.sftn_term`), with
``config.method.ce_weight = λ_T`` (the CE on the teacher logits that every method computes)::

  L = λ_T CE(z_T, y) + λ_R^CE mean_i CE(z_R^i, y) + λ_R^KL mean_i τ² KL(p_T^τ ‖ p_R^i,τ)

Stop-gradients: ``detach_branch_input=True`` plus the term's default (teacher logits live in the
KL) are exactly kimyuji/SFTN_kd's (``feat_t = [f.detach() ...]``); kdjax's default
``detach_branch_input=False`` also lets the branch terms reach the teacher trunk up to the branch
point. On Fashion-MNIST at small budgets neither setting changes the early collapse caused by the
KL's gradient into ``z_T`` (docs/sftn_fmnist).

Evaluation of the SFTN run reports the *teacher's* accuracy (``__call__`` returns ``z_T``).
Stage 3 (:func:`export_teacher`) drops branches and bridges and writes a plain model checkpoint of
the teacher, which every distiller consumes unchanged through ``config.teacher.workdir``.

Variable layout: ``params['teacher']`` is exactly a standalone teacher's tree;
``params['bridge_<i>']`` and ``params['branch_<i>']`` (or ``params['student_tail']``) the rest.

Nested kwargs in configs: ``config.model_kwargs`` is stored as JSON metadata by the train loop, so
give ``teacher_kwargs``/``student_kwargs`` as tuples of ``(key, value)`` pairs (e.g.
``(('width', 4),)``), not as dicts (a nested ``ConfigDict`` is not JSON-serialisable).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any, ClassVar, Dict, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from kdjax.errors import UserError
from kdjax.losses.connectors import ConvTranspose2d
from kdjax.models import registry
from kdjax.models.cifar.common import batch_norm, conv, torch_default_bias, torch_default_kernel

BRANCH_TAP = "branch_logits"
SOURCE = "sftn"

Pairs = Tuple[Tuple[str, Any], ...]


# ------------------------------------------------------------------------------------------------
# kwargs normalisation and shape inference
# ------------------------------------------------------------------------------------------------


def _freeze(v):
  if isinstance(v, (list, tuple)):
    return tuple(_freeze(x) for x in v)
  return v


def normalize_kwargs(kw, name: str = "kwargs") -> Pairs:
  """``None`` | mapping | sequence of ``(key, value)`` pairs -> sorted hashable pairs."""
  if kw is None:
    return ()
  if type(kw).__name__ in ("ConfigDict", "FrozenConfigDict"):
    raise UserError(
      f"sftn {name} is a ConfigDict; the run's model_kwargs are saved as JSON metadata, which "
      f"cannot hold one. Give it as (key, value) pairs, e.g. "
      f"model_kwargs.{name} = {tuple(sorted(kw.to_dict().items()))!r}."
    )
  if isinstance(kw, Mapping):
    items = list(kw.items())
  else:
    try:
      items = [tuple(p) for p in kw]
    except TypeError:
      raise UserError(f"sftn {name} must be a mapping or (key, value) pairs, got {kw!r}.") from None
    if any(len(p) != 2 or not isinstance(p[0], str) for p in items):
      raise UserError(f"sftn {name} must be (key, value) pairs with string keys, got {kw!r}.")
  return tuple(sorted((str(k), _freeze(v)) for k, v in items))


def _walk_stages(module, x, train):
  h, _ = module.apply_stem(x, train)
  out = []
  for i in range(1, type(module).num_stages + 1):
    h, _ = module.apply_stage(h, i, train)
    out.append(h)
  return out


@functools.lru_cache(maxsize=128)
def stage_shapes(
  arch: str, kwargs: Pairs, num_classes: int, input_shape: Tuple[int, ...]
) -> Tuple[Tuple[int, ...], ...]:
  """``(H, W, C)`` of every stage's output (the input of the next stage) of ``arch`` at input
  ``(H, W, C)``, by ``jax.eval_shape`` (no FLOPs, no parameters materialised)."""
  # parent=None: a detached module, also when called from inside SFTN.__call__.
  module = registry.get(arch, num_classes=num_classes, parent=None, **dict(kwargs))
  x = jax.ShapeDtypeStruct((1,) + tuple(input_shape), jnp.float32)
  out = jax.eval_shape(
    lambda x: module.init_with_output(jax.random.PRNGKey(0), x, False, method=_walk_stages)[0], x
  )
  return tuple(tuple(int(d) for d in o.shape[1:]) for o in out)


def bridge_mode(t_hwc, s_hwc) -> str:
  """The §4.2 transform for teacher map ``t_hwc`` -> student map ``s_hwc``: 'down' | 'up' | 'same'.

  Raises ValueError when that transform cannot produce the student's spatial size (the rule
  handles a factor of 2 at most).
  """
  (th, tw), (sh, sw) = tuple(t_hwc[:2]), tuple(s_hwc[:2])
  if sh < th:
    mode, out = "down", ((th - 1) // 2 + 1, (tw - 1) // 2 + 1)
  elif sh > th:
    mode, out = "up", (2 * th, 2 * tw)
  else:
    mode, out = "same", (th, tw)
  if out != (sh, sw):
    raise UserError(
      f"SFTN bridge: the {mode!r} transform of methods.md §4.2 maps a teacher {th}x{tw} map to "
      f"{out[0]}x{out[1]}, but the student stage needs {sh}x{sw}. Pick branch_points whose "
      "resolutions differ by at most a factor of 2."
    )
  return mode


class Bridge(nn.Module):
  """``Tr_i``: conv (chosen by :func:`bridge_mode`) -> BN(s_C) -> ReLU. The target ``(H, W, C)``
  is a static call argument, so the layer is built from the shapes seen at the first call."""

  @nn.compact
  def __call__(self, h, target_hwc, train: bool):
    target_hwc = tuple(int(d) for d in target_hwc)
    features = target_hwc[-1]
    mode = bridge_mode(h.shape[1:], target_hwc)
    cin = h.shape[-1]
    if mode == "down":
      y = conv(
        features,
        3,
        2,
        1,
        use_bias=True,
        kernel_init=torch_default_kernel,
        bias_init=torch_default_bias(cin * 9),
        name="conv",
      )(h)
    elif mode == "up":
      y = ConvTranspose2d(features, 4, stride=2, padding=1, name="deconv")(h)
    else:
      y = conv(
        features,
        1,
        1,
        0,
        use_bias=True,
        kernel_init=torch_default_kernel,
        bias_init=torch_default_bias(cin),
        name="conv",
      )(h)
    if tuple(y.shape[1:]) != target_hwc:
      raise UserError(f"SFTN bridge produced {tuple(y.shape[1:])}, expected {target_hwc}.")
    y = batch_norm(name="bn")(y, use_running_average=not train)
    return nn.relu(y)


# ------------------------------------------------------------------------------------------------
# the model
# ------------------------------------------------------------------------------------------------


class SFTN(nn.Module):
  """Teacher + student branches (see the module docstring). Build it with
  ``kdjax.models.get('sftn', num_classes=K, teacher=..., student=...)`` (or :func:`make_sftn`),
  which returns the subclass whose ``num_stages`` equals the teacher's.

  ``__call__(x, train) -> (z_T, taps)``: the teacher's logits and taps plus
  ``taps['branch_logits']`` of shape ``(num_branches, B, K)``. ``apply_stem``/``apply_stage``/
  ``apply_head`` are the teacher's (kdjax model protocol).
  """

  num_classes: int
  teacher_arch: str
  student_arch: str
  branch_points: Tuple[int, ...] = ()
  share_student_blocks: bool = False
  detach_branch_input: bool = False
  teacher_kwargs: Pairs = ()
  student_kwargs: Pairs = ()
  init_teacher_from: str = ""  # recorded only: see load_pretrained_teacher

  num_stages: ClassVar[int] = 0

  def setup(self):
    self.teacher = registry.get(
      self.teacher_arch, num_classes=self.num_classes, **dict(self.teacher_kwargs)
    )
    mk = lambda: registry.get(
      self.student_arch,
      num_classes=self.num_classes,  # noqa: E731
      **dict(self.student_kwargs),
    )
    if self.share_student_blocks:
      self.student_tail = mk()
    else:
      self.branch = {str(i): mk() for i in self.branch_points}
    self.bridge = {str(i): Bridge() for i in self.branch_points}

  # -- protocol: the teacher ----------------------------------------------------------------
  def apply_stem(self, x, train: bool = False):
    return self.teacher.apply_stem(x, train)

  def apply_stage(self, h, i: int, train: bool = False):
    return self.teacher.apply_stage(h, i, train)

  def apply_head(self, h, train: bool = False):
    return self.teacher.apply_head(h, train)

  # -- SFTN ---------------------------------------------------------------------------------
  def __call__(self, x, train: bool = False):
    n = type(self.teacher).num_stages
    h, taps = self.teacher.apply_stem(x, train)
    taps = dict(taps)
    feats = {}
    for i in range(1, n + 1):
      h, t = self.teacher.apply_stage(h, i, train)
      taps.update(t)
      feats[i] = h
    logits, t = self.teacher.apply_head(h, train)
    taps.update(t)
    plan = bridge_plan(self, tuple(x.shape[1:]))
    branch_logits = []
    for i in self.branch_points:
      f = feats[i]
      if tuple(f.shape[1:]) != plan[i]["teacher"]:
        raise UserError(
          f"SFTN: teacher stage {i} gave {tuple(f.shape[1:])}, shape inference "
          f"expected {plan[i]['teacher']}."
        )
      if self.detach_branch_input:
        f = jax.lax.stop_gradient(f)
      g = self.bridge[str(i)](f, plan[i]["student"], train)
      tail = self.student_tail if self.share_student_blocks else self.branch[str(i)]
      for j in range(i + 1, n + 1):
        g, _ = tail.apply_stage(g, j, train)
      z, _ = tail.apply_head(g, train)
      branch_logits.append(z)
    taps[BRANCH_TAP] = jnp.stack(branch_logits)
    return logits, taps


def bridge_plan(model: SFTN, input_shape) -> Dict[int, Dict[str, Any]]:
  """``{i: {'mode', 'teacher': (H, W, C), 'student': (H, W, C)}}`` for every branch point of an
  (unbound) SFTN module at input ``(H, W, C)``."""
  input_shape = tuple(int(d) for d in input_shape)
  t = stage_shapes(model.teacher_arch, tuple(model.teacher_kwargs), model.num_classes, input_shape)
  s = stage_shapes(model.student_arch, tuple(model.student_kwargs), model.num_classes, input_shape)
  return {
    i: {"mode": bridge_mode(t[i - 1], s[i - 1]), "teacher": t[i - 1], "student": s[i - 1]}
    for i in model.branch_points
  }


@functools.lru_cache(maxsize=None)
def _sftn_class(n: int):
  return type(
    f"SFTN{n}",
    (SFTN,),
    {"num_stages": n, "__module__": __name__, "__doc__": f"SFTN with a {n}-stage teacher."},
  )


@registry.register("sftn")
def make_sftn(
  num_classes: int,
  teacher: str,
  student: str,
  branch_points=None,
  share_student_blocks: bool = False,
  detach_branch_input: bool = False,
  teacher_kwargs=None,
  student_kwargs=None,
  init_teacher_from: str = "",
) -> SFTN:
  """Builds an :class:`SFTN` (registered as model ``'sftn'``).

  Args:
    num_classes: output classes (teacher and branches).
    teacher, student: registered model names; both must have the same ``num_stages``.
    branch_points: stage indices ``i`` in ``1..N-1`` after which a branch leaves the teacher
      (default: all of them).
    share_student_blocks: one student copy shared by all branches (default: one per branch).
    detach_branch_input: ``stop_gradient`` on the teacher feature entering each bridge
      (kimyuji/SFTN_kd does; default False).
    teacher_kwargs, student_kwargs: extra constructor kwargs (mapping or ``(key, value)`` pairs).
    init_teacher_from: a teacher run (``WORKDIR`` or ``WORKDIR@WHICH``) to fine-tune from; the
      train loop applies it with :func:`load_pretrained_teacher` (fine-tune mode).

  Raises:
    ValueError: unequal stage counts, bad branch points or kwargs.
  """
  tk = normalize_kwargs(teacher_kwargs, "teacher_kwargs")
  sk = normalize_kwargs(student_kwargs, "student_kwargs")
  n_t = type(registry.get(teacher, num_classes=num_classes, parent=None, **dict(tk))).num_stages
  n_s = type(registry.get(student, num_classes=num_classes, parent=None, **dict(sk))).num_stages
  if n_t != n_s:
    raise UserError(
      f"SFTN needs a teacher and a student with the same number of stages: {teacher!r} has "
      f"{n_t}, {student!r} has {n_s}."
    )
  if n_t < 2:
    raise UserError(f"SFTN needs models with at least 2 stages; {teacher!r} has {n_t}.")
  if branch_points is None:
    bps = tuple(range(1, n_t))
  else:
    if isinstance(branch_points, (int, str)) or not all(
      isinstance(b, int) and not isinstance(b, bool) for b in branch_points
    ):
      raise UserError(f"sftn branch_points must be a sequence of ints, got {branch_points!r}.")
    bps = tuple(sorted(set(int(b) for b in branch_points)))
    if not bps or len(bps) != len(tuple(branch_points)) or bps[0] < 1 or bps[-1] > n_t - 1:
      raise UserError(
        f"sftn branch_points must be distinct stage indices in 1..{n_t - 1} "
        f"(N = {n_t} stages), got {tuple(branch_points)!r}."
      )
  for name, v in (
    ("share_student_blocks", share_student_blocks),
    ("detach_branch_input", detach_branch_input),
  ):
    if not isinstance(v, bool):
      raise UserError(f"sftn {name} must be a bool, got {v!r}.")
  return _sftn_class(n_t)(
    num_classes=num_classes,
    teacher_arch=teacher,
    student_arch=student,
    branch_points=bps,
    share_student_blocks=share_student_blocks,
    detach_branch_input=detach_branch_input,
    teacher_kwargs=tk,
    student_kwargs=sk,
    init_teacher_from=str(init_teacher_from or ""),
  )
