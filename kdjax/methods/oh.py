"""Overhaul of feature distillation (Heo et al., ICCV 2019; clovaai/overhaul-distillation).

``oh(layers='all')`` on the pre-activation taps ``preact_stage1..N``, one ``OHConnector``
(conv1x1 + BN) per stage. ``margins='bn'`` (default, the reference): the per-channel margin
comes from the teacher's BN before each ReLU (γ as std, β as mean; mdistiller's
``get_bn_before_relu``, :mod:`kdjax.models.bn_before_relu`), computed once from the teacher's
variables (``BuildContext.teacher_variables``) when the term state is created.
``margins='batch'`` (for teachers without that mapping, e.g. ShuffleNets): the per-channel margin
is ``overhaul_margin(std, mean)`` of the teacher's pre-activation tap over the FIRST batch
(B, H, W), then frozen in the term state (like CRD's Z). For BN-output pre-activations (VGG, WRN)
this estimates the same quantity; for ResNets (residual sum before the ReLU) it is the margin of
the actual pre-activation rather than of ``bn2`` alone. The 'bn' margins are checked against
mdistiller's on imported PyTorch teachers (``tests/test_oh_margins.py``).
"""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from kdjax import losses
from kdjax.errors import UserError
from kdjax.losses import connectors as conn_lib
from kdjax.methods.core import stage_layers
from kdjax.methods.registry import BuildContext, register_term
from kdjax.models.bn_before_relu import bn_before_relu


class OHConnector(nn.Module):
  """One :class:`~kdjax.losses.connectors.OHConnector` (conv1x1 + BN) per pre-activation stage
  (``oh1..ohN``), mapping the student's channels to the teacher's."""

  @nn.compact
  def __call__(self, s_taps, t_taps, train: bool = False):
    out = []
    for i, (x, y) in enumerate(zip(s_taps, t_taps)):
      if x.ndim != 4 or y.ndim != 4 or x.shape[1:3] != y.shape[1:3]:
        raise UserError(
          f"term oh: the OH connector (conv1x1 + BN) cannot bridge student "
          f"preact_stage{i + 1} {tuple(x.shape[1:])} to teacher "
          f"{tuple(y.shape[1:])}: spatial sizes differ."
        )
      out.append(conn_lib.OHConnector(int(y.shape[3]), name=f"oh{i + 1}")(x, train))
    return tuple(out)


def _taps(s_shapes, t_shapes, *, layers="all", **_):
  keys = stage_layers("oh", layers, s_shapes, t_shapes, prefix="preact_stage")
  return keys, keys


def _init_state(ctx: BuildContext, rng, *, margins="bn", **_):
  del rng
  channels = [int(s[3]) for s in ctx.teacher_shapes.values()]
  if margins == "batch":
    return {
      "margins": tuple(jnp.zeros((c,), jnp.float32) for c in channels),
      "is_set": jnp.zeros((), jnp.int32),
    }
  if margins != "bn":
    raise UserError(
      f"term oh: margins must be 'bn' (from the teacher's BatchNorm before each "
      f"ReLU, the reference) or 'batch', got {margins!r}."
    )
  tv = ctx.teacher_variables
  if tv is None:
    raise UserError(
      "term oh: margins='bn' needs the teacher's variables "
      "(BuildContext.teacher_variables; init_train_state passes the loaded "
      "teacher's); or use margins='batch'."
    )
  if isinstance(tv, (list, tuple)):
    if len(tv) != 1:
      raise UserError(
        f"term oh: margins='bn' needs ONE teacher, got an ensemble of {len(tv)}: "
        "use margins='batch'."
      )
    tv = tv[0]
  try:
    bns = bn_before_relu(tv["params"])
  except ValueError as e:
    raise UserError(f"term oh: {e}") from None
  if len(bns) < len(channels) or any(g.shape != (c,) for (g, _), c in zip(bns, channels)):
    raise UserError(
      f"term oh: the teacher's BNs before ReLU have "
      f"{[int(g.shape[0]) for g, _ in bns]} channels, its taps "
      f"{list(ctx.teacher_shapes)} {channels}: use margins='batch'."
    )
  return {
    "margins": tuple(
      losses.overhaul_margin(g, b).astype(jnp.float32) for g, b in bns[: len(channels)]
    ),
    "is_set": jnp.ones((), jnp.int32),
  }


@register_term("oh", taps=_taps, connector=lambda **hp: OHConnector(), init_state=_init_state)
def oh_term(
  s, t, batch, *, connector=None, state=None, layers="all", scale: float = 1e-3, margins: str = "bn"
):
  """Overhaul distillation on the pre-activation taps ``layers`` ('all' =
  ``preact_stage1..N``); see the module doc for ``margins``."""
  del batch, margins, layers
  f_s, t_pre = tuple(s.taps.values()), tuple(t.taps.values())
  is_set = state["is_set"] > 0
  new_margins = []
  for x, old in zip(t_pre, state["margins"]):
    mean = jnp.mean(x, axis=(0, 1, 2))
    std = jnp.std(x, axis=(0, 1, 2))
    new = losses.overhaul_margin(std, mean).astype(old.dtype)
    new_margins.append(jnp.where(is_set, old, new))
  v = losses.oh(list(connector(f_s, t_pre, train=True)), list(t_pre), new_margins, scale=scale)
  return v, {"margins": tuple(new_margins), "is_set": jnp.ones((), jnp.int32)}


PRESETS = {
  # clovaai/overhaul-distillation CIFAR: CE + 1e-3 · L_distill / batch (scale folded in).
  "oh": dict(ce_weight=1.0, terms=dict(oh=dict(weight=1.0, scale=1e-3))),
}
