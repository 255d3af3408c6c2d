r"""Golden values for DML (torch, float64): ``tests/golden/online.npz``.

  /path/to/python-with-torch tools/goldens/make_online_goldens.py

Our transcription of AberHu/Knowledge-Distillation-Zoo ``train_dml.py`` (methods.md §7.2 DML):
for two peers ``L_1 = CE(z_1, y) + λ·KL(softmax(z_2).detach() ‖ softmax(z_1))`` with
``F.kl_div(log_softmax(z_1), softmax(z_2).detach(), reduction='batchmean')`` and symmetrically for
peer 2; plus the paper's K-peer form ``L_i = CE_i + λ/(K−1)·Σ_{j≠i} KL(p_j ‖ p_i)`` (K = 3) and a
temperature case (``T²·KL`` of the T-softened distributions, kdjax's convention for T ≠ 1). Stores
logits, labels, every peer's loss and its gradient w.r.t. its own logits (the other peers
detached, as the reference).
"""

import os

import numpy as np
import torch
import torch.nn.functional as F

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def case(rng, k, b, c, t, lam, tag, out):
  zs = [torch.tensor(rng.standard_normal((b, c)) * 3.0, requires_grad=True) for _ in range(k)]
  y = torch.tensor(rng.integers(0, c, b))
  losses, grads = [], []
  for i in range(k):
    kl = sum(
      F.kl_div(
        F.log_softmax(zs[i] / t, dim=1), F.softmax(zs[j] / t, dim=1).detach(), reduction="batchmean"
      )
      * t
      * t
      for j in range(k)
      if j != i
    ) / (k - 1)
    loss = F.cross_entropy(zs[i], y) + lam * kl
    grads.append(torch.autograd.grad(loss, zs[i])[0].numpy())
    losses.append(loss.item())
  out[f"{tag}/logits"] = np.stack([z.detach().numpy() for z in zs])
  out[f"{tag}/labels"] = y.numpy()
  out[f"{tag}/loss"] = np.array(losses)
  out[f"{tag}/grad"] = np.stack(grads)
  out[f"{tag}/hparams"] = np.array([t, lam])
  print(tag, np.round(losses, 6))


def main():
  torch.set_default_dtype(torch.float64)
  out = {}
  case(np.random.default_rng(0), 2, 6, 10, 1.0, 1.0, "two_peers", out)
  case(np.random.default_rng(1), 3, 5, 7, 1.0, 1.0, "three_peers", out)
  case(np.random.default_rng(2), 3, 5, 7, 2.0, 0.5, "three_peers_t2", out)
  path = os.path.join(ROOT, "tests", "golden", "online.npz")
  np.savez(path, **out)
  print("wrote", path)


if __name__ == "__main__":
  main()
