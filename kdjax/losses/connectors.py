"""Trainable connectors of the feature-distillation methods (Flax linen, NHWC).

Each module reproduces a RepDistiller (``models/util.py``, ``distiller_zoo/VID.py``) or
clovaai/overhaul-distillation module layer by layer, with PyTorch semantics:

* convolutions use explicit symmetric padding like ``torch.nn.Conv2d(padding=p)``; a Flax conv
  kernel is ``(kh, kw, in, out)`` = torch ``weight.permute(2, 3, 1, 0)``;
* :class:`ConvTranspose2d` is ``torch.nn.ConvTranspose2d``; its kernel is stored as
  ``(kh, kw, in, out)`` = torch ``weight.permute(2, 3, 0, 1)`` (torch keeps ``(in, out, kh, kw)``);
* BatchNorm matches ``torch.nn.BatchNorm2d`` (momentum 0.1 in torch = 0.9 in Flax, eps 1e-5,
  two-pass batch variance); call with ``train=True`` for batch statistics (mutable
  ``batch_stats``), ``train=False`` for running statistics. As everywhere in Flax, the running
  variance is updated with the biased batch variance (torch uses the unbiased one);
* initialisers follow torch's defaults (``kaiming_uniform(a=√5)`` weights, ``U(±1/√fan_in)``
  biases) or the reference's explicit init; parity with torch's RNG is not a goal;
* ``dtype=None`` (default) computes in the promoted dtype of inputs and parameters, so float64
  parameters and inputs give a float64 computation.

The loss functions that consume the outputs are in :mod:`kdjax.losses.features` and
:mod:`kdjax.losses.relational`. These are the reference modules (torch-parity tested); how a
method wires them to its taps (one module per term, called as ``conn(student_taps, teacher_taps,
train)`` and initialised on the pair's taps) lives with the method, in ``kdjax/methods/<family>.py``.
"""

from __future__ import annotations

import math
from typing import Any, Optional, Sequence, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax.linen.dtypes import promote_dtype

from kdjax import checks
from kdjax.losses.features import adaptive_avg_pool

__all__ = [
  "ConvTranspose2d",
  "ConvReg",
  "ABConnector",
  "OHConnector",
  "Embed",
  "LinearEmbed",
  "VIDRegressor",
  "Paraphraser",
  "Translator",
  "conv_reg_kind",
]

Array = jax.Array

# Initialisers with PyTorch semantics (as kdjax.models.cifar.common; repeated here so that
# importing kdjax.losses does not import the model zoo).
# torch's default Conv2d/Linear weight init: kaiming_uniform_(a=sqrt(5)) = U(+-1/sqrt(fan_in)).
torch_default_kernel = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")
# normal(0, sqrt(2/n)), n = k*k*out_channels (the OH / RepDistiller ConnectorV2 init).
kaiming_fan_out = nn.initializers.variance_scaling(2.0, "fan_out", "normal")


def torch_default_bias(fan_in: int):
  """torch's default Linear/Conv bias init ``U(±1/√fan_in)``."""
  return _torch_uniform(1.0 / math.sqrt(fan_in))


def _check_shape4(name: str, shape) -> Tuple[int, int, int, int]:
  try:
    shape = tuple(int(v) for v in shape)
  except TypeError as e:
    raise ValueError(f"{name} must be an NHWC shape (N, H, W, C), got {shape!r}") from e
  if len(shape) != 4 or min(shape[1:]) < 1:
    raise ValueError(f"{name} must be an NHWC shape (N, H, W, C) of positive sizes, got {shape!r}")
  return shape


def _check_input(module_name: str, x: Array, expected: Tuple[int, ...]) -> None:
  if tuple(x.shape[1:]) != tuple(expected[1:]):
    raise ValueError(
      f"{module_name} was built for inputs of shape (B, {', '.join(map(str, expected[1:]))}); "
      f"got x.shape={tuple(x.shape)}"
    )


