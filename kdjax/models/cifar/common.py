"""Shared pieces of the CIFAR zoo: layer factories with PyTorch semantics and the protocol base.

Layout is NHWC. Convolutions use explicit symmetric padding like ``torch.nn.Conv2d(padding=p)``
(``'SAME'`` would pad stride-2 convolutions asymmetrically). BatchNorm matches
``torch.nn.BatchNorm2d`` defaults (momentum 0.1 in PyTorch = 0.9 in Flax, eps 1e-5); whether it
uses running statistics is decided at call time (``use_running_average=not train``) because the
modules are built in ``setup``. Global average pooling replaces RepDistiller's fixed-size pools
(``AvgPool2d(8)``, ``avg_pool2d(4)``...), which is identical at 32x32 and also works at 28x28.
"""

from __future__ import annotations

import math
import numbers
from typing import Any, ClassVar, Dict, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array
Taps = Dict[str, Array]

# Initialisers (PyTorch semantics; parity with torch's RNG is not a goal).
#
# They sample on the host with NumPy (seeded by the JAX key) whenever the key is concrete, i.e. in
# an eager ``model.init``: XLA:CPU compiles jax.random.normal/uniform once per parameter shape
# (~1 s each here, ~20-50 s for a ResNet), which dominated short runs. Under tracing (jit,
# eval_shape) they fall back to the equivalent jax.random sampler. Deterministic per key either way.


def _fans(shape):
  receptive = int(np.prod(shape[:-2])) if len(shape) > 2 else 1
  fan_in = (shape[-2] if len(shape) > 1 else shape[-1]) * receptive
  return fan_in, shape[-1] * receptive


def _host_rng(key):
  try:
    if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
      key = jax.random.key_data(key)
    data = np.asarray(key)
  except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError):
    return None
  return np.random.default_rng(data.astype(np.uint32).ravel().tolist())


def host_initializer(np_sample, jax_init):
  """``init(key, shape, dtype)`` sampling ``np_sample(rng, shape)`` on the host when ``key`` is
  concrete and ``jax_init`` when it is traced."""

  def init(key, shape, dtype=jnp.float32):
    rng = _host_rng(key)
    if rng is None:
      return jax_init(key, shape, dtype)
    return jnp.asarray(np_sample(rng, tuple(shape)), dtype)

  return init


def variance_scaling(scale: float, mode: str, distribution: str):
  """``nn.initializers.variance_scaling`` ('normal' | 'uniform'), sampled on the host if eager."""

  def sample(rng, shape):
    fan_in, fan_out = _fans(shape)
    var = scale / (fan_in if mode == "fan_in" else fan_out)
    if distribution == "normal":
      return rng.normal(0.0, math.sqrt(var), shape)
    bound = math.sqrt(3.0 * var)
    return rng.uniform(-bound, bound, shape)

  return host_initializer(sample, nn.initializers.variance_scaling(scale, mode, distribution))


def normal(stddev: float):
  return host_initializer(
    lambda rng, shape: rng.normal(0.0, stddev, shape), nn.initializers.normal(stddev)
  )


# kaiming_normal_(mode='fan_out', nonlinearity='relu'), also RepDistiller's normal(0, sqrt(2/n))
# with n = k*k*out_channels.
kaiming_fan_out = variance_scaling(2.0, "fan_out", "normal")
# torch's default Conv2d/Linear weight init: kaiming_uniform_(a=sqrt(5)) = U(+-1/sqrt(fan_in)).
torch_default_kernel = variance_scaling(1.0 / 3.0, "fan_in", "uniform")
zeros = nn.initializers.zeros
ones = nn.initializers.ones


def torch_default_bias(fan_in: int):
  """torch's default Linear/Conv bias init U(+-1/sqrt(fan_in))."""
  bound = 1.0 / math.sqrt(fan_in)
  return host_initializer(
    lambda rng, shape: rng.uniform(-bound, bound, shape),
    lambda key, shape, dtype=jnp.float32: jax.random.uniform(key, shape, dtype, -bound, bound),
  )


def conv(
  features: int,
  kernel: int,
  stride: int = 1,
  padding: int = 0,
  *,
  groups: int = 1,
  use_bias: bool = False,
  kernel_init=kaiming_fan_out,
  bias_init=zeros,
  dtype: Any = jnp.float32,
  name: str | None = None,
) -> nn.Conv:
  """``torch.nn.Conv2d(in, features, kernel, stride, padding, groups=groups, bias=use_bias)``."""
  return nn.Conv(
    features,
    (kernel, kernel),
    strides=(stride, stride),
    padding=((padding, padding), (padding, padding)),
    feature_group_count=groups,
    use_bias=use_bias,
    kernel_init=kernel_init,
    bias_init=bias_init,
    dtype=dtype,
    param_dtype=jnp.float32,
    name=name,
  )


