"""VGG with BatchNorm (RepDistiller ``models/vgg.py``, the ``*_bn`` variants): vgg8/11/13/16/19.

RepDistiller's ``model_dict`` maps ``vggN`` to ``vggN_bn``. Five conv blocks (3x3 convs with bias,
each followed by BN; ReLU between convs inside a block, the block itself ends with a BN), max
pooling between blocks, adaptive average pooling, and ``Linear(512, K)`` (FC layers removed).
vgg8 is cfg 'S' (one conv per block).

Taps (NHWC; at 32x32 input):

* ``stem``: relu(block0(x)), 32x32x64.
* ``stage{i}``, i = 1..4: relu(block_i(pool(...))): 16x16x128, 8x8x256, 4x4x512, 4x4x512.
* ``preact_stage{i}``: block_i's output before its ReLU (its last BN's output).
* ``pooled``: global average of ``stage4`` (RepDistiller ``AdaptiveAvgPool2d(1)``), 512.

Quirk reproduced: RepDistiller applies ``pool3`` (before block4) only when the input height is
64, so at 32x32 ``stage3`` and ``stage4`` are both 4x4. kdjax decides on the static shape seen by
``apply_stage(4)``: pool3 runs when that feature map is 8 high, i.e. for input heights 64..71
(RepDistiller: exactly 64; other heights in 65..71 differ).

Parameter names: ``block{b}/conv{j}``, ``block{b}/bn{j}`` (j-th conv of block b), ``classifier``.
"""

from __future__ import annotations

from typing import Any, Tuple

import flax.linen as nn
import jax.numpy as jnp

from kdjax.models.cifar.common import (
  CifarNet,
  batch_norm,
  conv,
  dense,
  global_avg_pool,
  normal,
  zeros,
)
from kdjax.models.registry import register

CFG = {
  "A": ((64,), (128,), (256, 256), (512, 512), (512, 512)),
  "B": ((64, 64), (128, 128), (256, 256), (512, 512), (512, 512)),
  "D": ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512)),
  "E": ((64, 64), (128, 128), (256, 256, 256, 256), (512, 512, 512, 512), (512, 512, 512, 512)),
  "S": ((64,), (128,), (256,), (512,), (512,)),
}


class VGGBlock(nn.Module):
  """(conv-BN-ReLU) x (n-1), conv-BN. Returns the last BN's output (pre-ReLU)."""

  channels: Tuple[int, ...]
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool):
    for j, c in enumerate(self.channels):
      if j:
        x = nn.relu(x)
      x = conv(c, 3, 1, 1, use_bias=True, dtype=self.dtype, name=f"conv{j}")(x)
      x = batch_norm(self.dtype, name=f"bn{j}")(x, use_running_average=not train)
    return x


def _max_pool(x):
  return nn.max_pool(x, (2, 2), strides=(2, 2), padding="VALID")


class VGG(CifarNet):
  """VGG-BN for CIFAR; ``cfg`` is a key of ``CFG``."""

  num_classes: int
  cfg: str = "S"
  dtype: Any = jnp.float32

  num_stages = 4

  def setup(self):
    cfg = CFG[self.cfg]
    self.block0 = VGGBlock(cfg[0], self.dtype)
    self.block1 = VGGBlock(cfg[1], self.dtype)
    self.block2 = VGGBlock(cfg[2], self.dtype)
    self.block3 = VGGBlock(cfg[3], self.dtype)
    self.block4 = VGGBlock(cfg[4], self.dtype)
    self.classifier = dense(
      self.num_classes, cfg[4][-1], kernel_init=normal(0.01), bias_init=zeros, dtype=self.dtype
    )

  def apply_stem(self, x, train: bool):
    h = nn.relu(self.block0(x, train))
    return h, {"stem": h}

  def _stage(self, h, i: int, train: bool):
    # pool0..pool2 always; pool3 only for 64-pixel inputs (stage-4 input 8 high), as RepDistiller.
    if i < 4 or h.shape[1] == 8:
      h = _max_pool(h)
    pre = (self.block1, self.block2, self.block3, self.block4)[i - 1](h, train)
    h = nn.relu(pre)
    return h, {f"stage{i}": h, f"preact_stage{i}": pre}

  def apply_head(self, h, train: bool):
    pooled = global_avg_pool(h)
    return self.classifier(pooled), {"pooled": pooled}


def _make(cfg: str):
  def build(num_classes: int, **kw) -> VGG:
    return VGG(num_classes=num_classes, cfg=cfg, **kw)

  return build


vgg8 = register("vgg8")(_make("S"))
vgg11 = register("vgg11")(_make("A"))
vgg13 = register("vgg13")(_make("B"))
vgg16 = register("vgg16")(_make("D"))
vgg19 = register("vgg19")(_make("E"))
