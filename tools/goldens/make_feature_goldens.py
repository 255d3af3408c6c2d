"""Generates tests/golden/feature_losses.{npz,json} from PyTorch re-implementations of the references.

NOT run by CI (CI only reads the fixture files). Needs torch and numpy; kdjax does not depend on
torch:

    $TORCH_VENV/bin/python tools/goldens/make_feature_goldens.py

(any Python with ``torch==2.13.0`` CPU and numpy works). Everything runs in float64.

The ``Ref*`` modules and ``ref_*`` functions below re-implement, in NCHW PyTorch, the computations
of HobbitLong/RepDistiller (``distiller_zoo/{FitNet,AT,SP,CC,VID,RKD,PKT,AB,FT,FSP,NST}.py``,
``models/util.py``), clovaai/overhaul-distillation (``CIFAR-100/distiller.py``,
``train_with_distillation.py``) and yoshitomo-matsubara/torchdistill (``CCKDLoss``, Gaussian kernel).
Inputs are drawn NCHW and stored NHWC (kdjax's layout); connector weights are stored already
converted to the Flax parameter layout of ``kdjax.losses.connectors``:

* Conv2d ``weight (O, I, kh, kw)`` -> ``kernel (kh, kw, I, O)``;
* ConvTranspose2d ``weight (I, O, kh, kw)`` -> ``kernel (kh, kw, I, O)`` (no flip: the Flax
  module flips at compute time, as torch does);
* Linear ``weight (O, I)`` -> ``kernel (I, O)``; BatchNorm ``weight/bias`` -> ``scale/bias``,
  ``running_mean/var`` -> ``batch_stats`` ``mean/var``.

Keys of the npz, per entry id ``<id>`` (the JSON lists the entries with function, kwargs, the
input names and which connectors they use):

* ``<id>__in__<name>``:        inputs (NHWC or (B, D)); list inputs as ``<name>__<k>``;
* ``<id>__params__<path>``, ``<id>__batch_stats__<path>``: connector variables, ``path`` = the
  Flax path joined with ``/`` and prefixed by the connector's name in the entry;
* ``<id>__out__<name>``:       intermediate connector outputs (train-mode BN unless stated);
* ``<id>__loss``:              the reference's scalar loss;
* ``<id>__per_example``:       (B,) per-example values, by the split documented in kdjax (for the
                               exactly decomposable losses: the reference applied to each example's
                               slice of the (batch-computed) connector output);
* ``<id>__grad__<name>``:      d loss / d student input (NHWC), and d loss / d VID ``log_scale``;
* ``<id>__wgrad__<name>``:     d Σ_b w_b·per_example_b / d student input with the fixed weights
                               ``<id>__weights`` (decomposable losses only).
"""

from __future__ import annotations

import json
import math
import os

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

torch.set_default_dtype(torch.float64)
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUT_DIR = os.path.join(ROOT, "tests", "golden")

RNG = np.random.RandomState(20240611)
ARRAYS: dict[str, np.ndarray] = {}
ENTRIES: list[dict] = []


def nhwc(x: torch.Tensor) -> np.ndarray:
  x = x.detach()
  return (x.permute(0, 2, 3, 1) if x.dim() == 4 else x).numpy().copy()


def randn(*shape, scale=1.0, positive=False):
  a = RNG.randn(*shape) * scale
  return torch.tensor(np.abs(a) if positive else a)


# ----------------------------------------------------------------------------------------------
# Reference connectors (RepDistiller models/util.py, VID.py; overhaul distiller.py), NCHW
# ----------------------------------------------------------------------------------------------


class RefConvReg(nn.Module):
  """RepDistiller ConvReg: shape-dependent conv (+bias) -> BN -> ReLU (optional)."""

  def __init__(self, s_shape, t_shape, use_relu=True):
    super().__init__()
    _, s_c, s_h, s_w = s_shape
    _, t_c, t_h, t_w = t_shape
    self.use_relu = use_relu
    if s_h == 2 * t_h:
      self.conv = nn.Conv2d(s_c, t_c, kernel_size=3, stride=2, padding=1)
    elif 2 * s_h == t_h:
      self.conv = nn.ConvTranspose2d(s_c, t_c, kernel_size=4, stride=2, padding=1)
    elif s_h >= t_h:
      self.conv = nn.Conv2d(s_c, t_c, kernel_size=(1 + s_h - t_h, 1 + s_w - t_w))
    else:
      raise ValueError((s_shape, t_shape))
    self.bn = nn.BatchNorm2d(t_c)

  def forward(self, x):
    y = self.bn(self.conv(x))
    return F.relu(y) if self.use_relu else y


class RefABConnector(nn.Module):
  """RepDistiller Connector entry: identity if (C, H) match, else ConvReg without ReLU."""

  def __init__(self, s_shape, t_shape):
    super().__init__()
    self.identity = s_shape[1] == t_shape[1] and s_shape[2] == t_shape[2]
    if not self.identity:
      self.reg = RefConvReg(s_shape, t_shape, use_relu=False)

  def forward(self, x):
    return x if self.identity else self.reg(x)