def _torch_uniform(bound: float):
  def init(key, shape, dtype=jnp.float32):
    return jax.random.uniform(key, shape, dtype, -bound, bound)

  return init


def _conv(
  features: int,
  kernel,
  in_features: int,
  *,
  stride: int = 1,
  padding: int = 0,
  use_bias: bool = True,
  kernel_init=torch_default_kernel,
  dtype=None,
  param_dtype=jnp.float32,
  name: Optional[str] = None,
) -> nn.Conv:
  """``torch.nn.Conv2d(in_features, features, kernel, stride, padding, bias=use_bias)``."""
  kh, kw = (kernel, kernel) if isinstance(kernel, int) else tuple(kernel)
  return nn.Conv(
    features,
    (kh, kw),
    strides=(stride, stride),
    padding=((padding, padding), (padding, padding)),
    use_bias=use_bias,
    kernel_init=kernel_init,
    bias_init=torch_default_bias(in_features * kh * kw),
    dtype=dtype,
    param_dtype=param_dtype,
    name=name,
  )


def _bn(train: bool, dtype, param_dtype, name: str) -> nn.BatchNorm:
  return nn.BatchNorm(
    use_running_average=not train,
    momentum=0.9,
    epsilon=1e-5,
    use_fast_variance=False,
    dtype=dtype,
    param_dtype=param_dtype,
    name=name,
  )


class ConvTranspose2d(nn.Module):
  """``torch.nn.ConvTranspose2d(in, features, kernel_size, stride, padding)`` in NHWC.

  Output size ``(H − 1)·stride − 2·padding + kernel_size``. Computed as a convolution of the
  stride-dilated input, padded by ``kernel_size − 1 − padding``, with the spatially flipped
  kernel (the gradient of the forward convolution, PyTorch's definition). Parameter ``kernel``
  has shape ``(k, k, in, features)`` = torch ``weight.permute(2, 3, 0, 1)``; ``bias``
  ``(features,)``. Init as torch: ``U(±1/√(features·k²))`` for both.
  """

  features: int
  kernel_size: int
  stride: int = 1
  padding: int = 0
  use_bias: bool = True
  dtype: Any = None
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: Array) -> Array:
    k, s, p = self.kernel_size, self.stride, self.padding
    if not 0 <= p <= k - 1:
      raise ValueError(f"ConvTranspose2d needs 0 <= padding <= kernel_size - 1; got {p}, {k}")
    bound = 1.0 / math.sqrt(self.features * k * k)  # torch: fan_in from weight.size(1) = out
    kernel = self.param(
      "kernel", _torch_uniform(bound), (k, k, x.shape[-1], self.features), self.param_dtype
    )
    bias = (
      self.param("bias", _torch_uniform(bound), (self.features,), self.param_dtype)
      if self.use_bias
      else None
    )
    x, kernel, bias = promote_dtype(x, kernel, bias, dtype=self.dtype)
    pad = k - 1 - p
    y = jax.lax.conv_general_dilated(
      x,
      kernel[::-1, ::-1],
      window_strides=(1, 1),
      padding=((pad, pad), (pad, pad)),
      lhs_dilation=(s, s),
      dimension_numbers=("NHWC", "HWIO", "NHWC"),
    )
    return y + bias if bias is not None else y


