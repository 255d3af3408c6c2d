r"""ReviewKD: knowledge review with attention-based fusion (ABF) and the HCL loss.

Chen, Liu, Zhao, Jia, "Distilling Knowledge via Knowledge Review", CVPR 2021. Reference code:
megvii-research/mdistiller ``mdistiller/distillers/ReviewKD.py`` (``ABF``, ``ReviewKD``,
``hcl_loss``), itself from dvlab-research/ReviewKD ``CIFAR-100/model/reviewkd.py``.

The student's stage outputs ``stage1..N`` and its pooled feature (as a 1×1 map) are *reviewed*
top-down: starting from the pooled feature, each level's ABF maps the student feature to
``mid`` channels (1×1 conv + BN), fuses it with the coarser level's residual (nearest-upsampled
to this level's size) by a 2-channel sigmoid attention (1×1 conv on their concatenation), resizes
the result to the teacher's map size if it differs (nearest) and maps it to the teacher's
channels (3×3 conv + BN). Every output is compared with the teacher's pre-ReLU stage ends
``preact_stage1..N`` and pooled feature by :func:`kdjax.losses.hcl`::

  L = ce_weight · CE + weight · min(epoch / warmup_epochs, 1) · HCL

mdistiller's CIFAR-100 defaults: ``ce_weight`` 1, ``weight`` 5 (resnet32x4 → resnet8x4 yaml; the
dvlab scripts use 0.6 … 8 per pair), warm-up 20 epochs (epoch counted from 1), ``mid`` =
``min(512, C_pooled_student)``; ``STU_PREACT`` False (the student's post-ReLU stage outputs).

Channels and sizes (mdistiller's ``IN_CHANNELS``, ``OUT_CHANNELS``, ``SHAPES``, ``OUT_SHAPES``) are
not configured: the connector reads them from the pair's taps when it is initialised on dummy
taps, which reproduces mdistiller's and dvlab's per-model tables (e.g. resnet8x4: in
``[64, 128, 256, 256]``, shapes ``[1, 8, 16, 32]``; tests/test_methods_reviewkd.py checks seven
student families against dvlab's ``build_review_kd``).

Term ``reviewkd(warmup_epochs=20, student_preact=False, max_mid_channels=512)``; its taps are
resolved against the pair (N = the common stage count). Preset ``reviewkd(weight=5.0)``; per-pair
configs and published numbers: ``configs/cifar100/reviewkd.py``.
"""

from __future__ import annotations

from typing import Sequence, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from kdjax import checks, losses
from kdjax.errors import UserError
from kdjax.methods.core import common_stages
from kdjax.methods.registry import register_term

# torch's kaiming_uniform_(w, a=1): gain sqrt(2 / (1 + a²)) = 1, bound sqrt(3 / fan_in).
kaiming_uniform_a1 = nn.initializers.variance_scaling(1.0, "fan_in", "uniform")
# torch's default Conv2d init (kaiming_uniform_(a=√5)): U(±1/√fan_in) for weight and bias.
torch_default_kernel = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")

MAX_MID_CHANNELS = 512


def _torch_bias(fan_in: int):
  bound = 1.0 / fan_in**0.5

  def init(key, shape, dtype=jnp.float32):
    return jax.random.uniform(key, shape, dtype, -bound, bound)

  return init


def resize_nearest(x: jax.Array, size: Tuple[int, int]) -> jax.Array:
  """``F.interpolate(x, size, mode='nearest')`` for NHWC maps: source index
  ``floor(i · H_in / H_out)`` (torch's legacy ``nearest``), for up- and down-sampling."""
  h, w = x.shape[1:3]
  oh, ow = size
  if (oh, ow) == (h, w):
    return x
  ih = jnp.minimum(jnp.floor(jnp.arange(oh) * (h / oh)).astype(jnp.int32), h - 1)
  iw = jnp.minimum(jnp.floor(jnp.arange(ow) * (w / ow)).astype(jnp.int32), w - 1)
  return x[:, ih][:, :, iw]