class RefOHConnector(nn.Module):
  """overhaul build_feature_connector: 1x1 conv (no bias, N(0, sqrt(2/n))) + BN(1, 0)."""

  def __init__(self, t_c, s_c):
    super().__init__()
    self.conv = nn.Conv2d(s_c, t_c, kernel_size=1, bias=False)
    self.conv.weight.data.normal_(0, math.sqrt(2.0 / t_c))
    self.bn = nn.BatchNorm2d(t_c)

  def forward(self, x):
    return self.bn(self.conv(x))


class RefLinearEmbed(nn.Module):
  def __init__(self, dim_in, dim_out, normalize):
    super().__init__()
    self.linear = nn.Linear(dim_in, dim_out)
    self.normalize = normalize

  def forward(self, x):
    y = self.linear(x.view(x.shape[0], -1))
    if self.normalize:  # RepDistiller Normalize(2): divide by the raw L2 norm
      y = y / y.pow(2).sum(1, keepdim=True).pow(0.5)
    return y


class RefVID(nn.Module):
  """RepDistiller VIDLoss (regressor, log_scale and the loss)."""

  def __init__(self, c_in, c_mid, c_out, init_pred_var=5.0, eps=1e-5):
    super().__init__()
    self.conv1 = nn.Conv2d(c_in, c_mid, 1, bias=False)
    self.conv2 = nn.Conv2d(c_mid, c_mid, 1, bias=False)
    self.conv3 = nn.Conv2d(c_mid, c_out, 1, bias=False)
    self.log_scale = nn.Parameter(
      torch.ones(c_out) * float(np.log(np.exp(init_pred_var - eps) - 1.0))
    )
    self.eps = eps

  def pred(self, inp, t_h):
    if inp.shape[2] > t_h:
      inp = F.adaptive_avg_pool2d(inp, (t_h, t_h))
    return self.conv3(F.relu(self.conv2(F.relu(self.conv1(inp)))))

  def loss_from_pred(self, mu, target):
    if mu.shape[2] < target.shape[2]:
      target = F.adaptive_avg_pool2d(target, (mu.shape[2], mu.shape[2]))
    var = (torch.log(1.0 + torch.exp(self.log_scale)) + self.eps).view(1, -1, 1, 1)
    return torch.mean(0.5 * ((mu - target) ** 2 / var + torch.log(var)))


class RefParaphraser(nn.Module):
  """RepDistiller Paraphraser(t_shape, k, use_bn=False)."""

  def __init__(self, c, k=0.5):
    super().__init__()
    f = int(c * k)
    self.enc = nn.ModuleList(
      [nn.Conv2d(c, c, 3, 1, 1), nn.Conv2d(c, f, 3, 1, 1), nn.Conv2d(f, f, 3, 1, 1)]
    )
    self.dec = nn.ModuleList(
      [
        nn.ConvTranspose2d(f, f, 3, 1, 1),
        nn.ConvTranspose2d(f, c, 3, 1, 1),
        nn.ConvTranspose2d(c, c, 3, 1, 1),
      ]
    )

  def forward(self, x):
    for m in self.enc:
      x = F.leaky_relu(m(x), 0.1)
    factor = x
    for m in self.dec:
      x = F.leaky_relu(m(x), 0.1)
    return factor, x


class RefTranslator(nn.Module):
  """RepDistiller Translator(s_shape, t_shape, k, use_bn=True)."""

  def __init__(self, s_c, t_c, k=0.5):
    super().__init__()
    f = int(t_c * k)
    self.convs = nn.ModuleList(
      [nn.Conv2d(s_c, s_c, 3, 1, 1), nn.Conv2d(s_c, f, 3, 1, 1), nn.Conv2d(f, f, 3, 1, 1)]
    )
    self.bns = nn.ModuleList([nn.BatchNorm2d(s_c), nn.BatchNorm2d(f), nn.BatchNorm2d(f)])

  def forward(self, x):
    for conv, bn in zip(self.convs, self.bns):
      x = F.leaky_relu(bn(conv(x)), 0.1)
    return x


def randomize_bn(module):
  """Non-trivial BN affine parameters and running statistics (fixed by RNG)."""
  for m in module.modules():
    if isinstance(m, nn.BatchNorm2d):
      c = m.num_features
      m.weight.data = torch.tensor(RNG.uniform(0.5, 1.5, c))
      m.bias.data = torch.tensor(RNG.randn(c) * 0.2)
      m.running_mean.data = torch.tensor(RNG.randn(c) * 0.3)
      m.running_var.data = torch.tensor(RNG.uniform(0.5, 2.0, c))


# --------------------------------------------------------------------------------------------
# torch -> Flax variable export
# --------------------------------------------------------------------------------------------


def conv_kernel(w):
  return w.detach().permute(2, 3, 1, 0).numpy().copy()


def deconv_kernel(w):
  return w.detach().permute(2, 3, 0, 1).numpy().copy()


def export(eid, prefix, flat):
  """flat: {flax path: (collection, array)}"""
  for path, (col, arr) in flat.items():
    ARRAYS[f"{eid}__{col}__{prefix}/{path}"] = np.asarray(arr)


