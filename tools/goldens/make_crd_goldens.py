"""Generates tests/golden/crd_loss.npz: RepDistiller's CRD NCE loss and memory update in torch.

NOT run by CI (CI only reads the fixture). Needs torch and numpy; kdjax does not depend on torch:

    $TORCH_VENV/bin/python tools/goldens/make_crd_goldens.py

Everything runs in float64. ``RefContrastMemory`` / ``RefContrastLoss`` below are HobbitLong/
RepDistiller ``crd/memory.py`` ``ContrastMemory.forward`` and ``crd/criterion.py`` ``ContrastLoss``
(the ``idx is not None`` path: the dataset's ``contrast_idx``, positive in column 0), with the
print statements dropped and the memory initialised from numpy instead of ``torch.rand``.

Two consecutive calls are recorded: the first sets ``Z`` (``Z = mean(exp(·/T))·N`` per view) and
updates the memories; the second uses the fixed ``Z`` and the updated memories, and its batch
shares some indices with the first (the positives read freshly updated rows).

Keys (``k`` = 1, 2 for the call): ``memory_s0``, ``memory_t0`` (initial banks, N×D);
``embed_s{k}``, ``embed_t{k}`` (B×D unit rows, the ``Embed`` outputs); ``index{k}`` (B,);
``contrast_idx{k}`` (B×K negatives, i.e. the reference's ``contrast_idx[:, 1:]``);
``loss{k}`` (scalar), ``per_example{k}`` (B,: −[log D1_b + Σ_k log D0_bk] summed over both views),
``grad_s{k}``, ``grad_t{k}`` (d loss / d embed), ``memory_s{k}``, ``memory_t{k}`` (after the
update), ``z_s``, ``z_t`` (set by call 1); scalars ``nce_t``, ``nce_m``, ``num_data``.
"""

from __future__ import annotations

import math
import os

import numpy as np
import torch

torch.set_default_dtype(torch.float64)
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUT = os.path.join(ROOT, "tests", "golden", "crd_loss.npz")
EPS = 1e-7


class RefContrastMemory(torch.nn.Module):
  """crd/memory.py ContrastMemory (forward with a given idx)."""

  def __init__(self, memory_v1, memory_v2, K, T=0.07, momentum=0.5):
    super().__init__()
    self.K = K
    self.register_buffer("params", torch.tensor([K, T, -1, -1, momentum]))
    self.register_buffer("memory_v1", torch.tensor(memory_v1))
    self.register_buffer("memory_v2", torch.tensor(memory_v2))

  def forward(self, v1, v2, y, idx):
    K = int(self.params[0].item())
    T = self.params[1].item()
    Z_v1 = self.params[2].item()
    Z_v2 = self.params[3].item()
    momentum = self.params[4].item()
    batchSize = v1.size(0)
    outputSize = self.memory_v1.size(0)
    inputSize = self.memory_v1.size(1)
    weight_v1 = torch.index_select(self.memory_v1, 0, idx.view(-1)).detach()
    weight_v1 = weight_v1.view(batchSize, K + 1, inputSize)
    out_v2 = torch.bmm(weight_v1, v2.view(batchSize, inputSize, 1))
    out_v2 = torch.exp(torch.div(out_v2, T))
    weight_v2 = torch.index_select(self.memory_v2, 0, idx.view(-1)).detach()
    weight_v2 = weight_v2.view(batchSize, K + 1, inputSize)
    out_v1 = torch.bmm(weight_v2, v1.view(batchSize, inputSize, 1))
    out_v1 = torch.exp(torch.div(out_v1, T))
    if Z_v1 < 0:
      self.params[2] = out_v1.mean() * outputSize
      Z_v1 = self.params[2].clone().detach().item()
    if Z_v2 < 0:
      self.params[3] = out_v2.mean() * outputSize
      Z_v2 = self.params[3].clone().detach().item()
    out_v1 = torch.div(out_v1, Z_v1).contiguous()
    out_v2 = torch.div(out_v2, Z_v2).contiguous()
    with torch.no_grad():
      l_pos = torch.index_select(self.memory_v1, 0, y.view(-1))
      l_pos.mul_(momentum)
      l_pos.add_(torch.mul(v1, 1 - momentum))
      l_norm = l_pos.pow(2).sum(1, keepdim=True).pow(0.5)
      updated_v1 = l_pos.div(l_norm)
      self.memory_v1.index_copy_(0, y, updated_v1)
      ab_pos = torch.index_select(self.memory_v2, 0, y.view(-1))
      ab_pos.mul_(momentum)
      ab_pos.add_(torch.mul(v2, 1 - momentum))
      ab_norm = ab_pos.pow(2).sum(1, keepdim=True).pow(0.5)
      updated_v2 = ab_pos.div(ab_norm)
      self.memory_v2.index_copy_(0, y, updated_v2)
    return out_v1, out_v2