def conv_reg_kind(s_shape: Sequence[int], t_shape: Sequence[int]) -> str:
  """Which convolution RepDistiller's ``ConvReg`` uses for NHWC shapes ``s_shape → t_shape``.

  In the reference's order: ``'conv_stride2'`` if ``s_H == 2·t_H`` (3×3, stride 2, pad 1);
  ``'deconv'`` if ``2·s_H == t_H`` (ConvTranspose 4×4, stride 2, pad 1); ``'conv_valid'`` if
  ``s_H >= t_H`` (kernel ``(1 + s_H − t_H, 1 + s_W − t_W)``, no padding).

  Raises:
    ValueError: for any other pair (the reference raises too) or malformed shapes.
  """
  _, s_h, s_w, _ = _check_shape4("s_shape", s_shape)
  _, t_h, t_w, _ = _check_shape4("t_shape", t_shape)
  if s_h == 2 * t_h:
    return "conv_stride2"
  if 2 * s_h == t_h:
    return "deconv"
  if s_h >= t_h:
    if s_w < t_w:
      raise ValueError(
        f"ConvReg cannot map s_shape={tuple(s_shape)} to t_shape={tuple(t_shape)} "
        "(student taller but narrower)"
      )
    return "conv_valid"
  raise ValueError(
    f"ConvReg does not support s_shape={tuple(s_shape)} -> t_shape={tuple(t_shape)} "
    "(student H must be 2·t_H, t_H/2 or >= t_H, as in RepDistiller)"
  )


def _conv_reg(module: nn.Module, x: Array, train: bool, use_relu: bool) -> Array:
  """ConvReg body; creates ``conv`` and ``bn`` in the calling module's compact scope."""
  s_shape, t_shape = tuple(module.s_shape), tuple(module.t_shape)
  _check_input(type(module).__name__, x, s_shape)
  kind = conv_reg_kind(s_shape, t_shape)
  s_c, t_c = s_shape[3], t_shape[3]
  kw = dict(dtype=module.dtype, param_dtype=module.param_dtype, name="conv")
  if kind == "conv_stride2":
    conv = _conv(t_c, 3, s_c, stride=2, padding=1, **kw)
  elif kind == "deconv":
    conv = ConvTranspose2d(t_c, 4, stride=2, padding=1, **kw)
  else:
    conv = _conv(t_c, (1 + s_shape[1] - t_shape[1], 1 + s_shape[2] - t_shape[2]), s_c, **kw)
  y = _bn(train, module.dtype, module.param_dtype, "bn")(conv(x))
  return nn.relu(y) if use_relu else y


class ConvReg(nn.Module):
  """FitNet's convolutional regressor: conv (shape-dependent) + BN (+ ReLU).

  Reference: HobbitLong/RepDistiller ``models/util.py`` ``ConvReg(s_shape, t_shape,
  use_relu=True)``, with NHWC shapes here (``(N, H, W, C)``; only H, W, C are used). The conv
  (with bias) is chosen by :func:`conv_reg_kind`: 3×3 stride-2 pad-1 if ``s_H == 2·t_H``;
  ConvTranspose 4×4 stride-2 pad-1 if ``2·s_H == t_H``; otherwise, if ``s_H >= t_H``, a
  ``(1 + s_H − t_H) × (1 + s_W − t_W)`` valid conv. Then ``BatchNorm(t_C)`` and ReLU if
  ``use_relu``. FitNet trains it jointly with the student (``train=True``).

  Parameters: ``conv/{kernel, bias}``, ``bn/{scale, bias}``; state ``batch_stats/bn``.
  Unsupported shape pairs raise ``ValueError`` at construction.
  """

  s_shape: Sequence[int]
  t_shape: Sequence[int]
  use_relu: bool = True
  dtype: Any = None
  param_dtype: Any = jnp.float32

  def __post_init__(self):
    conv_reg_kind(self.s_shape, self.t_shape)  # eager validation
    super().__post_init__()

  @nn.compact
  def __call__(self, x: Array, train: bool) -> Array:
    return _conv_reg(self, x, train, self.use_relu)