def bn_vars(bn, name):
  return {
    f"{name}/scale": ("params", bn.weight.detach().numpy().copy()),
    f"{name}/bias": ("params", bn.bias.detach().numpy().copy()),
    f"{name}/mean": ("batch_stats", bn.running_mean.numpy().copy()),
    f"{name}/var": ("batch_stats", bn.running_var.numpy().copy()),
  }


def export_conv_reg(eid, prefix, reg: RefConvReg):
  flat = {}
  if isinstance(reg.conv, nn.ConvTranspose2d):
    flat["conv/kernel"] = ("params", deconv_kernel(reg.conv.weight))
  else:
    flat["conv/kernel"] = ("params", conv_kernel(reg.conv.weight))
  flat["conv/bias"] = ("params", reg.conv.bias.detach().numpy().copy())
  flat.update(bn_vars(reg.bn, "bn"))
  export(eid, prefix, flat)


def export_oh(eid, prefix, m: RefOHConnector):
  flat = {"conv/kernel": ("params", conv_kernel(m.conv.weight))}
  flat.update(bn_vars(m.bn, "bn"))
  export(eid, prefix, flat)


def export_linear(eid, prefix, m: RefLinearEmbed):
  export(
    eid,
    prefix,
    {
      "linear/kernel": ("params", m.linear.weight.detach().numpy().T.copy()),
      "linear/bias": ("params", m.linear.bias.detach().numpy().copy()),
    },
  )


def export_vid(eid, prefix, m: RefVID):
  export(
    eid,
    prefix,
    {f"conv{i}/kernel": ("params", conv_kernel(getattr(m, f"conv{i}").weight)) for i in (1, 2, 3)},
  )
  ARRAYS[f"{eid}__params__{prefix}/log_scale"] = m.log_scale.detach().numpy().copy()


def export_paraphraser(eid, prefix, m: RefParaphraser):
  flat = {}
  for i, c in enumerate(m.enc, 1):
    flat[f"enc_conv{i}/kernel"] = ("params", conv_kernel(c.weight))
    flat[f"enc_conv{i}/bias"] = ("params", c.bias.detach().numpy().copy())
  for i, c in enumerate(m.dec, 1):
    flat[f"dec_deconv{i}/kernel"] = ("params", deconv_kernel(c.weight))
    flat[f"dec_deconv{i}/bias"] = ("params", c.bias.detach().numpy().copy())
  export(eid, prefix, flat)


def export_translator(eid, prefix, m: RefTranslator):
  flat = {}
  for i, (c, bn) in enumerate(zip(m.convs, m.bns), 1):
    flat[f"conv{i}/kernel"] = ("params", conv_kernel(c.weight))
    flat[f"conv{i}/bias"] = ("params", c.bias.detach().numpy().copy())
    flat.update(bn_vars(bn, f"bn{i}"))
  export(eid, prefix, flat)


# ----------------------------------------------------------------------------------------------
# Reference losses (NCHW / (B, D)), each returning the reference's scalar
# ----------------------------------------------------------------------------------------------


def pool_to_smaller(a, b):
  """RepDistiller's rule: adaptive-average-pool the map with the larger H to (h, h)."""
  if a.shape[2] > b.shape[2]:
    a = F.adaptive_avg_pool2d(a, (b.shape[2], b.shape[2]))
  elif a.shape[2] < b.shape[2]:
    b = F.adaptive_avg_pool2d(b, (a.shape[2], a.shape[2]))
  return a, b


def ref_hint(f_s, f_t):
  return F.mse_loss(f_s, f_t)


def ref_at(g_s, g_t, p):
  def amap(f):
    return F.normalize(f.pow(p).mean(1).view(f.size(0), -1))

  total = 0
  for f_s, f_t in zip(g_s, g_t):
    f_s, f_t = pool_to_smaller(f_s, f_t)
    total = total + (amap(f_s) - amap(f_t)).pow(2).mean()
  return total


def ref_sp(f_s, f_t):
  b = f_s.shape[0]
  f_s, f_t = f_s.view(b, -1), f_t.view(b, -1)
  g_s = F.normalize(f_s @ f_s.t())
  g_t = F.normalize(f_t @ f_t.t())
  return ((g_t - g_s) ** 2).sum() / (b * b)


def ref_sp_rows(f_s, f_t):
  b = f_s.shape[0]
  f_s, f_t = f_s.view(b, -1), f_t.view(b, -1)
  d = F.normalize(f_t @ f_t.t()) - F.normalize(f_s @ f_s.t())
  return (d**2).sum(1) / b


def ref_cc(e_s, e_t):
  delta = torch.abs(e_s - e_t)
  return torch.mean((delta[:-1] * delta[1:]).sum(1))


def ref_cc_split(e_s, e_t):
  b = e_s.shape[0]
  delta = torch.abs(e_s - e_t)
  pair = (delta[:-1] * delta[1:]).sum(1)
  z = torch.zeros(1)
  return (torch.cat([pair, z]) + torch.cat([z, pair])) * b / (2.0 * (b - 1))


