r"""Golden values for NKD (torch, float64): ``tests/golden/nkd.npz``.

  $KDJAX_TORCH_PYTHON tools/goldens/make_nkd_goldens.py

Our transcription of yzd-v/cls_KD ``mmcls/models/dis_losses/nkd.py`` (``NKDLoss.forward`` with
integer labels) on fixed random logits, at the reference's CIFAR-100 setting (T = 3, γ = 3.5) and
its ImageNet / default setting (T = 1, γ = 1.5). Stores the inputs, the loss and its gradient
w.r.t. the student logits.
"""

import os

import numpy as np
import torch
import torch.nn.functional as F

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SETTINGS = {"cifar": (3.0, 3.5), "imagenet": (1.0, 1.5)}


def nkd_loss(logit_s, logit_t, gt_label, temp, gamma):
  label = gt_label.view(len(gt_label), 1)
  n, c = logit_s.shape
  s_i = F.log_softmax(logit_s, dim=1)
  t_i = F.softmax(logit_t, dim=1)
  s_t = torch.gather(s_i, 1, label)
  t_t = torch.gather(t_i, 1, label).detach()
  loss_t = -(t_t * s_t).mean()
  mask = torch.ones_like(logit_s).scatter_(1, label, 0).bool()
  logit_s = logit_s[mask].reshape(n, -1)
  logit_t = logit_t[mask].reshape(n, -1)
  s_nt = F.log_softmax(logit_s / temp, dim=1)
  t_nt = F.softmax(logit_t / temp, dim=1)
  loss_non = (t_nt * s_nt).sum(dim=1).mean()
  loss_non = -gamma * (temp**2) * loss_non
  return loss_t + loss_non


def case(rng, b, k, s_scale, t_scale, tag, out):
  s_np = s_scale * rng.standard_normal((b, k))
  t_np = t_scale * rng.standard_normal((b, k))
  y_np = rng.integers(0, k, b)
  out[f"{tag}/student"], out[f"{tag}/teacher"], out[f"{tag}/labels"] = s_np, t_np, y_np
  for name, (temp, gamma) in SETTINGS.items():
    s = torch.tensor(s_np, requires_grad=True)
    loss = nkd_loss(s, torch.tensor(t_np), torch.tensor(y_np), temp, gamma)
    loss.backward()
    out[f"{tag}/{name}"] = np.array(loss.item())
    out[f"{tag}/{name}/grad_student"] = s.grad.numpy()


def main():
  rng = np.random.Generator(np.random.PCG64(31))
  out = {"settings": np.array([SETTINGS["cifar"], SETTINGS["imagenet"]])}
  case(rng, 8, 10, 2.0, 3.0, "small", out)
  case(rng, 16, 100, 1.5, 4.0, "cifar100", out)
  path = os.path.join(ROOT, "tests", "golden", "nkd.npz")
  np.savez_compressed(path, **out)
  print("wrote", path, {k: float(v) for k, v in out.items() if v.ndim == 0})


if __name__ == "__main__":
  main()
