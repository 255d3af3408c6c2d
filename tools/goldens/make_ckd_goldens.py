r"""Writes ``tests/golden/ckd.npz``: CheckpointKD's per-teacher-KL ensemble loss and its gradient.

Reference semantics: LeapLabTHU/CheckpointKD ``student.py`` (the non-``avg_teacher`` branch)::

  for j in range(teacher_num):
    st_loss = F.kl_div(F.log_softmax(outputs/T, dim=1), F.softmax(toutputs[j]/T, dim=1),
                       reduction='batchmean') * T * T
    kd_loss = kd_loss + weight[j] * st_loss          # weight = ones(teacher_num) / teacher_num

re-written here with torch; plus the ``avg_teacher`` branch (logits averaged first) for contrast.
Run: ``$KDJAX_TORCH_PYTHON tools/goldens/make_ckd_goldens.py``.
"""

import os

import numpy as np
import torch
import torch.nn.functional as F

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main():
  rng = np.random.default_rng(2022)
  b, m, k, t = 8, 3, 100, 5.0
  zs = (3 * rng.standard_normal((b, k))).astype(np.float64)
  zt = (4 * rng.standard_normal((b, m, k))).astype(np.float64)
  s = torch.tensor(zs, requires_grad=True)
  tt = torch.tensor(zt)
  weight = torch.ones(m, dtype=torch.float64) / m
  kd_loss = 0
  for j in range(m):
    st = (
      F.kl_div(F.log_softmax(s / t, dim=1), F.softmax(tt[:, j] / t, dim=1), reduction="batchmean")
      * t
      * t
    )
    kd_loss = kd_loss + weight[j] * st
  kd_loss.backward()
  avg = (tt * weight[None, :, None]).sum(1)
  avg_loss = (
    F.kl_div(F.log_softmax(s.detach() / t, dim=1), F.softmax(avg / t, dim=1), reduction="batchmean")
    * t
    * t
  )
  np.savez(
    os.path.join(ROOT, "tests", "golden", "ckd.npz"),
    student=zs,
    members=zt,
    temperature=np.array(t),
    loss=np.array(kd_loss.item()),
    grad=s.grad.numpy(),
    avg_loss=np.array(avg_loss.item()),
  )
  print("ckd:", kd_loss.item(), "avg_teacher:", avg_loss.item())


if __name__ == "__main__":
  main()