def ref_cc_gaussian(e_s, e_t, gamma, max_p):
  def kernel(f):
    rows = []
    for i in range(f.shape[0]):
      r = f[i : i + 1] @ f.t()
      row = 1
      for p in range(1, max_p + 1):
        row = row + ((2 * gamma) ** p) / math.factorial(p) * r**p
      rows.append((row * math.exp(-2 * gamma)).squeeze(0))
    return torch.stack(rows)

  b = e_s.shape[0]
  return torch.dist(kernel(e_s), kernel(e_t), 2) / (b * b)


def rkd_pdist(e, eps=1e-12):
  sq = e.pow(2).sum(1)
  res = (sq.unsqueeze(1) + sq.unsqueeze(0) - 2 * e @ e.t()).clamp(min=eps).sqrt().clone()
  res[range(len(e)), range(len(e))] = 0
  return res


def rkd_parts(f_s, f_t):
  s = f_s.view(f_s.shape[0], -1)
  t = f_t.view(f_t.shape[0], -1)
  with torch.no_grad():
    t_d = rkd_pdist(t)
    t_d = t_d / t_d[t_d > 0].mean()
  d = rkd_pdist(s)
  d = d / d[d > 0].mean()
  with torch.no_grad():
    td = t.unsqueeze(0) - t.unsqueeze(1)
    nt = F.normalize(td, p=2, dim=2)
    t_angle = torch.bmm(nt, nt.transpose(1, 2))
  sd = s.unsqueeze(0) - s.unsqueeze(1)
  ns = F.normalize(sd, p=2, dim=2)
  s_angle = torch.bmm(ns, ns.transpose(1, 2))
  return d, t_d, s_angle, t_angle


def ref_rkd(f_s, f_t, w_d, w_a):
  d, t_d, s_a, t_a = rkd_parts(f_s, f_t)
  return w_d * F.smooth_l1_loss(d, t_d) + w_a * F.smooth_l1_loss(s_a.reshape(-1), t_a.reshape(-1))


def ref_rkd_rows(f_s, f_t, w_d, w_a):
  d, t_d, s_a, t_a = rkd_parts(f_s, f_t)
  return w_d * F.smooth_l1_loss(d, t_d, reduction="none").mean(1) + w_a * F.smooth_l1_loss(
    s_a, t_a, reduction="none"
  ).mean((1, 2))


def pkt_probs(x, eps):
  x = x / (torch.sqrt(torch.sum(x**2, dim=1, keepdim=True)) + eps)
  x = torch.where(torch.isnan(x), torch.zeros_like(x), x)
  s = (x @ x.t() + 1.0) / 2.0
  return s / s.sum(1, keepdim=True)


def ref_pkt_terms(f_s, f_t, eps):
  p_s, p_t = pkt_probs(f_s, eps), pkt_probs(f_t, eps)
  return p_t * torch.log((p_t + eps) / (p_s + eps))


def ref_ab(g_s, g_t, margin):
  n = len(g_s)
  bsz = g_s[0].shape[0]
  total = 0
  for i, (s, t) in enumerate(zip(g_s, g_t)):
    ell = (s + margin) ** 2 * ((s > -margin) & (t <= 0)).double() + (s - margin) ** 2 * (
      (s <= margin) & (t > 0)
    ).double()
    total = total + 2 ** (i - n + 1) * torch.abs(ell).sum() / bsz / 1000 * 3
  return total


def ref_ft(f_s, f_t, p1, p2):
  f_s, f_t = pool_to_smaller(f_s, f_t)

  def factor(f):
    return F.normalize(f.pow(p1).mean(1).view(f.size(0), -1))

  d = factor(f_s) - factor(f_t)
  return d.abs().mean() if p2 == 1 else d.pow(p2).mean()


def fsp_mats(g):
  out = []
  for i in range(len(g) - 1):
    bot, top = pool_to_smaller(g[i], g[i + 1])
    bot = bot.unsqueeze(1).flatten(3)
    top = top.unsqueeze(2).flatten(3)
    out.append((bot * top).mean(-1))
  return out


def ref_fsp(g_s, g_t):
  return sum((s - t).pow(2).mean() for s, t in zip(fsp_mats(g_s), fsp_mats(g_t)))


def ref_nst(g_s, g_t):
  def poly(a, b):
    return (a.unsqueeze(1) * b.unsqueeze(2)).sum(-1).pow(2)

  total = 0
  for f_s, f_t in zip(g_s, g_t):
    f_s, f_t = pool_to_smaller(f_s, f_t)
    f_s = F.normalize(f_s.view(f_s.shape[0], f_s.shape[1], -1), dim=2)
    f_t = F.normalize(f_t.view(f_t.shape[0], f_t.shape[1], -1), dim=2)
    total = total + (
      poly(f_t, f_t).mean().detach() + poly(f_s, f_s).mean() - 2 * poly(f_s, f_t).mean()
    )
  return total


def norm_cdf(x):
  return 0.5 * math.erfc(-x / math.sqrt(2.0))