def as_map(x: jax.Array) -> jax.Array:
  """A pooled ``(B, C)`` feature as the ``(B, 1, 1, C)`` map mdistiller makes of it
  (``pooled_feat.unsqueeze(-1).unsqueeze(-1)``); maps pass through."""
  return x[:, None, None, :] if x.ndim == 2 else x


def _bn(train: bool, name: str) -> nn.BatchNorm:
  # torch.nn.BatchNorm2d: momentum 0.1 (= 0.9 in Flax), eps 1e-5, weight 1, bias 0.
  return nn.BatchNorm(
    use_running_average=not train, momentum=0.9, epsilon=1e-5, use_fast_variance=False, name=name
  )


class ABF(nn.Module):
  """One attention-based fusion block (mdistiller ``ABF(in, mid, out, fuse)``), NHWC.

  ``conv1``: 1×1 conv (no bias, kaiming_uniform a=1) + ``bn1`` to ``mid_channels``; if ``fuse``,
  ``att_conv``: 1×1 conv (with bias, torch default init) of ``[x, up(residual)]`` to 2 channels,
  sigmoid, ``x = x·a_0 + up(residual)·a_1``; nearest resize to ``out_size`` if needed; ``conv2``:
  3×3 pad-1 conv (no bias, kaiming_uniform a=1) + ``bn2`` to ``out_channels``. Returns
  ``(output, residual)`` with ``residual`` the fused map before ``conv2``.
  """

  mid_channels: int
  out_channels: int
  fuse: bool

  @nn.compact
  def __call__(self, x, residual=None, *, out_size: int, train: bool):
    x = nn.Conv(
      self.mid_channels, (1, 1), use_bias=False, kernel_init=kaiming_uniform_a1, name="conv1"
    )(x)
    x = _bn(train, "bn1")(x)
    if self.fuse:
      if residual is None:
        raise UserError("ABF with fuse=True needs the coarser level's residual.")
      y = resize_nearest(residual, x.shape[1:3])
      z = jnp.concatenate([x, y], axis=-1)
      z = nn.Conv(
        2,
        (1, 1),
        kernel_init=torch_default_kernel,
        bias_init=_torch_bias(2 * self.mid_channels),
        name="att_conv",
      )(z)
      z = jax.nn.sigmoid(z)
      x = x * z[..., 0:1] + y * z[..., 1:2]
    if x.shape[2] != out_size:
      x = resize_nearest(x, (out_size, out_size))
    y = nn.Conv(
      self.out_channels,
      (3, 3),
      padding=((1, 1), (1, 1)),
      use_bias=False,
      kernel_init=kaiming_uniform_a1,
      name="conv2",
    )(x)
    return _bn(train, "bn2")(y), x


class ReviewKDConnector(nn.Module):
  """The ABF chain of mdistiller's ``ReviewKD``, with channels and sizes from the inputs.

  ``__call__(student_feats, teacher_feats, train)``: both tuples in forward order (stage 1 … N,
  then the pooled feature as a ``(B, 1, 1, C)`` map); the teacher maps are read for their shapes
  only. Returns the ABF outputs in forward order, each of its teacher map's shape. Parameters
  ``abf{i}`` (``i`` = forward index; ``abf{N}``, the pooled level, has no ``att_conv``).
  """

  max_mid_channels: int = MAX_MID_CHANNELS

  @nn.compact
  def __call__(
    self, student_feats: Sequence[jax.Array], teacher_feats: Sequence[jax.Array], train: bool = True
  ):
    s, t = [as_map(x) for x in student_feats], [as_map(x) for x in teacher_feats]
    if len(s) != len(t) or len(s) < 1:
      raise UserError(f"ReviewKD: need one teacher map per student map, got {len(s)} and {len(t)}.")
    n = len(s)
    mid = min(self.max_mid_channels, s[-1].shape[-1])  # mdistiller: min(512, in_channels[-1])
    outs = [None] * n
    residual = None
    for i in reversed(range(n)):  # pooled level first, then stage N … 1
      abf = ABF(mid, t[i].shape[-1], fuse=i < n - 1, name=f"abf{i}")
      outs[i], residual = abf(s[i], residual, out_size=t[i].shape[2], train=train)
    return outs


