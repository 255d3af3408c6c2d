"""Feature-map distillation losses (pure functions, per-example outputs).

Every loss here takes NHWC feature maps (kdjax layout; the references are NCHW) and returns a
``(B,)`` array of per-example values whose **batch mean** equals the reference loss value (and so
has the reference gradient). All losses in this file decompose exactly over examples: example b's
value depends only on example b's features (the relational, batch-level losses are in
:mod:`kdjax.losses.relational`). Trainable parts (regressors, connectors, VID variances) are Flax
modules in :mod:`kdjax.losses.connectors`; the functions here take their outputs.

Conventions (methods.md §0.3, §7.2; anchors.md §4.4):

* references: HobbitLong/RepDistiller ``distiller_zoo/*.py`` (FitNet, AT, VID, AB, FT, FSP, NST)
  and clovaai/overhaul-distillation ``CIFAR-100/distiller.py`` (OH);
* spatial matching: where the reference adaptive-average-pools the larger map to the smaller
  one's size (AT, VID, FT, FSP, NST), :func:`adaptive_avg_pool` does the same with PyTorch's
  window rule (``floor(i·H/h) .. ceil((i+1)·H/h)``; plain block means for integer ratios). The
  reference pools to ``(h, h)`` (square maps); here the target is the smaller map's ``(h, w)``,
  identical for square maps;
* no ``stop_gradient`` is applied to the teacher inside the losses (the caller stops it); the
  reference's ``no_grad`` / ``.detach()`` on teacher-only terms therefore has the same effect;
* ``F.normalize`` is ``x / max(‖x‖₂, 1e-12)`` with a NaN-free gradient at ``x = 0``;
* hyper-parameters are keyword-only numbers, validated eagerly when concrete by
  :mod:`kdjax.checks` (``UserError``, a ``ValueError``; continuous ones may also be traced, then
  they are not checked, as in ``logits.py``); shape mismatches raise ``ValueError`` naming both
  shapes; functions are jit-compatible and keep the floating dtype of their inputs (float32 /
  float64). Gram-type contractions use
  ``Precision.HIGHEST`` so TPU/GPU runs do not silently drop to bf16/TF32 matmuls.

Multi-layer losses (AT, AB, FSP, NST, OH) take Python lists of maps and include the reference's
layer sum and layer weights; VID is per layer (each layer has its own regressor and variances;
RepDistiller sums the per-layer values). KDSVD (RepDistiller ``distiller_zoo/KDSVD.py``) lives in
:mod:`kdjax.losses.kdsvd` (its own SVD backward and a fixed teacher sign convention).
"""

from __future__ import annotations

import functools
import math
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from kdjax import checks

__all__ = [
  "adaptive_avg_pool",
  "fitnet",
  "at",
  "vid",
  "ab",
  "ft",
  "fsp",
  "nst",
  "oh",
  "overhaul_margin",
]

_HIGHEST = jax.lax.Precision.HIGHEST
_NORMALIZE_EPS = 1e-12  # torch.nn.functional.normalize default


# --------------------------------------------------------------------------------------------
# shape checks (eager, at trace time; number checks are kdjax.checks)
# --------------------------------------------------------------------------------------------


def _int_if_integral(p):
  """Integer-valued exponents use ``integer_pow`` (exact for negative bases, like torch)."""
  return int(p) if isinstance(p, float) and p.is_integer() else p


def _dtype(*xs):
  return jnp.result_type(*xs, float)


def _check_map(name: str, x) -> tuple:
  shape = tuple(jnp.shape(x))
  if len(shape) != 4:
    raise ValueError(f"{name} must be a 4-D NHWC feature map, got {name}.shape={shape}")
  return shape


def _check_pair_maps(s_name, s, t_name, t, *, same_channels: bool = False):
  """Checks two NHWC maps with the same batch (and optionally channels); common dtype."""
  s_shape = _check_map(s_name, s)
  t_shape = _check_map(t_name, t)
  if s_shape[0] != t_shape[0]:
    raise ValueError(
      f"{s_name} and {t_name} must have the same batch size; got {s_name}.shape={s_shape}, "
      f"{t_name}.shape={t_shape}"
    )
  if same_channels and s_shape[3] != t_shape[3]:
    raise ValueError(
      f"{s_name} and {t_name} must have the same number of channels (last axis); got "
      f"{s_name}.shape={s_shape}, {t_name}.shape={t_shape}"
    )
  dtype = _dtype(s, t)
  return jnp.asarray(s, dtype), jnp.asarray(t, dtype)