def ref_margin(gamma, beta):
  """overhaul get_margin_from_BN, in float64 (the reference then stores float32)."""
  out = []
  for s, m in zip(gamma, beta):
    s = abs(float(s))
    m = float(m)
    if norm_cdf(-m / s) > 0.001:
      out.append(-s * math.exp(-((m / s) ** 2) / 2) / math.sqrt(2 * math.pi) / norm_cdf(-m / s) + m)
    else:
      out.append(-3 * s)
  return np.asarray(out)


def ref_oh(g_s, g_t, margins):
  n = len(g_s)
  total = 0
  for i, (s, t, m) in enumerate(zip(g_s, g_t, margins)):
    t = torch.max(t, m.view(1, -1, 1, 1))
    ell = F.mse_loss(s, t, reduction="none") * ((s > t) | (t > 0)).double()
    total = total + ell.sum() / 2 ** (n - i - 1)
  return total / s.shape[0] / 1000


# ----------------------------------------------------------------------------------------------
# Entry recording
# ----------------------------------------------------------------------------------------------


def record(
  eid,
  fn,
  kwargs,
  inputs,
  student,
  loss_fn,
  per_fn,
  *,
  decomposable,
  connectors=None,
  extra_grads=None,
  note="",
):
  """inputs: {name: tensor or list}; student: names differentiated.

  loss_fn() / per_fn() recompute from the (leaf) tensors in ``inputs`` / ``extra_grads``.
  """
  b = None
  leaves = {}
  for name, v in inputs.items():
    if isinstance(v, (list, tuple)):
      for k, x in enumerate(v):
        ARRAYS[f"{eid}__in__{name}__{k}"] = nhwc(x)
        b = x.shape[0]
    else:
      ARRAYS[f"{eid}__in__{name}"] = nhwc(v)
      b = v.shape[0]
  for name in student:
    v = inputs[name]
    for x in v if isinstance(v, (list, tuple)) else [v]:
      x.requires_grad_(True)
    leaves[name] = v
  extra = dict(extra_grads or {})

  def grads(value):
    ts = []
    for v in leaves.values():
      ts += list(v) if isinstance(v, (list, tuple)) else [v]
    ts += list(extra.values())
    gs = torch.autograd.grad(value, ts, allow_unused=False)
    out, i = {}, 0
    for name, v in leaves.items():
      if isinstance(v, (list, tuple)):
        for k in range(len(v)):
          out[f"{name}__{k}"] = nhwc(gs[i])
          i += 1
      else:
        out[name] = nhwc(gs[i])
        i += 1
    for name in extra:
      out[name] = gs[i].detach().numpy().copy()
      i += 1
    return out

  loss = loss_fn()
  per = per_fn()
  assert per.shape == (b,), (eid, per.shape)
  assert abs(per.mean().item() - loss.item()) <= 1e-12 * max(1.0, abs(loss.item())), (
    eid,
    per.mean().item(),
    loss.item(),
  )
  ARRAYS[f"{eid}__loss"] = np.asarray(loss.item())
  ARRAYS[f"{eid}__per_example"] = per.detach().numpy().copy()
  for k, g in grads(loss).items():
    ARRAYS[f"{eid}__grad__{k}"] = g
  if decomposable:
    w = RNG.uniform(0.1, 2.0, b)
    ARRAYS[f"{eid}__weights"] = w
    for k, g in grads((per_fn() * torch.tensor(w)).sum()).items():
      ARRAYS[f"{eid}__wgrad__{k}"] = g
  ENTRIES.append(
    {
      "id": eid,
      "fn": fn,
      "kwargs": kwargs,
      "student": list(student),
      "inputs": {k: (len(v) if isinstance(v, (list, tuple)) else None) for k, v in inputs.items()},
      "connectors": connectors or {},
      "decomposable": decomposable,
      "extra_grads": list(extra),
      "note": note,
    }
  )


def per_slices(b, fn):
  """(B,) from the reference applied to each example's slice: fn(slice) -> scalar."""
  return torch.stack([fn(slice(i, i + 1)) for i in range(b)])


def sl(v, s):
  return [x[s] for x in v] if isinstance(v, (list, tuple)) else v[s]


# ----------------------------------------------------------------------------------------------
# Cases
# ----------------------------------------------------------------------------------------------

B = 4


def gen_fitnet():
  cases = {
    "fitnet_stride2": ((B, 6, 8, 8), (B, 8, 4, 4)),
    "fitnet_deconv": ((B, 6, 4, 4), (B, 8, 8, 8)),
    "fitnet_valid": ((B, 6, 8, 8), (B, 8, 6, 6)),
    "fitnet_same": ((B, 6, 8, 8), (B, 8, 8, 8)),
  }
  for seed, (eid, (s_shape, t_shape)) in enumerate(cases.items()):
    torch.manual_seed(100 + seed)
    reg = RefConvReg(s_shape, t_shape)
    randomize_bn(reg)
    export_conv_reg(eid, "reg", reg)
    f_s, f_t = randn(*s_shape), randn(*t_shape)
    # eval-mode output with the stored running statistics
    reg.eval()
    ARRAYS[f"{eid}__out__reg_eval"] = nhwc(reg(f_s))
    reg.train()
    ARRAYS[f"{eid}__out__reg"] = nhwc(reg(f_s))
    inputs = {"student": f_s, "teacher": f_t}
    record(
      eid,
      "fitnet",
      {},
      inputs,
      ["student"],
      lambda: ref_hint(reg(inputs["student"]), f_t),
      lambda: per_slices(B, lambda s: ref_hint(reg(inputs["student"])[s], f_t[s])),
      decomposable=True,
      connectors={
        "reg": ["ConvReg", {"s_shape": nhwc_shape(s_shape), "t_shape": nhwc_shape(t_shape)}]
      },
    )
    reg.eval()  # running stats were updated by the train-mode calls; the stored ones are pre-update