class ABConnector(nn.Module):
  """Activation-boundary connector for one layer: identity or ConvReg without ReLU.

  Reference: HobbitLong/RepDistiller ``models/util.py`` ``Connector`` (one entry of its list):
  the identity when student and teacher have the same channels and height, else
  ``ConvReg(s_shape, t_shape, use_relu=False)`` (conv + BN). NHWC shapes. Trained in AB's init
  stage (``train=True``) and frozen afterwards (methods.md §7.2).

  Parameters (non-identity case): ``conv/{kernel, bias}``, ``bn/{scale, bias}``.
  """

  s_shape: Sequence[int]
  t_shape: Sequence[int]
  dtype: Any = None
  param_dtype: Any = jnp.float32

  @property
  def is_identity(self) -> bool:
    s, t = tuple(self.s_shape), tuple(self.t_shape)
    return s[3] == t[3] and s[1] == t[1]

  def __post_init__(self):
    _check_shape4("s_shape", self.s_shape)
    _check_shape4("t_shape", self.t_shape)
    if not self.is_identity:
      conv_reg_kind(self.s_shape, self.t_shape)
    super().__post_init__()

  @nn.compact
  def __call__(self, x: Array, train: bool) -> Array:
    if self.is_identity:
      _check_input(type(self).__name__, x, tuple(self.s_shape))
      return x
    return _conv_reg(self, x, train, use_relu=False)


class OHConnector(nn.Module):
  """Overhaul-distillation connector: conv1×1 (no bias) + BN to the teacher's channels.

  Reference: clovaai/overhaul-distillation ``CIFAR-100/distiller.py``
  ``build_feature_connector(t_channel, s_channel)`` (also RepDistiller ``ConnectorV2``):
  ``Conv2d(s_C, t_C, 1, bias=False)`` with weights ``N(0, √(2/(k·k·t_C)))``, then
  ``BatchNorm2d(t_C)`` with weight 1 and bias 0. Applied to the student's pre-ReLU stage ends,
  trained jointly with the student (``train=True``; the official script also keeps the teacher
  in train mode, see methods.md §7.2).

  Parameters: ``conv/kernel``, ``bn/{scale, bias}``.
  """

  t_channels: int
  dtype: Any = None
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: Array, train: bool) -> Array:
    y = _conv(
      self.t_channels,
      1,
      x.shape[-1],
      use_bias=False,
      kernel_init=kaiming_fan_out,
      dtype=self.dtype,
      param_dtype=self.param_dtype,
      name="conv",
    )(x)
    return _bn(train, self.dtype, self.param_dtype, "bn")(y)


class LinearEmbed(nn.Module):
  """Linear embedding (no normalisation): flatten, ``Linear(dim_in → dim_out)``.

  Reference: HobbitLong/RepDistiller ``models/util.py`` ``LinearEmbed`` (CC's student and
  teacher embeddings, ``dim_out = feat_dim = 128``). Inputs are flattened per example; for 4-D
  NHWC inputs that order differs from torch's NCHW flattening (irrelevant for the pooled
  ``(B, D)`` taps the methods use). Parameters: ``linear/{kernel, bias}`` (kernel =
  torch ``weight.T``).
  """

  dim_out: int = 128
  dtype: Any = None
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: Array) -> Array:
    x = x.reshape(x.shape[0], -1)
    return nn.Dense(
      self.dim_out,
      kernel_init=torch_default_kernel,
      bias_init=torch_default_bias(x.shape[-1]),
      dtype=self.dtype,
      param_dtype=self.param_dtype,
      name="linear",
    )(x)


class Embed(nn.Module):
  """Linear embedding + L2 normalisation: flatten, ``Linear(dim_in → dim_out)``, ``x/‖x‖``.

  Reference: HobbitLong/RepDistiller ``models/util.py`` ``Embed`` (with ``Normalize(2)``; CRD's
  student and teacher embeddings, ``feat_dim = 128``). Design decision: the norm is clamped at
  1e-12 (the reference divides by the raw norm and gives NaN for an all-zero output).
  Parameters: ``linear/{kernel, bias}``.
  """

  dim_out: int = 128
  dtype: Any = None
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: Array) -> Array:
    x = x.reshape(x.shape[0], -1)
    y = nn.Dense(
      self.dim_out,
      kernel_init=torch_default_kernel,
      bias_init=torch_default_bias(x.shape[-1]),
      dtype=self.dtype,
      param_dtype=self.param_dtype,
      name="linear",
    )(x)
    ss = jnp.sum(y * y, axis=1, keepdims=True)
    return y / jnp.sqrt(jnp.maximum(ss, 1e-24))  # = y / max(‖y‖, 1e-12), NaN-free