def _check_same_shape(s_name, s, t_name, t, *, min_ndim: int = 2):
  s_shape, t_shape = tuple(jnp.shape(s)), tuple(jnp.shape(t))
  if s_shape != t_shape or len(s_shape) < min_ndim:
    raise ValueError(
      f"{s_name} and {t_name} must have the same shape with at least {min_ndim} dims "
      f"(batch first); got {s_name}.shape={s_shape}, {t_name}.shape={t_shape}"
    )
  dtype = _dtype(s, t)
  return jnp.asarray(s, dtype), jnp.asarray(t, dtype)


def _check_lists(s_name, s_list, t_name, t_list, *, min_len: int = 1):
  for name, lst in ((s_name, s_list), (t_name, t_list)):
    if not isinstance(lst, (list, tuple)):
      raise ValueError(f"{name} must be a list or tuple of feature maps, got {type(lst).__name__}")
  if len(s_list) != len(t_list) or len(s_list) < min_len:
    raise ValueError(
      f"{s_name} and {t_name} must be lists of the same length >= {min_len}; got "
      f"len({s_name})={len(s_list)}, len({t_name})={len(t_list)}"
    )


# --------------------------------------------------------------------------------------------
# numerics helpers
# --------------------------------------------------------------------------------------------


def _safe_norm(x: jax.Array, axis, keepdims: bool = False) -> jax.Array:
  """L2 norm with a zero (not NaN) gradient at ``x = 0`` (torch's norm backward convention)."""
  ss = jnp.sum(x * x, axis=axis, keepdims=keepdims)
  pos = ss > 0
  return jnp.where(pos, jnp.sqrt(jnp.where(pos, ss, 1.0)), 0.0)


def _l2_normalize(x: jax.Array, axis: int) -> jax.Array:
  """``torch.nn.functional.normalize(x, p=2, dim=axis)``: ``x / max(‖x‖, 1e-12)``."""
  return x / jnp.maximum(_safe_norm(x, axis=axis, keepdims=True), _NORMALIZE_EPS)