def nhwc_shape(s):
  return [s[0], s[2], s[3], s[1]]


LAYERS_S = [(B, 6, 8, 8), (B, 8, 4, 4), (B, 12, 6, 6)]
LAYERS_T = [(B, 8, 8, 8), (B, 16, 8, 8), (B, 12, 4, 4)]


def gen_at_nst():
  for p in (2, 2.5):
    eid = f"at_p{p}"
    g_s = [randn(*s, positive=True) for s in LAYERS_S]
    g_t = [randn(*s, positive=True) for s in LAYERS_T]
    inputs = {"student": g_s, "teacher": g_t}
    record(
      eid,
      "at",
      {"p": p},
      inputs,
      ["student"],
      lambda: ref_at(g_s, g_t, p),
      lambda: per_slices(B, lambda s: ref_at(sl(g_s, s), sl(g_t, s), p)),
      decomposable=True,
    )
  g_s = [randn(*s) for s in LAYERS_S]
  g_t = [randn(*s, positive=True) for s in LAYERS_T]
  inputs = {"student": g_s, "teacher": g_t}
  record(
    "nst",
    "nst",
    {},
    inputs,
    ["student"],
    lambda: ref_nst(g_s, g_t),
    lambda: per_slices(B, lambda s: ref_nst(sl(g_s, s), sl(g_t, s))),
    decomposable=True,
  )


def gen_sp():
  for eid, b in (("sp", 4), ("sp_b5", 5)):
    f_s, f_t = randn(b, 6, 8, 8, positive=True), randn(b, 16, 4, 4, positive=True)
    record(
      eid,
      "sp",
      {},
      {"student": f_s, "teacher": f_t},
      ["student"],
      lambda: ref_sp(f_s, f_t),
      lambda: ref_sp_rows(f_s, f_t),
      decomposable=False,
    )


def gen_cc():
  torch.manual_seed(1)
  emb_s, emb_t = RefLinearEmbed(12, 16, False), RefLinearEmbed(20, 16, False)
  export_linear("cc", "embed_s", emb_s)
  export_linear("cc", "embed_t", emb_t)
  x_s, x_t = randn(5, 12, positive=True), randn(5, 20, positive=True)
  ARRAYS["cc__out__embed_s"] = nhwc(emb_s(x_s))
  record(
    "cc",
    "cc",
    {},
    {"student": x_s, "teacher": x_t},
    ["student"],
    lambda: ref_cc(emb_s(x_s), emb_t(x_t)),
    lambda: ref_cc_split(emb_s(x_s), emb_t(x_t)),
    decomposable=False,
    connectors={
      "embed_s": ["LinearEmbed", {"dim_out": 16}],
      "embed_t": ["LinearEmbed", {"dim_out": 16}],
    },
  )
  # torchdistill's Gaussian-kernel CC on L2-normalised embeddings (RepDistiller Embed)
  for eid, gamma, max_p in (("cc_gaussian", 0.4, 2), ("cc_gaussian_p3", 0.25, 3)):
    torch.manual_seed(2)
    emb_s, emb_t = RefLinearEmbed(12, 16, True), RefLinearEmbed(20, 16, True)
    export_linear(eid, "embed_s", emb_s)
    export_linear(eid, "embed_t", emb_t)
    x_s, x_t = randn(4, 12, positive=True), randn(4, 20, positive=True)
    ARRAYS[f"{eid}__out__embed_s"] = nhwc(emb_s(x_s))

    def loss(x_s=x_s, x_t=x_t, emb_s=emb_s, emb_t=emb_t, gamma=gamma, max_p=max_p):
      return ref_cc_gaussian(emb_s(x_s), emb_t(x_t), gamma, max_p)

    record(
      eid,
      "cc_gaussian",
      {"gamma": gamma, "p_order": max_p},
      {"student": x_s, "teacher": x_t},
      ["student"],
      loss,
      lambda loss=loss: loss().expand(4),
      decomposable=False,
      connectors={"embed_s": ["Embed", {"dim_out": 16}], "embed_t": ["Embed", {"dim_out": 16}]},
    )


