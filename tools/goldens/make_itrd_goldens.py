r"""Golden values for ITRD (torch, float64): ``tests/golden/itrd.npz``.

  /path/to/python-with-torch tools/goldens/make_itrd_goldens.py

Our transcription of zkxufo/TTM ``distiller_zoo/itrd.py`` (``ITLoss.forward_correlation_it`` and
``forward_mutual_it`` with a ``Linear(s_dim, t_dim)`` embed, total ``2·L_corr + 1·L_mi``,
α_it = 1.5) on fixed random features, for a width-changing pair (16 -> 24) and an equal-width
pair (24 -> 24, where the MI part uses the raw student feature); and, with the per-pair settings
of the TTM paper's Appendix A.5, α_it = 1.01 with λ_mutual 1 (same-architecture pairs, 32 -> 24)
and λ_mutual 0 (24 -> 40). Stores inputs, embed weights, the two parts, the total, the case's
(alpha, corr_weight, mi_weight) and the total's gradients w.r.t. the student feature and the
embed. The first two cases draw the same numbers as before the last two were added.
"""

import os

import numpy as np
import torch
import torch.nn.functional as F

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ALPHA, W_CORR, W_MI = 1.5, 2.0, 1.0


def case(rng, b, s_dim, t_dim, tag, out, alpha=ALPHA, w_corr=W_CORR, w_mi=W_MI):
  f_s = torch.tensor(rng.standard_normal((b, s_dim)), requires_grad=True)
  f_t = torch.tensor(rng.standard_normal((b, t_dim)) + 0.5)
  w = torch.tensor(rng.standard_normal((t_dim, s_dim)) / np.sqrt(s_dim), requires_grad=True)
  bias = torch.tensor(rng.uniform(-0.1, 0.1, t_dim), requires_grad=True)
  emb = F.linear(f_s, w, bias)
  n = emb.shape[0]
  zs = (emb - emb.mean(0)) / emb.std(0)
  zt = (f_t - f_t.mean(0)) / f_t.std(0)
  c = torch.einsum("bx,bx->x", zs, zt) / n
  corr = torch.log2((torch.abs(c - 1.0).pow(2.0)).pow(alpha).sum())
  fm = emb if s_dim != t_dim else f_s
  sn, tn = F.normalize(fm), F.normalize(f_t)
  g_s = sn @ sn.T
  g_st = g_s * (tn @ tn.T)
  g_s = g_s / torch.trace(g_s)
  g_st = g_st / torch.trace(g_st)
  mi = (g_s.pow(2) - g_st.pow(2)).sum()
  total = w_corr * corr + w_mi * mi
  total.backward()
  for k, v in dict(f_s=f_s, f_t=f_t, w=w, bias=bias).items():
    out[f"{tag}/{k}"] = v.detach().numpy()
  out[f"{tag}/corr"] = np.array(corr.item())
  out[f"{tag}/mi"] = np.array(mi.item())
  out[f"{tag}/total"] = np.array(total.item())
  out[f"{tag}/hparams"] = np.array([alpha, w_corr, w_mi])
  out[f"{tag}/grad_f_s"] = f_s.grad.numpy()
  out[f"{tag}/grad_w"] = w.grad.numpy()
  out[f"{tag}/grad_bias"] = bias.grad.numpy()


def main():
  rng = np.random.Generator(np.random.PCG64(7))
  out = {}
  case(rng, 8, 16, 24, "widen", out)
  case(rng, 8, 24, 24, "same", out)
  case(rng, 12, 32, 24, "alpha101", out, alpha=1.01)
  case(rng, 12, 24, 40, "mi_off", out, alpha=1.01, w_mi=0.0)
  path = os.path.join(ROOT, "tests", "golden", "itrd.npz")
  np.savez_compressed(path, **out)
  print("wrote", path, {k: float(v) for k, v in out.items() if v.ndim == 0})


if __name__ == "__main__":
  main()