class VIDRegressor(nn.Module):
  """VID's mean regressor and per-channel variance parameter for one layer.

  Reference: HobbitLong/RepDistiller ``distiller_zoo/VID.py`` ``VIDLoss(num_input_channels,
  num_mid_channel, num_target_channels, init_pred_var=5.0, eps=1e-5)``: regressor
  ``conv1×1(C_s→C_mid) → ReLU → conv1×1(C_mid→C_mid) → ReLU → conv1×1(C_mid→C_t)``, all
  bias-free (torch default init), and ``log_scale`` θ of shape ``(C_t,)`` initialised to
  ``log(exp(init_pred_var − eps) − 1)`` so that ``softplus(θ) + eps = init_pred_var``.
  RepDistiller builds ``VIDLoss(s_C, t_C, t_C)``, i.e. ``C_mid = C_t``.

  ``__call__(x, target_hw=None)`` returns ``(pred_mean, log_scale)``; if ``target_hw`` (the
  teacher map's ``(H, W)``) is given and ``x`` is spatially larger, ``x`` is first
  adaptive-average-pooled to it, as the reference does before regressing. Feed both outputs to
  :func:`kdjax.losses.features.vid`.

  Parameters: ``conv1/kernel``, ``conv2/kernel``, ``conv3/kernel``, ``log_scale``.
  """

  num_mid_channels: int
  num_target_channels: int
  init_pred_var: float = 5.0
  eps: float = 1e-5
  dtype: Any = None
  param_dtype: Any = jnp.float32

  def __post_init__(self):
    checks.positive("eps", self.eps)
    checks.in_range("init_pred_var", self.init_pred_var, self.eps, open_lo=True)
    super().__post_init__()

  @nn.compact
  def __call__(self, x: Array, target_hw: Optional[Tuple[int, int]] = None):
    if x.ndim != 4:
      raise ValueError(f"VIDRegressor expects an NHWC map, got x.shape={tuple(x.shape)}")
    if target_hw is not None:
      th, tw = (int(v) for v in target_hw)
      if x.shape[1] > th or x.shape[2] > tw:
        x = adaptive_avg_pool(x, (min(th, x.shape[1]), min(tw, x.shape[2])))
    kw = dict(use_bias=False, dtype=self.dtype, param_dtype=self.param_dtype)
    h = nn.relu(_conv(self.num_mid_channels, 1, x.shape[-1], name="conv1", **kw)(x))
    h = nn.relu(_conv(self.num_mid_channels, 1, self.num_mid_channels, name="conv2", **kw)(h))
    mu = _conv(self.num_target_channels, 1, self.num_mid_channels, name="conv3", **kw)(h)
    init_value = float(np.log(np.expm1(self.init_pred_var - self.eps)))
    log_scale = self.param(
      "log_scale",
      lambda key, shape, dtype: jnp.full(shape, init_value, dtype),
      (self.num_target_channels,),
      self.param_dtype,
    )
    return mu, log_scale


def _leaky(x: Array) -> Array:
  return nn.leaky_relu(x, negative_slope=0.1)