def gen_vid():
  cases = {
    "vid_pool_student": ((B, 6, 8, 8), (B, 8, 4, 4)),
    "vid_pool_teacher": ((B, 6, 4, 4), (B, 8, 8, 8)),
    "vid_same": ((B, 6, 6, 6), (B, 8, 6, 6)),
  }
  for eid, (s_shape, t_shape) in cases.items():
    torch.manual_seed(3)
    m = RefVID(s_shape[1], t_shape[1], t_shape[1])
    m.log_scale.data += torch.tensor(RNG.randn(t_shape[1]) * 0.5)
    export_vid(eid, "vid", m)
    f_s, f_t = randn(*s_shape), randn(*t_shape)
    ARRAYS[f"{eid}__out__pred_mean"] = nhwc(m.pred(f_s, t_shape[2]))
    record(
      eid,
      "vid",
      {"eps": 1e-5},
      {"student": f_s, "teacher": f_t},
      ["student"],
      lambda m=m, f_s=f_s, f_t=f_t: m.loss_from_pred(m.pred(f_s, f_t.shape[2]), f_t),
      lambda m=m, f_s=f_s, f_t=f_t: per_slices(
        B, lambda s: m.loss_from_pred(m.pred(f_s, f_t.shape[2])[s], f_t[s])
      ),
      decomposable=True,
      connectors={
        "vid": ["VIDRegressor", {"num_mid_channels": t_shape[1], "num_target_channels": t_shape[1]}]
      },
      extra_grads={"log_scale": m.log_scale},
    )


def gen_rkd_pkt():
  x_s, x_t = randn(5, 12, positive=True), randn(5, 20, positive=True)
  for eid, w_d, w_a in (("rkd", 25.0, 50.0), ("rkd_w", 1.0, 2.0)):
    record(
      eid,
      "rkd",
      {"w_dist": w_d, "w_angle": w_a},
      {"student": x_s, "teacher": x_t},
      ["student"],
      lambda w_d=w_d, w_a=w_a: ref_rkd(x_s, x_t, w_d, w_a),
      lambda w_d=w_d, w_a=w_a: ref_rkd_rows(x_s, x_t, w_d, w_a),
      decomposable=False,
    )
  m_s, m_t = randn(4, 6, 2, 2), randn(4, 5, 3, 3)  # 4-D inputs are flattened
  record(
    "rkd_maps",
    "rkd",
    {"w_dist": 25.0, "w_angle": 50.0},
    {"student": m_s, "teacher": m_t},
    ["student"],
    lambda: ref_rkd(m_s, m_t, 25.0, 50.0),
    lambda: ref_rkd_rows(m_s, m_t, 25.0, 50.0),
    decomposable=False,
  )
  for eid, eps in (("pkt", 1e-7), ("pkt_eps", 1e-3)):
    y_s, y_t = randn(5, 12), randn(5, 20)
    record(
      eid,
      "pkt",
      {"eps": eps},
      {"student": y_s, "teacher": y_t},
      ["student"],
      lambda y_s=y_s, y_t=y_t, eps=eps: ref_pkt_terms(y_s, y_t, eps).mean(),
      lambda y_s=y_s, y_t=y_t, eps=eps: ref_pkt_terms(y_s, y_t, eps).mean(1),
      decomposable=False,
    )


def gen_ab():
  s_shapes = [(B, 6, 8, 8), (B, 8, 4, 4), (B, 8, 4, 4)]
  t_shapes = [(B, 6, 8, 8), (B, 16, 4, 4), (B, 12, 2, 2)]
  for eid, margin in (("ab", 1.0), ("ab_m05", 0.5)):
    torch.manual_seed(4)
    conns = [RefABConnector(s, t) for s, t in zip(s_shapes, t_shapes)]
    for k, c in enumerate(conns):
      randomize_bn(c)
      if not c.identity:
        export_conv_reg(eid, f"conn{k}", c.reg)
    g_s = [randn(*s) for s in s_shapes]
    g_t = [randn(*t) for t in t_shapes]

    def connected(g_s=g_s, conns=conns):
      return [c(x) for c, x in zip(conns, g_s)]

    for k, y in enumerate(connected()):
      ARRAYS[f"{eid}__out__conn{k}"] = nhwc(y)
    record(
      eid,
      "ab",
      {"margin": margin},
      {"student": g_s, "teacher": g_t},
      ["student"],
      lambda connected=connected, g_t=g_t, margin=margin: ref_ab(connected(), g_t, margin),
      lambda connected=connected, g_t=g_t, margin=margin: per_slices(
        B, lambda s, c=connected(): ref_ab(sl(c, s), sl(g_t, s), margin)
      ),
      decomposable=True,
      connectors={
        f"conn{k}": ["ABConnector", {"s_shape": nhwc_shape(s), "t_shape": nhwc_shape(t)}]
        for k, (s, t) in enumerate(zip(s_shapes, t_shapes))
      },
    )


