"""MobileNetV1 (mdistiller ``mdistiller/models/imagenet/mobilenetv1.py``): ``mobilenetv1_imagenet``.

Width 1.0: a 3x3 stride-2 conv-BN-ReLU to 32 channels (``model.0``), thirteen depthwise-separable
blocks (``model.1`` .. ``model.13``: 3x3 depthwise conv-BN-ReLU, 1x1 conv-BN-ReLU) with widths
64, 128, 128, 256, 256, 512 x6, 1024, 1024 and stride 2 at blocks 2, 4, 6 and 12, global average
pooling and ``Linear(1024, K)``. mdistiller pools with ``AvgPool2d(7)``, which is the global
average at 224x224 input only; kdjax always takes the global average (it also runs on smaller
inputs). No custom init in mdistiller: PyTorch defaults.

Stages (mdistiller's ``feats``): stage1 = blocks 1-3, stage2 = blocks 4-5, stage3 = blocks 6-11,
stage4 = blocks 12-13.

Taps (NHWC; at 224x224 input):

* ``stem``: output of ``model.0`` (after its ReLU), 112x112x32 (mdistiller exposes no stem tap).
* ``stage{i}``: stage outputs (post-ReLU): 56x56x128, 28x28x256, 14x14x512, 7x7x1024.
* ``preact_stage{i}``: the same before the last block's final ReLU (its last BN's output;
  mdistiller's ``preact_feats``).
* ``pooled``: global average of ``stage4``, 1024.

Parameter names: ``model_0/conv``/``model_0/bn`` = ``model.0.0``/``model.0.1``; block i:
``model_{i}/conv_dw``, ``bn_dw``, ``conv_pw``, ``bn_pw`` = ``model.i.0``, ``.1``, ``.3``, ``.4``;
``fc``.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from kdjax.models.cifar.common import (
  CifarNet,
  batch_norm,
  conv,
  dense,
  global_avg_pool,
  torch_default_kernel,
)
from kdjax.models.registry import register

# (output channels, stride) of model.1 .. model.13
BLOCKS = (
  (64, 1),
  (128, 2),
  (128, 1),
  (256, 2),
  (256, 1),
  (512, 2),
  (512, 1),
  (512, 1),
  (512, 1),
  (512, 1),
  (512, 1),
  (1024, 2),
  (1024, 1),
)
# Which blocks (1-based) make up each stage.
STAGE_BLOCKS = ((1, 2, 3), (4, 5), (6, 7, 8, 9, 10, 11), (12, 13))


class ConvBN(nn.Module):
  """3x3 conv-BN-ReLU (``model.0``)."""

  features: int
  stride: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool):
    x = conv(
      self.features,
      3,
      self.stride,
      1,
      kernel_init=torch_default_kernel,
      dtype=self.dtype,
      name="conv",
    )(x)
    return nn.relu(batch_norm(self.dtype, name="bn")(x, use_running_average=not train))


class ConvDW(nn.Module):
  """3x3 depthwise conv-BN-ReLU, 1x1 conv-BN-ReLU. Returns ``(out, pre-ReLU)``."""

  inp: int
  oup: int
  stride: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool):
    ura = not train
    kw = dict(kernel_init=torch_default_kernel, dtype=self.dtype)
    x = conv(self.inp, 3, self.stride, 1, groups=self.inp, name="conv_dw", **kw)(x)
    x = nn.relu(batch_norm(self.dtype, name="bn_dw")(x, use_running_average=ura))
    x = conv(self.oup, 1, name="conv_pw", **kw)(x)
    pre = batch_norm(self.dtype, name="bn_pw")(x, use_running_average=ura)
    return nn.relu(pre), pre


class MobileNetV1(CifarNet):
  num_classes: int
  dtype: Any = jnp.float32

  num_stages = 4

  def setup(self):
    layers = [ConvBN(32, 2, self.dtype)]
    inp = 32
    for oup, stride in BLOCKS:
      layers.append(ConvDW(inp, oup, stride, self.dtype))
      inp = oup
    self.model = layers
    self.fc = dense(self.num_classes, inp, dtype=self.dtype)

  def apply_stem(self, x, train: bool):
    h = self.model[0](x, train)
    return h, {"stem": h}

  def _stage(self, h, i: int, train: bool):
    pre = None
    for b in STAGE_BLOCKS[i - 1]:
      h, pre = self.model[b](h, train)
    return h, {f"stage{i}": h, f"preact_stage{i}": pre}

  def apply_head(self, h, train: bool):
    pooled = global_avg_pool(h)
    return self.fc(pooled), {"pooled": pooled}


@register("mobilenetv1_imagenet")
def mobilenetv1_imagenet(num_classes: int, **kw) -> MobileNetV1:
  return MobileNetV1(num_classes=num_classes, **kw)
