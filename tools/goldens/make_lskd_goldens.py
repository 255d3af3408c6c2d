r"""Golden values for logit standardisation (torch, float64): ``tests/golden/lskd.npz``.

  $KDJAX_TORCH_PYTHON tools/goldens/make_lskd_goldens.py

Our transcription of sunshangquan/logit-standardization-KD ``mdistiller/distillers/KD.py`` and
``DKD.py`` (``normalize``: ``(z − mean) / (1e-7 + std)``, torch's unbiased std; ``kd_loss`` and
``dkd_loss`` with ``logit_stand=True``) on fixed random logits. For every case it stores the
inputs, the standardised logits, the batch-mean KD+LS and DKD+LS losses, and their gradients
w.r.t. student logits (and teacher logits for KD+LS). Hyper-parameters are those of the reference's CIFAR-100 runs
(KD: τ = 2 and τ = 3; DKD: τ = 2, α = 9, β = 72, i.e. ``--base-temp 2 --kd-weight 9`` on
mdistiller's α 1, β 8 -- the weights are applied outside the losses here, so the stored
"lsdkd" value is ``dkd_loss`` with α, β already multiplied).
"""

import os

import numpy as np
import torch
import torch.nn.functional as F

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def normalize(logit):
  mean = logit.mean(dim=-1, keepdims=True)
  stdv = logit.std(dim=-1, keepdims=True)
  return (logit - mean) / (1e-7 + stdv)


def kd_loss(ls_in, lt_in, temperature):
  ls, lt = normalize(ls_in), normalize(lt_in)
  log_pred_student = F.log_softmax(ls / temperature, dim=1)
  pred_teacher = F.softmax(lt / temperature, dim=1)
  loss = F.kl_div(log_pred_student, pred_teacher, reduction="none").sum(1).mean()
  return loss * temperature**2


def _gt_mask(logits, target):
  return torch.zeros_like(logits).scatter_(1, target.reshape(-1).unsqueeze(1), 1).bool()


def _other_mask(logits, target):
  return torch.ones_like(logits).scatter_(1, target.reshape(-1).unsqueeze(1), 0).bool()


def cat_mask(t, m1, m2):
  return torch.cat([(t * m1).sum(dim=1, keepdims=True), (t * m2).sum(1, keepdims=True)], dim=1)


def dkd_loss(ls_in, lt_in, target, alpha, beta, temperature):
  ls, lt = normalize(ls_in), normalize(lt_in)
  gt, other = _gt_mask(ls, target), _other_mask(ls, target)
  ps = cat_mask(F.softmax(ls / temperature, dim=1), gt, other)
  pt = cat_mask(F.softmax(lt / temperature, dim=1), gt, other)
  tckd = F.kl_div(torch.log(ps), pt, reduction="sum") * temperature**2 / target.shape[0]
  pt2 = F.softmax(lt / temperature - 1000.0 * gt, dim=1)
  lps2 = F.log_softmax(ls / temperature - 1000.0 * gt, dim=1)
  nckd = F.kl_div(lps2, pt2, reduction="sum") * temperature**2 / target.shape[0]
  return alpha * tckd + beta * nckd


KD_TEMPS = (2.0, 3.0)
DKD = dict(alpha=9.0, beta=72.0, temperature=2.0)


def case(rng, b, k, s_scale, t_scale, t_shift, tag, out):
  s_np = s_scale * rng.standard_normal((b, k))
  t_np = t_scale * rng.standard_normal((b, k)) + t_shift
  y_np = rng.integers(0, k, b)
  out[f"{tag}/student"], out[f"{tag}/teacher"], out[f"{tag}/labels"] = s_np, t_np, y_np
  out[f"{tag}/z_student"] = normalize(torch.tensor(s_np)).numpy()
  out[f"{tag}/z_teacher"] = normalize(torch.tensor(t_np)).numpy()
  fns = {f"lskd_T{int(t)}": (lambda s, t_, T=t: kd_loss(s, t_, T)) for t in KD_TEMPS}
  fns["lsdkd"] = lambda s, t_: dkd_loss(s, t_, torch.tensor(y_np), **DKD)
  for name, fn in fns.items():
    s = torch.tensor(s_np, requires_grad=True)
    # DKD's teacher gradient is NaN in torch (kl_div's target gradient takes log of the exact
    # zeros that ``− 1000·gt`` creates); the reference detaches the teacher, so skip it there.
    t_grad = name != "lsdkd"
    t = torch.tensor(t_np, requires_grad=t_grad)
    loss = fn(s, t)
    loss.backward()
    out[f"{tag}/{name}"] = np.array(loss.item())
    out[f"{tag}/{name}/grad_student"] = s.grad.numpy()
    if t_grad:
      out[f"{tag}/{name}/grad_teacher"] = t.grad.numpy()


def main():
  rng = np.random.Generator(np.random.PCG64(11))
  out = {
    "dkd_hparams": np.array([DKD["alpha"], DKD["beta"], DKD["temperature"]]),
    "kd_temps": np.array(KD_TEMPS),
  }
  case(rng, 8, 10, 2.0, 3.0, 0.0, "small", out)
  case(rng, 16, 100, 1.0, 5.0, 2.0, "cifar", out)  # teacher logits 5x wider and shifted
  case(rng, 6, 100, 0.05, 20.0, -7.0, "scales", out)  # near-constant student, sharp teacher
  path = os.path.join(ROOT, "tests", "golden", "lskd.npz")
  np.savez_compressed(path, **out)
  print("wrote", path, {k: float(v) for k, v in out.items() if v.ndim == 0})


if __name__ == "__main__":
  main()