def gen_ft():
  cases = {
    "ft": ((B, 6, 8, 8), (B, 8, 8, 8), 1),
    "ft_p2": ((B, 6, 8, 8), (B, 8, 8, 8), 2),
    "ft_pool": ((B, 6, 8, 8), (B, 8, 4, 4), 1),
  }
  for eid, (s_shape, t_shape, p2) in cases.items():
    torch.manual_seed(5)
    para = RefParaphraser(t_shape[1])
    trans = RefTranslator(s_shape[1], t_shape[1])
    randomize_bn(trans)
    export_paraphraser(eid, "para", para)
    export_translator(eid, "trans", trans)
    f_s, f_t = randn(*s_shape), randn(*t_shape)
    factor_t, rec_t = para(f_t)
    ARRAYS[f"{eid}__out__para_factor"] = nhwc(factor_t)
    ARRAYS[f"{eid}__out__para_rec"] = nhwc(rec_t)
    ARRAYS[f"{eid}__out__trans"] = nhwc(trans(f_s))
    factor_t = factor_t.detach()
    record(
      eid,
      "ft",
      {"p1": 2, "p2": p2},
      {"student": f_s, "teacher": f_t},
      ["student"],
      lambda trans=trans, f_s=f_s, factor_t=factor_t, p2=p2: ref_ft(trans(f_s), factor_t, 2, p2),
      lambda trans=trans, f_s=f_s, factor_t=factor_t, p2=p2: per_slices(
        B, lambda s, fs=trans(f_s): ref_ft(fs[s], factor_t[s], 2, p2)
      ),
      decomposable=True,
      connectors={
        "para": ["Paraphraser", {"t_shape": nhwc_shape(t_shape)}],
        "trans": ["Translator", {"s_shape": nhwc_shape(s_shape), "t_shape": nhwc_shape(t_shape)}],
      },
    )


def gen_fsp():
  s_shapes = [(B, 4, 8, 8), (B, 4, 6, 6), (B, 8, 4, 4), (B, 16, 2, 2)]
  t_shapes = [(B, 4, 8, 8), (B, 4, 8, 8), (B, 8, 4, 4), (B, 16, 4, 4)]
  g_s = [randn(*s) for s in s_shapes]
  g_t = [randn(*t) for t in t_shapes]
  record(
    "fsp",
    "fsp",
    {},
    {"student": g_s, "teacher": g_t},
    ["student"],
    lambda: ref_fsp(g_s, g_t),
    lambda: per_slices(B, lambda s: ref_fsp(sl(g_s, s), sl(g_t, s))),
    decomposable=True,
  )


def gen_oh():
  s_shapes = [(B, 6, 8, 8), (B, 8, 4, 4), (B, 12, 2, 2)]
  t_chans = [8, 16, 12]
  torch.manual_seed(6)
  conns = [RefOHConnector(t, s[1]) for s, t in zip(s_shapes, t_chans)]
  margins = []
  for k, (c, tc) in enumerate(zip(conns, t_chans)):
    randomize_bn(c)
    export_oh("oh", f"conn{k}", c)
    gamma = RNG.uniform(0.3, 1.5, tc) * np.where(RNG.rand(tc) < 0.3, -1.0, 1.0)
    beta = RNG.randn(tc) * 0.8
    beta[:2] = 4.0 * np.abs(gamma[:2])  # tail probability < 0.001: the -3s branch
    ARRAYS[f"oh__in__bn_scale__{k}"] = gamma
    ARRAYS[f"oh__in__bn_bias__{k}"] = beta
    mg = ref_margin(gamma, beta)
    ARRAYS[f"oh__out__margin__{k}"] = mg
    margins.append(torch.tensor(mg))
  g_s = [randn(*s) for s in s_shapes]
  g_t = [randn(B, t, s[2], s[3]) for s, t in zip(s_shapes, t_chans)]

  def connected():
    return [c(x) for c, x in zip(conns, g_s)]

  for k, y in enumerate(connected()):
    ARRAYS[f"oh__out__conn{k}"] = nhwc(y)
  record(
    "oh",
    "oh",
    {},
    {"student": g_s, "teacher": g_t},
    ["student"],
    lambda: ref_oh(connected(), g_t, margins),
    lambda: per_slices(B, lambda s, c=connected(): ref_oh(sl(c, s), sl(g_t, s), margins)),
    decomposable=True,
    connectors={f"conn{k}": ["OHConnector", {"t_channels": t}] for k, t in enumerate(t_chans)},
    note="margins from overhaul get_margin_from_BN in float64 (the reference stores float32)",
  )


def main():
  gen_fitnet()
  gen_at_nst()
  gen_sp()
  gen_cc()
  gen_vid()
  gen_rkd_pkt()
  gen_ab()
  gen_ft()
  gen_fsp()
  gen_oh()
  os.makedirs(OUT_DIR, exist_ok=True)
  np.savez_compressed(
    os.path.join(OUT_DIR, "feature_losses.npz"),
    **{k: np.asarray(v, np.float64) for k, v in ARRAYS.items()},
  )
  meta = {
    "generator": "tools/goldens/make_feature_goldens.py",
    "torch": torch.__version__,
    "dtype": "float64",
    "layout": "NHWC (inputs drawn NCHW and transposed)",
    "entries": ENTRIES,
  }
  with open(os.path.join(OUT_DIR, "feature_losses.json"), "w") as f:
    json.dump(meta, f, indent=1, sort_keys=True)
  print(f"wrote {len(ARRAYS)} arrays, {len(ENTRIES)} entries to {OUT_DIR}")


if __name__ == "__main__":
  main()