class Paraphraser(nn.Module):
  """Factor Transfer paraphraser: a conv auto-encoder of the teacher's last-stage map.

  Reference: HobbitLong/RepDistiller ``models/util.py`` ``Paraphraser(t_shape, k=0.5,
  use_bn=False)`` (NHWC ``t_shape`` here). With ``C = t_C`` and ``F = int(C·k)``:
  encoder ``conv3×3(C→C)``, ``conv3×3(C→F)``, ``conv3×3(F→F)``; decoder
  ``ConvTranspose3×3(F→F)``, ``(F→C)``, ``(C→C)`` (stride 1, pad 1); every layer has a bias
  and is followed by ``[BN if use_bn]`` and ``LeakyReLU(0.1)``.

  ``__call__(x, train=False, is_factor=False)`` returns the factor if ``is_factor`` else
  ``(factor, reconstruction)``. Trained by MSE reconstruction in FT's init stage, frozen in the
  main stage (methods.md §7.2). Parameters: ``enc_conv{1,2,3}``, ``dec_deconv{1,2,3}``
  (+ ``enc_bn*``, ``dec_bn*`` if ``use_bn``).
  """

  t_shape: Sequence[int]
  k: float = 0.5
  use_bn: bool = False
  dtype: Any = None
  param_dtype: Any = jnp.float32

  def __post_init__(self):
    c = _check_shape4("t_shape", self.t_shape)[3]
    if int(c * self.k) < 1:
      raise ValueError(f"int(t_C * k) must be >= 1; got t_C={c}, k={self.k!r}")
    super().__post_init__()

  @nn.compact
  def __call__(self, x: Array, train: bool = False, is_factor: bool = False):
    _check_input(type(self).__name__, x, tuple(self.t_shape))
    c = int(self.t_shape[3])
    f = int(c * self.k)
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)

    def post(h, name):
      if self.use_bn:
        h = _bn(train, self.dtype, self.param_dtype, name)(h)
      return _leaky(h)

    h = x
    for i, (cin, cout) in enumerate(((c, c), (c, f), (f, f)), start=1):
      h = post(_conv(cout, 3, cin, padding=1, name=f"enc_conv{i}", **kw)(h), f"enc_bn{i}")
    factor = h
    if is_factor:
      return factor
    for i, cout in enumerate((f, c, c), start=1):
      h = post(
        ConvTranspose2d(cout, 3, stride=1, padding=1, name=f"dec_deconv{i}", **kw)(h), f"dec_bn{i}"
      )
    return factor, h


class Translator(nn.Module):
  """Factor Transfer translator: the student's trainable factor encoder.

  Reference: HobbitLong/RepDistiller ``models/util.py`` ``Translator(s_shape, t_shape, k=0.5,
  use_bn=True)`` (NHWC shapes here). With ``C = s_C`` and ``F = int(t_C·k)``:
  ``conv3×3(C→C)``, ``conv3×3(C→F)``, ``conv3×3(F→F)`` (pad 1, bias), each followed by
  ``[BN if use_bn]`` and ``LeakyReLU(0.1)``. Trained jointly with the student (``train=True``).

  Parameters: ``conv{1,2,3}/{kernel, bias}`` (+ ``bn{1,2,3}`` if ``use_bn``).
  """

  s_shape: Sequence[int]
  t_shape: Sequence[int]
  k: float = 0.5
  use_bn: bool = True
  dtype: Any = None
  param_dtype: Any = jnp.float32

  def __post_init__(self):
    _check_shape4("s_shape", self.s_shape)
    t_c = _check_shape4("t_shape", self.t_shape)[3]
    if int(t_c * self.k) < 1:
      raise ValueError(f"int(t_C * k) must be >= 1; got t_C={t_c}, k={self.k!r}")
    super().__post_init__()

  @nn.compact
  def __call__(self, x: Array, train: bool) -> Array:
    _check_input(type(self).__name__, x, tuple(self.s_shape))
    c = int(self.s_shape[3])
    f = int(int(self.t_shape[3]) * self.k)
    h = x
    for i, (cin, cout) in enumerate(((c, c), (c, f), (f, f)), start=1):
      h = _conv(
        cout, 3, cin, padding=1, dtype=self.dtype, param_dtype=self.param_dtype, name=f"conv{i}"
      )(h)
      if self.use_bn:
        h = _bn(train, self.dtype, self.param_dtype, f"bn{i}")(h)
      h = _leaky(h)
    return h