# ---- the method term --------------------------------------------------------------------------
DEFAULT_WARMUP_EPOCHS = 20


def _taps(s_shapes, t_shapes, *, student_preact: bool = False, **_):
  """Student ``stage1..N`` (``preact_stage1..N`` with ``student_preact``, mdistiller's
  ``STU_PREACT``) + ``pooled``; teacher ``preact_stage1..N`` + ``pooled``; N = the pair's common
  stage count."""
  if not isinstance(student_preact, bool):
    raise UserError(f"term reviewkd: student_preact must be a bool, got {student_preact!r}.")
  n = common_stages(s_shapes, t_shapes)
  if n == 0:
    raise UserError(
      f"term reviewkd: the student and teacher share no 'stage1' tap (student has "
      f"{sorted(s_shapes)}, teacher {sorted(t_shapes)}): use models with stage "
      "taps."
    )
  prefix = "preact_stage" if student_preact else "stage"
  s_keys = tuple(f"{prefix}{i}" for i in range(1, n + 1)) + ("pooled",)
  t_keys = tuple(f"preact_stage{i}" for i in range(1, n + 1)) + ("pooled",)
  return s_keys, t_keys


def _connector(*, max_mid_channels: int = MAX_MID_CHANNELS, **_):
  checks.integer("term reviewkd: max_mid_channels", max_mid_channels, minimum=1, strict=True)
  return ReviewKDConnector(max_mid_channels=max_mid_channels)


@register_term("reviewkd", taps=_taps, connector=_connector)
def reviewkd_term(
  s,
  t,
  batch,
  *,
  connector=None,
  warmup_epochs: int = DEFAULT_WARMUP_EPOCHS,
  student_preact: bool = False,
  max_mid_channels: int = MAX_MID_CHANNELS,
):
  """ReviewKD: ``min(epoch / warmup_epochs, 1) · HCL(ABF(student stages + pooled), teacher
  pre-ReLU stages + pooled)`` per example (mdistiller ``ReviewKD``; ``warmup_epochs`` 20, 0 = no
  warm-up; ``max_mid_channels`` caps the ABF width, mdistiller's 512)."""
  del student_preact, max_mid_channels
  checks.nonnegative("term reviewkd: warmup_epochs", warmup_epochs)
  s_feats = tuple(s.taps.values())
  t_feats = tuple(as_map(v) for v in t.taps.values())
  loss = losses.hcl(connector(s_feats, t_feats, train=True), t_feats)
  if warmup_epochs:
    loss = loss * losses.dkd_warmup_factor(jnp.asarray(batch.epoch, jnp.float32), warmup_epochs)
  return loss


def reviewkd_preset(
  *, weight: float = 5.0, warmup_epochs: int = DEFAULT_WARMUP_EPOCHS, ce_weight: float = 1.0
):
  """ReviewKD: ``ce_weight · CE + weight · min(epoch/20, 1) · HCL`` (mdistiller
  ``configs/cifar100/reviewkd.yaml``, resnet32x4 -> resnet8x4: CE 1, REVIEWKD_WEIGHT 5, warm-up
  20; per-pair weights in configs/cifar100/reviewkd.py)."""
  return dict(
    name="reviewkd",
    ce_weight=ce_weight,
    terms=dict(reviewkd=dict(weight=weight, warmup_epochs=warmup_epochs)),
  )


PRESETS = {"reviewkd": reviewkd_preset}
