"""``tiny_cnn``: a two-stage toy CNN following the kdjax model protocol.

Not a paper model: it exists for fast smoke tests of the trainer (the "fake model" of the test
pyramid) and for launch-script checks. Taps: ``stem``, ``stage1``, ``stage2``,
``preact_stage1/2`` (before the ReLU) and ``pooled``.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from kdjax.models.cifar.common import kaiming_fan_out, torch_default_bias, torch_default_kernel
from kdjax.models.registry import register


class TinyCNN(nn.Module):
  num_classes: int
  width: int = 8
  dtype: Any = jnp.float32  # compute dtype (kdjax.precision); parameters stay float32
  num_stages = 2

  def setup(self):
    dt = dict(dtype=self.dtype, param_dtype=jnp.float32)
    self.conv0 = nn.Conv(
      self.width,
      (3, 3),
      padding=((1, 1), (1, 1)),
      use_bias=False,
      kernel_init=kaiming_fan_out,
      **dt,
    )
    self.bn0 = nn.BatchNorm(momentum=0.9, epsilon=1e-5, **dt)
    self.convs = [
      nn.Conv(
        self.width * 2**i,
        (3, 3),
        strides=(2, 2),
        padding=((1, 1), (1, 1)),
        use_bias=False,
        kernel_init=kaiming_fan_out,
        **dt,
      )
      for i in (1, 2)
    ]
    self.bns = [nn.BatchNorm(momentum=0.9, epsilon=1e-5, **dt) for _ in (1, 2)]
    self.fc = nn.Dense(
      self.num_classes,
      kernel_init=torch_default_kernel,
      bias_init=torch_default_bias(self.width * 4),
      **dt,
    )

  def apply_stem(self, x, train: bool = False):
    h = nn.relu(self.bn0(self.conv0(x), use_running_average=not train))
    return h, {"stem": h}

  def apply_stage(self, h, i: int, train: bool = False):
    pre = self.bns[i - 1](self.convs[i - 1](h), use_running_average=not train)
    h = nn.relu(pre)
    return h, {f"stage{i}": h, f"preact_stage{i}": pre}

  def apply_head(self, h, train: bool = False):
    acc = jnp.promote_types(h.dtype, jnp.float32)
    pooled = jnp.mean(h.astype(acc), axis=(1, 2)).astype(h.dtype)
    return self.fc(pooled), {"pooled": pooled}

  def __call__(self, x, train: bool = False):
    h, taps = self.apply_stem(x, train)
    for i in range(1, self.num_stages + 1):
      h, t = self.apply_stage(h, i, train)
      taps.update(t)
    logits, t = self.apply_head(h, train)
    taps.update(t)
    return logits, taps


@register("tiny_cnn")
def tiny_cnn(num_classes: int, width: int = 8, **kw):
  return TinyCNN(num_classes=num_classes, width=width, **kw)