def ref_contrast_loss(x, n_data):
  """crd/criterion.py ContrastLoss.forward; also returns the per-example split."""
  bsz = x.shape[0]
  m = x.size(1) - 1
  Pn = 1 / float(n_data)
  P_pos = x.select(1, 0)
  log_D1 = torch.div(P_pos, P_pos.add(m * Pn + EPS)).log_()
  P_neg = x.narrow(1, 1, m)
  log_D0 = torch.div(P_neg.clone().fill_(m * Pn), P_neg.add(m * Pn + EPS)).log_()
  loss = -(log_D1.sum(0) + log_D0.view(-1, 1).sum(0)) / bsz
  per_example = -(log_D1.view(bsz) + log_D0.view(bsz, m).sum(1))
  return loss, per_example


def main():
  rng = np.random.RandomState(20240612)
  n, d, b, k = 160, 48, 8, 40
  nce_t, nce_m = 0.07, 0.5
  stdv = 1.0 / math.sqrt(d / 3.0)
  mem_s0 = rng.uniform(-stdv, stdv, (n, d))
  mem_t0 = rng.uniform(-stdv, stdv, (n, d))
  contrast = RefContrastMemory(mem_s0, mem_t0, k, nce_t, nce_m)
  arrays = dict(
    memory_s0=mem_s0,
    memory_t0=mem_t0,
    nce_t=np.float64(nce_t),
    nce_m=np.float64(nce_m),
    num_data=np.int64(n),
  )
  first = rng.choice(n, b, replace=False)
  # second batch: half of it repeats indices of the first
  rest = np.setdiff1d(np.arange(n), first)
  second = np.concatenate([first[: b // 2], rng.choice(rest, b - b // 2, replace=False)])
  for call, index in ((1, first), (2, second)):
    v1 = rng.randn(b, d)
    v1 /= np.linalg.norm(v1, axis=1, keepdims=True)
    v2 = rng.randn(b, d)
    v2 /= np.linalg.norm(v2, axis=1, keepdims=True)
    neg = rng.randint(0, n, (b, k))
    idx = np.concatenate([index[:, None], neg], axis=1)
    t_v1 = torch.tensor(v1, requires_grad=True)
    t_v2 = torch.tensor(v2, requires_grad=True)
    out_s, out_t = contrast(
      t_v1, t_v2, torch.tensor(index, dtype=torch.long), torch.tensor(idx, dtype=torch.long)
    )
    l_s, pe_s = ref_contrast_loss(out_s, n)
    l_t, pe_t = ref_contrast_loss(out_t, n)
    loss = (l_s + l_t).squeeze()
    loss.backward()
    arrays.update(
      {
        f"embed_s{call}": v1,
        f"embed_t{call}": v2,
        f"index{call}": index.astype(np.int64),
        f"contrast_idx{call}": neg.astype(np.int64),
        f"loss{call}": loss.detach().numpy(),
        f"per_example{call}": (pe_s + pe_t).detach().numpy(),
        f"grad_s{call}": t_v1.grad.numpy(),
        f"grad_t{call}": t_v2.grad.numpy(),
        f"memory_s{call}": contrast.memory_v1.numpy().copy(),
        f"memory_t{call}": contrast.memory_v2.numpy().copy(),
      }
    )
  arrays["z_s"] = np.float64(contrast.params[2].item())
  arrays["z_t"] = np.float64(contrast.params[3].item())
  np.savez_compressed(OUT, **arrays)
  print(
    f"wrote {OUT}: loss1 {float(arrays['loss1']):.6f} loss2 {float(arrays['loss2']):.6f} "
    f"Z_s {arrays['z_s']:.2f} Z_t {arrays['z_t']:.2f}"
  )


if __name__ == "__main__":
  main()