def batch_norm(dtype: Any = jnp.float32, name: str | None = None) -> nn.BatchNorm:
  """``torch.nn.BatchNorm2d`` defaults; pass ``use_running_average=not train`` when calling.

  The batch variance is the two-pass ``mean((x - mean(x))^2)`` like PyTorch's, not Flax's default
  ``E[x^2] - E[x]^2`` (``use_fast_variance=True``), which cancels in float32 when a channel's mean
  is large next to its spread: on the r32x4 -> r8x4 KD+AT step of
  ``tests/test_train_step_parity.py`` it put 1.6e-4 (relative) into one updated conv kernel, where
  PyTorch's own float32 error is 1.3e-7. Flax's running variance stays the biased one (PyTorch
  stores the unbiased ``n / (n - 1)`` one); with ``n = batch x H x W`` that is <= 2.4e-4 on
  CIFAR-sized maps at batch 64.
  """
  return nn.BatchNorm(
    momentum=0.9,
    epsilon=1e-5,
    scale_init=ones,
    bias_init=zeros,
    dtype=dtype,
    param_dtype=jnp.float32,
    use_fast_variance=False,
    name=name,
  )


def dense(
  features: int,
  in_features: int,
  *,
  kernel_init=torch_default_kernel,
  bias_init=None,
  dtype: Any = jnp.float32,
  name: str | None = None,
) -> nn.Dense:
  """``torch.nn.Linear(in_features, features)`` (bias on; torch default init unless given)."""
  if bias_init is None:
    bias_init = torch_default_bias(in_features)
  return nn.Dense(
    features,
    kernel_init=kernel_init,
    bias_init=bias_init,
    dtype=dtype,
    param_dtype=jnp.float32,
    name=name,
  )


def global_avg_pool(x: Array) -> Array:
  """NHWC -> NC mean over the spatial axes, accumulated in float32 (a no-op cast for float32
  models; under a bfloat16 policy the sum of H*W bf16 values would lose ~log2(H*W) bits)."""
  acc = jnp.promote_types(x.dtype, jnp.float32)  # float64 models stay float64
  return jnp.mean(x.astype(acc), axis=(1, 2)).astype(x.dtype)


def channel_shuffle(x: Array, groups: int) -> Array:
  """ShuffleNet channel shuffle in NHWC, same channel permutation as PyTorch's NCHW version.

  Channel ``i * (C // g) + j`` moves to ``j * g + i``.
  """
  if groups == 1:
    return x
  n, h, w, c = x.shape
  x = x.reshape(n, h, w, groups, c // groups)
  x = jnp.swapaxes(x, 3, 4)
  return x.reshape(n, h, w, c)


class CifarNet(nn.Module):
  """Protocol base: ``__call__`` is the composition of stem, stages and head.

  Subclasses set ``num_stages`` and implement ``apply_stem``, ``_stage`` and ``apply_head``
  (built in ``setup`` so each part can be applied on its own through ``method=``).
  """

  num_stages: ClassVar[int] = 0

  def apply_stem(self, x: Array, train: bool) -> Tuple[Array, Taps]:
    raise NotImplementedError

  def _stage(self, h: Array, i: int, train: bool) -> Tuple[Array, Taps]:
    raise NotImplementedError

  def apply_head(self, h: Array, train: bool) -> Tuple[Array, Taps]:
    raise NotImplementedError

  def apply_stage(self, h: Array, i: int, train: bool) -> Tuple[Array, Taps]:
    """Runs stage ``i`` (a Python int in ``1..num_stages``)."""
    if not isinstance(i, numbers.Integral) or not 1 <= i <= self.num_stages:
      raise ValueError(
        f"{type(self).__name__} has stages 1..{self.num_stages}; got stage index {i!r}."
      )
    return self._stage(h, int(i), train)

  def __call__(self, x: Array, train: bool = False) -> Tuple[Array, Taps]:
    h, taps = self.apply_stem(x, train)
    taps = dict(taps)
    for i in range(1, self.num_stages + 1):
      h, t = self.apply_stage(h, i, train)
      taps.update(t)
    logits, t = self.apply_head(h, train)
    taps.update(t)
    return logits, taps