@functools.lru_cache(maxsize=None)
def _pool_matrix(n_in: int, n_out: int) -> np.ndarray:
  """Row i averages input positions ``floor(i·n_in/n_out) .. ceil((i+1)·n_in/n_out) − 1``."""
  m = np.zeros((n_out, n_in))
  for i in range(n_out):
    start = (i * n_in) // n_out
    end = -(-((i + 1) * n_in) // n_out)
    m[i, start:end] = 1.0 / (end - start)
  return m


def adaptive_avg_pool(x: jax.Array, output_size: tuple[int, int]) -> jax.Array:
  """``torch.nn.functional.adaptive_avg_pool2d`` for NHWC maps, down-sampling only.

  Output cell ``(i, j)`` averages rows ``floor(i·H/h) .. ceil((i+1)·H/h) − 1`` and the
  analogous columns (PyTorch's rule; windows overlap when ``H/h`` is not an integer).

  Args:
    x: ``(B, H, W, C)`` feature map.
    output_size: ``(h, w)`` with ``1 <= h <= H`` and ``1 <= w <= W``.

  Returns:
    ``(B, h, w, C)`` pooled map (``x`` itself when the size already matches).

  Raises:
    ValueError: if ``x`` is not 4-D or the output size is not a down-sampling.
  """
  b, h_in, w_in, c = _check_map("x", x)
  h, w = (int(v) for v in output_size)
  if not (1 <= h <= h_in and 1 <= w <= w_in):
    raise ValueError(
      f"adaptive_avg_pool only down-samples: got x.shape={(b, h_in, w_in, c)} and "
      f"output_size={(h, w)}"
    )
  if (h, w) == (h_in, w_in):
    return x
  if h_in % h == 0 and w_in % w == 0:
    return jnp.mean(x.reshape(b, h, h_in // h, w, w_in // w, c), axis=(2, 4))
  ph = jnp.asarray(_pool_matrix(h_in, h), x.dtype)
  pw = jnp.asarray(_pool_matrix(w_in, w), x.dtype)
  return jnp.einsum("bhwc,ih,jw->bijc", x, ph, pw, precision=_HIGHEST)


def _match_spatial(s_name, f_s, t_name, f_t):
  """RepDistiller's rule: pool the map with the larger H to the other map's spatial size."""
  (_, s_h, s_w, _), (_, t_h, t_w, _) = f_s.shape, f_t.shape
  if (s_h - t_h) * (s_w - t_w) < 0:
    raise ValueError(
      f"cannot match spatial sizes: one map is taller, the other wider; got "
      f"{s_name}.shape={f_s.shape}, {t_name}.shape={f_t.shape}"
    )
  if s_h > t_h or s_w > t_w:
    f_s = adaptive_avg_pool(f_s, (t_h, t_w))
  elif s_h < t_h or s_w < t_w:
    f_t = adaptive_avg_pool(f_t, (s_h, s_w))
  return f_s, f_t


def _channel_mean_pow_map(f: jax.Array, p) -> jax.Array:
  """``F.normalize(f.pow(p).mean(1).view(B, -1))`` in NHWC: ``(B, H·W)``."""
  a = jnp.mean(f**p, axis=-1).reshape(f.shape[0], -1)
  return _l2_normalize(a, axis=1)


# --------------------------------------------------------------------------------------------
# FitNet
# --------------------------------------------------------------------------------------------


def fitnet(student_feat_regressed: jax.Array, teacher_feat: jax.Array) -> jax.Array:
  """FitNet hint loss (mean squared error), per example.

  Romero et al., "FitNets: Hints for Thin Deep Nets", ICLR 2015:
  ``L_b = mean_{h,w,c} (r(f_s)[b] − f_t[b])²`` where ``r`` is the regressor
  (:class:`kdjax.losses.connectors.ConvReg`, applied by the caller).

  Reference: HobbitLong/RepDistiller ``distiller_zoo/FitNet.py`` (``HintLoss`` = ``nn.MSELoss()``,
  mean over all elements) with ``models/util.py`` ``ConvReg``; tap ``stage2`` (``hint_layer=2``).
  The **batch mean** of this function equals ``HintLoss``.

  Args:
    student_feat_regressed: ``(B, ...)`` regressed student features (``ConvReg`` output).
    teacher_feat: teacher features of the same shape.

  Returns:
    ``(B,)`` per-example losses.

  Raises:
    ValueError: if the shapes differ.
  """
  s, t = _check_same_shape(
    "student_feat_regressed", student_feat_regressed, "teacher_feat", teacher_feat
  )
  return jnp.mean(jnp.square(s - t), axis=tuple(range(1, s.ndim)))


# --------------------------------------------------------------------------------------------
# AT
# --------------------------------------------------------------------------------------------


def at(
  student_feats: Sequence[jax.Array], teacher_feats: Sequence[jax.Array], *, p: float = 2
) -> jax.Array:
  """Attention transfer, summed over layers, per example.

  Zagoruyko & Komodakis, "Paying More Attention to Attention", ICLR 2017. Per layer pair,
  after pooling the larger map (adaptive average) to the smaller one's size, the attention map
  is ``a(f) = normalize(mean_c f^p)`` flattened over ``(H, W)``, and
  ``L_b = Σ_layers mean_{hw} (a(f_s)[b] − a(f_t)[b])²``.

  Reference: HobbitLong/RepDistiller ``distiller_zoo/AT.py`` (``Attention(p=2)``; the train loop
  sums the per-layer ``(a_s − a_t).pow(2).mean()`` values; taps ``feat[1:-1]`` = all stages).
  The **batch mean** of this function equals that sum (the mean over ``B·H·W`` of each layer is
  the batch mean of the per-example means over ``H·W``). This is the RepDistiller ("code")
  normalisation: a mean over channels, and squared differences of normalised maps averaged over
  positions (not the paper's ‖·‖₂ of Eq. 2).

  Args:
    student_feats: list of NHWC student maps (one per stage).
    teacher_feats: list of NHWC teacher maps, same length and batch; channels may differ.
    p: exponent ``> 0`` (default 2). Integer values use exact integer powers; non-integer values
      need non-negative features (as torch's ``pow``).

  Returns:
    ``(B,)`` per-example losses (summed over layers).

  Raises:
    ValueError: on ``p <= 0``, lists of different length, or incompatible shapes.
  """
  p = _int_if_integral(checks.positive("p", p))
  _check_lists("student_feats", student_feats, "teacher_feats", teacher_feats)
  total = 0.0
  for i, (f_s, f_t) in enumerate(zip(student_feats, teacher_feats)):
    f_s, f_t = _check_pair_maps(f"student_feats[{i}]", f_s, f"teacher_feats[{i}]", f_t)
    f_s, f_t = _match_spatial(f"student_feats[{i}]", f_s, f"teacher_feats[{i}]", f_t)
    d = _channel_mean_pow_map(f_s, p) - _channel_mean_pow_map(f_t, p)
    total = total + jnp.mean(d * d, axis=1)
  return total


# --------------------------------------------------------------------------------------------
# VID
# --------------------------------------------------------------------------------------------


def vid(
  pred_mean: jax.Array, log_scale: jax.Array, teacher_feat: jax.Array, *, eps: float = 1e-5
) -> jax.Array:
  """Variational information distillation for one layer, per example.

  Ahn et al., "Variational Information Distillation for Knowledge Transfer", CVPR 2019. A
  Gaussian with mean ``μ = r(f_s)`` (the regressor
  :class:`kdjax.losses.connectors.VIDRegressor`) and per-teacher-channel variance
  ``σ²_c = softplus(θ_c) + eps`` models the teacher features:
  ``L_b = mean_{h,w,c} ½·((μ[b] − f_t[b])² / σ²_c + log σ²_c)``.

  Reference: HobbitLong/RepDistiller ``distiller_zoo/VID.py`` (``VIDLoss``: pools the larger of
  (student input, teacher) by adaptive average, regresses, ``pred_var = log(1 + exp(θ)) + eps``,
  ``mean(neg_log_prob)``); RepDistiller sums this over the stages ``feat[1:-1]`` (the caller sums).
  The **batch mean** of this function equals ``VIDLoss.forward``.

  Pooling: the reference pools the *student input* before the regressor when it is larger
  (``VIDRegressor(..., target_hw=...)`` does that) and the *teacher* when it is larger (done
  here). A ``pred_mean`` larger than the teacher map is therefore an error.

  Args:
    pred_mean: ``(B, h, w, C_t)`` regressor output ``μ``.
    log_scale: ``(C_t,)`` variance parameter ``θ`` (trainable; ``VIDRegressor``'s ``log_scale``).
    teacher_feat: ``(B, H, W, C_t)`` teacher map with ``H >= h``, ``W >= w``.
    eps: variance floor ``> 0`` (default 1e-5, as the reference).

  Returns:
    ``(B,)`` per-example losses.

  Raises:
    ValueError: on ``eps <= 0`` or incompatible shapes.
  """
  checks.positive("eps", eps)
  mu, t = _check_pair_maps("pred_mean", pred_mean, "teacher_feat", teacher_feat, same_channels=True)
  ls_shape = tuple(jnp.shape(log_scale))
  if ls_shape != (t.shape[-1],):
    raise ValueError(
      f"log_scale must have shape (C_t,) = ({t.shape[-1]},); got log_scale.shape={ls_shape}, "
      f"teacher_feat.shape={t.shape}"
    )
  if mu.shape[1] > t.shape[1] or mu.shape[2] > t.shape[2]:
    raise ValueError(
      "pred_mean is spatially larger than teacher_feat; pool the student *input* before the "
      "regressor (VIDRegressor(..., target_hw=...)) as the reference does; got "
      f"pred_mean.shape={mu.shape}, teacher_feat.shape={t.shape}"
    )
  _, t = _match_spatial("pred_mean", mu, "teacher_feat", t)
  var = jax.nn.softplus(jnp.asarray(log_scale, mu.dtype)) + eps
  nll = 0.5 * (jnp.square(mu - t) / var + jnp.log(var))
  return jnp.mean(nll, axis=(1, 2, 3))


# --------------------------------------------------------------------------------------------
# AB
# --------------------------------------------------------------------------------------------


def ab(
  student_feats_connected: Sequence[jax.Array],
  teacher_preact_feats: Sequence[jax.Array],
  *,
  margin: float = 1.0,
) -> jax.Array:
  """Activation-boundary transfer (alternative L2), summed over layers, per example.

  Heo et al., "Knowledge Transfer via Distillation of Activation Boundaries Formed by Hidden
  Neurons", AAAI 2019. With ``s`` the connected student pre-activation
  (:class:`kdjax.losses.connectors.ABConnector`), ``t`` the teacher pre-activation and margin m:
  ``ℓ = (s + m)²·1[s > −m ∧ t ≤ 0] + (s − m)²·1[s ≤ m ∧ t > 0]``, and
  ``L_b = (3/1000) · Σ_i w_i · Σ_{h,w,c} ℓ_i[b]`` with ``w_i = 2^(i − L + 1)`` for layer
  ``i = 0..L−1`` (the deepest layer has weight 1).

  Reference: HobbitLong/RepDistiller ``distiller_zoo/AB.py`` (``ABLoss(feat_num=L, margin)``:
  per-layer ``w_i · sum / B / 1000 · 3``; the init stage sums the layers; taps ``preact_stage*``).
  The **batch mean** of this function equals that sum. RepDistiller uses AB only in its
  30-epoch init stage (methods.md §7.2), where β is not applied.

  Args:
    student_feats_connected: list of L connector outputs (NHWC).
    teacher_preact_feats: list of L teacher pre-activation maps, each the same shape as the
      corresponding connector output.
    margin: ``m >= 0`` (default 1.0).

  Returns:
    ``(B,)`` per-example losses.

  Raises:
    ValueError: on ``margin < 0``, lists of different length, or mismatched shapes.
  """
  m = checks.nonnegative("margin", margin)
  _check_lists(
    "student_feats_connected", student_feats_connected, "teacher_preact_feats", teacher_preact_feats
  )
  num = len(student_feats_connected)
  total = 0.0
  for i, (s, t) in enumerate(zip(student_feats_connected, teacher_preact_feats)):
    s, t = _check_same_shape(
      f"student_feats_connected[{i}]", s, f"teacher_preact_feats[{i}]", t, min_ndim=4
    )
    _check_map(f"student_feats_connected[{i}]", s)
    loss = jnp.square(s + m) * ((s > -m) & (t <= 0)) + jnp.square(s - m) * ((s <= m) & (t > 0))
    total = total + (2.0 ** (i - num + 1)) * jnp.sum(loss, axis=(1, 2, 3))
  return total * (3.0 / 1000.0)


# --------------------------------------------------------------------------------------------
# FT
# --------------------------------------------------------------------------------------------


def ft(
  student_factor: jax.Array, teacher_factor: jax.Array, *, p1: float = 2, p2: float = 1
) -> jax.Array:
  """Factor transfer, per example.

  Kim et al., "Paraphrasing Complex Network: Network Compression via Factor Transfer",
  NeurIPS 2018. With ``φ(f) = normalize(mean_c f^p1)`` flattened over ``(H, W)`` (after pooling
  the larger factor map to the smaller one's size):
  ``L_b = mean_{hw} |φ(F_s)[b] − φ(F_t)[b]|`` for ``p2 = 1``, else
  ``mean_{hw} (φ(F_s)[b] − φ(F_t)[b])^p2``.
  ``F_s`` is the :class:`kdjax.losses.connectors.Translator` output on the student's last stage
  and ``F_t`` the (frozen) :class:`kdjax.losses.connectors.Paraphraser` factor of the teacher's.

  Reference: HobbitLong/RepDistiller ``distiller_zoo/FT.py`` (``FactorTransfer(p1=2, p2=1)``).
  The keyword names follow that reference: ``p1`` is the channel-pooling exponent, ``p2`` the
  distance exponent (``p2 = 1``: L1). The **batch mean** of this function equals
  ``FactorTransfer.forward``.

  Args:
    student_factor: ``(B, H, W, C_f)`` translator output.
    teacher_factor: ``(B, H', W', C_f')`` paraphraser factor (channels may differ).
    p1: exponent ``> 0`` of the channel mean (default 2).
    p2: distance exponent ``> 0`` (default 1; integer values other than 1 are used as signed
      powers, as the reference's ``.pow(p2)``).

  Returns:
    ``(B,)`` per-example losses.

  Raises:
    ValueError: on non-positive exponents or incompatible shapes.
  """
  p1 = _int_if_integral(checks.positive("p1", p1))
  if isinstance(p2, jax.core.Tracer):
    raise ValueError("p2 must be a concrete Python number (it selects the L1 branch)")
  p2 = _int_if_integral(checks.positive("p2", p2))
  s, t = _check_pair_maps("student_factor", student_factor, "teacher_factor", teacher_factor)
  s, t = _match_spatial("student_factor", s, "teacher_factor", t)
  d = _channel_mean_pow_map(s, p1) - _channel_mean_pow_map(t, p1)
  return jnp.mean(jnp.abs(d) if p2 == 1 else d**p2, axis=1)


# --------------------------------------------------------------------------------------------
# FSP
# --------------------------------------------------------------------------------------------


def _fsp_matrices(feats, prefix):
  out = []
  for i in range(len(feats) - 1):
    bot, top = _match_spatial(f"{prefix}[{i}]", feats[i], f"{prefix}[{i + 1}]", feats[i + 1])
    hw = bot.shape[1] * bot.shape[2]
    out.append(jnp.einsum("bhwi,bhwj->bij", bot, top, precision=_HIGHEST) / hw)
  return out


def fsp(student_feats: Sequence[jax.Array], teacher_feats: Sequence[jax.Array]) -> jax.Array:
  """Flow-of-solution-procedure (FSP) matrix matching, summed over tap pairs, per example.

  Yim et al., "A Gift from Knowledge Distillation: Fast Optimization, Network Minimization and
  Transfer Learning", CVPR 2017. For consecutive taps ``(f_k, f_{k+1})`` of one network (the
  larger map adaptive-average-pooled to the smaller one's size),
  ``G_k[b, i, j] = mean_{hw} f_k[b, h, w, i] · f_{k+1}[b, h, w, j]``, and
  ``L_b = Σ_k mean_{i,j} (G_k^s[b] − G_k^t[b])²``.

  Reference: HobbitLong/RepDistiller ``distiller_zoo/FSP.py`` (``FSP``: per-pair
  ``(G_s − G_t).pow(2).mean()``, summed by ``helper/pretrain.py``; taps ``feat[:-1]`` = stem +
  all stages; init stage only). The **batch mean** of this function equals that sum. As the
  reference, student and teacher must have equal channel counts at every tap (spatial sizes
  may differ between the networks).

  Args:
    student_feats: list of ``K >= 2`` NHWC student taps.
    teacher_feats: list of ``K`` NHWC teacher taps with the same channel counts.

  Returns:
    ``(B,)`` per-example losses.

  Raises:
    ValueError: on lists of different length or < 2, or mismatched batch / channel counts.
  """
  _check_lists("student_feats", student_feats, "teacher_feats", teacher_feats, min_len=2)
  s_list, t_list = [], []
  for i, (f_s, f_t) in enumerate(zip(student_feats, teacher_feats)):
    f_s, f_t = _check_pair_maps(
      f"student_feats[{i}]", f_s, f"teacher_feats[{i}]", f_t, same_channels=True
    )
    s_list.append(f_s)
    t_list.append(f_t)
  total = 0.0
  for g_s, g_t in zip(
    _fsp_matrices(s_list, "student_feats"), _fsp_matrices(t_list, "teacher_feats")
  ):
    total = total + jnp.mean(jnp.square(g_s - g_t), axis=(1, 2))
  return total


# --------------------------------------------------------------------------------------------
# NST
# --------------------------------------------------------------------------------------------


def nst(student_feats: Sequence[jax.Array], teacher_feats: Sequence[jax.Array]) -> jax.Array:
  """Neuron selectivity transfer (MMD², polynomial kernel), summed over layers, per example.

  Huang & Wang, "Like What You Like: Knowledge Distill via Neuron Selectivity Transfer", 2017.
  Per layer pair (larger map pooled to the smaller size), each channel's spatial map is
  L2-normalised over ``H·W``: ``u_c = normalize(f[b, :, :, c])``. With the polynomial kernel
  ``k(u, v) = ⟨u, v⟩²`` (degree 2, c = 0):
  ``L_b = Σ_layers [mean_{c,c'} k(t_c, t_c') + mean_{c,c'} k(s_c, s_c') − 2·mean_{c,c'} k(s_c, t_c')]``.

  Reference: HobbitLong/RepDistiller ``distiller_zoo/NST.py`` (``NSTLoss``, ``full_loss=True``;
  the teacher-teacher term is ``.detach()``-ed, which is the same as the caller stopping the
  teacher; taps ``feat[1:-1]``, summed). The **batch mean** of this function equals that sum.
  Channel counts may differ.

  Args:
    student_feats: list of NHWC student maps.
    teacher_feats: list of NHWC teacher maps, same length and batch.

  Returns:
    ``(B,)`` per-example losses.

  Raises:
    ValueError: on lists of different length or incompatible shapes.
  """
  _check_lists("student_feats", student_feats, "teacher_feats", teacher_feats)

  def kernel_mean(a, b):
    g = jnp.einsum("bnc,bnd->bcd", a, b, precision=_HIGHEST)
    return jnp.mean(g * g, axis=(1, 2))

  total = 0.0
  for i, (f_s, f_t) in enumerate(zip(student_feats, teacher_feats)):
    f_s, f_t = _check_pair_maps(f"student_feats[{i}]", f_s, f"teacher_feats[{i}]", f_t)
    f_s, f_t = _match_spatial(f"student_feats[{i}]", f_s, f"teacher_feats[{i}]", f_t)
    u_s = _l2_normalize(f_s.reshape(f_s.shape[0], -1, f_s.shape[-1]), axis=1)
    u_t = _l2_normalize(f_t.reshape(f_t.shape[0], -1, f_t.shape[-1]), axis=1)
    total = total + kernel_mean(u_t, u_t) + kernel_mean(u_s, u_s) - 2.0 * kernel_mean(u_s, u_t)
  return total


# --------------------------------------------------------------------------------------------
# OH (overhaul of feature distillation)
# --------------------------------------------------------------------------------------------


def overhaul_margin(bn_scale: jax.Array, bn_bias: jax.Array) -> jax.Array:
  """Per-channel margin of OH from the teacher's pre-ReLU BatchNorm affine parameters.

  Heo et al., "A Comprehensive Overhaul of Feature Distillation", ICCV 2019. Treating the BN
  output of channel c as ``N(m, s²)`` with ``s = |γ_c|`` and ``m = β_c``, the margin is the
  expected value of its negative part,
  ``E[x | x < 0] = m − s·φ(m/s) / Φ(−m/s)``, or ``−3s`` when ``Φ(−m/s) <= 0.001``.

  Reference: clovaai/overhaul-distillation ``CIFAR-100/distiller.py`` (``get_margin_from_BN``,
  which reads ``bn.weight`` as the std and ``bn.bias`` as the mean of the BN of
  ``get_bn_before_relu()``). The reference computes in Python float64 and stores float32; this
  function computes in the inputs' dtype. Channels with ``γ_c = 0`` (where the reference divides
  by zero) get ``min(β_c, 0)`` (design decision). The result is a constant: it carries no
  gradient.

  Args:
    bn_scale: ``(C,)`` BN weight γ of the teacher's BN before each stage-end ReLU.
    bn_bias: ``(C,)`` BN bias β.

  Returns:
    ``(C,)`` margins (all ``<= 0`` up to rounding).

  Raises:
    ValueError: if the shapes are not equal 1-D shapes.
  """
  g_shape, b_shape = tuple(jnp.shape(bn_scale)), tuple(jnp.shape(bn_bias))
  if len(g_shape) != 1 or g_shape != b_shape:
    raise ValueError(
      f"bn_scale and bn_bias must be 1-D of the same length; got bn_scale.shape={g_shape}, "
      f"bn_bias.shape={b_shape}"
    )
  dtype = _dtype(bn_scale, bn_bias)
  s = jax.lax.stop_gradient(jnp.abs(jnp.asarray(bn_scale, dtype)))
  m = jax.lax.stop_gradient(jnp.asarray(bn_bias, dtype))
  pos = s > 0
  s_safe = jnp.where(pos, s, 1.0)
  z = m / s_safe
  tail = jax.scipy.stats.norm.cdf(-z)
  big = tail > 0.001
  cond = -s * jnp.exp(-0.5 * z * z) / math.sqrt(2.0 * math.pi) / jnp.where(big, tail, 1.0) + m
  margin = jnp.where(big, cond, -3.0 * s)
  return jnp.where(pos, margin, jnp.minimum(m, 0.0))


def oh(
  student_feats_connected: Sequence[jax.Array],
  teacher_preact_feats: Sequence[jax.Array],
  margins: Sequence[jax.Array],
  *,
  scale: float = 1e-3,
) -> jax.Array:
  """Overhaul feature distillation (partial L2 to margin-ReLU targets), per example.

  Heo et al., "A Comprehensive Overhaul of Feature Distillation", ICCV 2019. Per stage i of L,
  with ``s`` the connected student pre-ReLU map (:class:`kdjax.losses.connectors.OHConnector`)
  and target ``t = max(F_t, m_c)`` (teacher pre-ReLU map, per-channel margin from
  :func:`overhaul_margin`):
  ``ℓ_i = Σ_{h,w,c} (s − t)² · 1[(s > t) ∨ (t > 0)]`` and
  ``L_b = scale · Σ_i ℓ_i[b] / 2^(L − i − 1)``.

  Reference: clovaai/overhaul-distillation ``CIFAR-100/distiller.py`` (``distillation_loss``,
  ``Distiller.forward``) and ``train_with_distillation.py`` (``loss_distill.sum() / B / 1000``).
  With the default ``scale = 1e-3`` the **batch mean** of this function equals that term (the
  official total is ``CE + mean(oh(...))``).

  Args:
    student_feats_connected: list of L connector outputs (NHWC).
    teacher_preact_feats: list of L teacher pre-ReLU maps of the same shapes.
    margins: list of L ``(C_i,)`` margins (:func:`overhaul_margin`).
    scale: overall factor ``>= 0`` (default 1e-3, the reference's ``/ 1000``).

  Returns:
    ``(B,)`` per-example losses.

  Raises:
    ValueError: on ``scale < 0``, lists of different length, or mismatched shapes.
  """
  scale = checks.nonnegative("scale", scale)
  _check_lists(
    "student_feats_connected", student_feats_connected, "teacher_preact_feats", teacher_preact_feats
  )
  if not isinstance(margins, (list, tuple)) or len(margins) != len(student_feats_connected):
    raise ValueError(
      f"margins must be a list with one (C,) array per stage ({len(student_feats_connected)}); "
      f"got {type(margins).__name__} of length "
      f"{len(margins) if isinstance(margins, (list, tuple)) else 'n/a'}"
    )
  num = len(student_feats_connected)
  total = 0.0
  for i, (s, t, m) in enumerate(zip(student_feats_connected, teacher_preact_feats, margins)):
    s, t = _check_same_shape(
      f"student_feats_connected[{i}]", s, f"teacher_preact_feats[{i}]", t, min_ndim=4
    )
    _check_map(f"student_feats_connected[{i}]", s)
    if tuple(jnp.shape(m)) != (t.shape[-1],):
      raise ValueError(
        f"margins[{i}] must have shape ({t.shape[-1]},); got margins[{i}].shape="
        f"{tuple(jnp.shape(m))}, teacher_preact_feats[{i}].shape={t.shape}"
      )
    target = jnp.maximum(t, jnp.asarray(m, t.dtype))
    mask = (s > target) | (target > 0)
    loss = jnp.sum(jnp.square(s - target) * mask, axis=(1, 2, 3))
    total = total + loss / (2.0 ** (num - i - 1))
  return total * scale
