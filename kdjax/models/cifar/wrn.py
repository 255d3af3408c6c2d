"""Wide ResNets (RepDistiller ``models/wrn.py``): wrn_16_1, wrn_16_2, wrn_40_1, wrn_40_2.

Pre-activation network, depth ``6n+4``, channels ``[16, 16k, 32k, 64k]``: 3x3 conv stem, three
stages of ``n`` pre-activation blocks (strides 1, 2, 2), then BN-ReLU, global average pooling and
``Linear``. Dropout is 0 in RepDistiller and is not implemented.

Block (``BasicBlock``): ``a = relu(bn1(x))``; ``y = conv2(relu(bn2(conv1(a))))``; the shortcut
is ``x`` when in/out widths are equal, else ``convShortcut(a)`` (1x1, strided).

Taps (NHWC; wrn_40_2 at 32x32 input):

* ``stem``: raw conv1 output, **no BN or ReLU**, 32x32x16.
* ``stage{i}``: raw residual sum of stage i's last block (no BN, no ReLU): 32x32x32, 16x16x64,
  8x8x128.
* ``preact_stage{i}``: the BN that the next part applies to ``stage{i}``, without ReLU:
  ``block2[0].bn1(f1)``, ``block3[0].bn1(f2)`` and the final ``bn1(f3)``. Each is emitted where
  that BN is computed, i.e. ``preact_stage1`` by ``apply_stage(2)``, ``preact_stage2`` by
  ``apply_stage(3)`` and ``preact_stage3`` by ``apply_head``; ``__call__`` returns all three.
  Unlike RepDistiller (which calls those BNs a second time when ``preact=True``, updating their
  running statistics twice in training), each BN runs once per forward pass.
* ``pooled``: global average of relu(bn1(stage3)) (RepDistiller ``avg_pool2d(8)``), 128.

Parameter names: ``block1_0/bn1`` = ``block1.layer.0.bn1``; ``convShortcut`` kept.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from kdjax.models.cifar.common import CifarNet, batch_norm, conv, dense, global_avg_pool, zeros
from kdjax.models.registry import register


class WRNBlock(nn.Module):
  """Pre-activation block. Returns ``(out, bn1(x))`` (the second is the pre-ReLU BN output)."""

  in_planes: int
  out_planes: int
  stride: int = 1
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool):
    ura = not train
    pre = batch_norm(self.dtype, name="bn1")(x, use_running_average=ura)
    a = nn.relu(pre)
    out = conv(self.out_planes, 3, self.stride, 1, dtype=self.dtype, name="conv1")(a)
    out = nn.relu(batch_norm(self.dtype, name="bn2")(out, use_running_average=ura))
    out = conv(self.out_planes, 3, 1, 1, dtype=self.dtype, name="conv2")(out)
    if self.in_planes == self.out_planes:
      shortcut = x
    else:
      shortcut = conv(self.out_planes, 1, self.stride, 0, dtype=self.dtype, name="convShortcut")(a)
    return shortcut + out, pre


class WideResNet(CifarNet):
  """Wide ResNet, ``depth = 6n + 4``, width multiplier ``widen_factor``."""

  num_classes: int
  depth: int = 16
  widen_factor: int = 1
  dtype: Any = jnp.float32

  num_stages = 3

  def setup(self):
    if (self.depth - 4) % 6 != 0 or self.depth < 10:
      raise ValueError(f"WRN depth must be 6n+4 (10, 16, 22, ...), got {self.depth}.")
    n = (self.depth - 4) // 6
    k = self.widen_factor
    ch = (16, 16 * k, 32 * k, 64 * k)
    self.conv1 = conv(ch[0], 3, 1, 1, dtype=self.dtype)
    stages = []
    for s, stride in enumerate((1, 2, 2)):
      stages.append(
        [
          WRNBlock(
            ch[s] if b == 0 else ch[s + 1], ch[s + 1], stride if b == 0 else 1, dtype=self.dtype
          )
          for b in range(n)
        ]
      )
    self.block1, self.block2, self.block3 = stages
    self.bn1 = batch_norm(self.dtype)
    self.fc = dense(self.num_classes, ch[3], bias_init=zeros, dtype=self.dtype)

  def apply_stem(self, x, train: bool):
    h = self.conv1(x)
    return h, {"stem": h}

  def _stage(self, h, i: int, train: bool):
    taps = {}
    for b, block in enumerate((self.block1, self.block2, self.block3)[i - 1]):
      h, pre = block(h, train)
      if b == 0 and i > 1:
        taps[f"preact_stage{i - 1}"] = pre
    taps[f"stage{i}"] = h
    return h, taps

  def apply_head(self, h, train: bool):
    pre = self.bn1(h, use_running_average=not train)
    pooled = global_avg_pool(nn.relu(pre))
    return self.fc(pooled), {f"preact_stage{self.num_stages}": pre, "pooled": pooled}


def _make(depth: int, widen: int):
  def build(num_classes: int, **kw) -> WideResNet:
    return WideResNet(num_classes=num_classes, depth=depth, widen_factor=widen, **kw)

  return build


wrn_16_1 = register("wrn_16_1")(_make(16, 1))
wrn_16_2 = register("wrn_16_2")(_make(16, 2))
wrn_40_1 = register("wrn_40_1")(_make(40, 1))
wrn_40_2 = register("wrn_40_2")(_make(40, 2))
