r"""Golden for one whole distillation train step, RepDistiller ``train_distill`` semantics (torch).

  /path/to/python-with-torch tools/goldens/make_train_step_golden.py

Teacher resnet32x4 and student resnet8x4 with the deterministic weights of the parity fixtures
(``tests/golden/parity/{resnet32x4,resnet8x4}.npz`` recipes, rebuilt by ``tools/parity``), one
batch of 16 random 32x32x3 inputs with 100-class labels, and exactly one iteration of
RepDistiller's ``helper/loops.py:train_distill`` (our transcription, float64):

* student ``.train()`` (BN batch statistics, running statistics updated with momentum 0.1 and
  the unbiased variance), teacher ``.eval()`` under ``no_grad``; both with ``is_feat=True``;
* ``loss = r * CE + a * DistillKL_T(z_s, z_t) + b * AT(feat_s[1:-1], feat_t[1:-1])`` with
  r = 0.1, a = 0.9, T = 4 (``KL(p_t || p_s)`` summed / B * T^2) and b = 1000, AT with p = 2
  (``at(f) = normalize(mean_c(f^p).view(B, -1))``, loss ``mean((at_s - at_t)^2)`` per layer,
  summed over the three stages);
* ``torch.optim.SGD(lr=0.05, momentum=0.9, weight_decay=5e-4)``, one ``step()``.

Stores (``tests/golden/train_step_r32x4_r8x4.npz``): the batch, the loss and its parts, every
updated student parameter and BN running statistic (float32, torch names), and the gradient-free
pre-step student outputs' logits for orientation.
"""
from __future__ import annotations

import os
import sys

import numpy as np
import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "tools", "parity"))
sys.path.insert(0, os.path.join(ROOT, "tests", "golden", "parity"))
import recipe  # noqa: E402
import torch_models  # noqa: E402

R, A, B_AT, T, P = 0.1, 0.9, 1000.0, 4.0, 2.0
LR, MOMENTUM, WD = 0.05, 0.9, 5e-4
BATCH = 16


def load(arch):
  with np.load(os.path.join(ROOT, "tests", "golden", "parity", f"{arch}.npz")) as f:
    fx = {k: f[k] for k in f.files}
  model = torch_models.CIFAR[arch](100)
  model.load_state_dict({k: torch.from_numpy(v) for k, v in recipe.state_dict(fx).items()},
                        strict=True)
  return model.double()


def at(f):
  return F.normalize(f.pow(P).mean(1).view(f.size(0), -1))


def main():
  teacher, student = load("resnet32x4"), load("resnet8x4")
  rng = np.random.Generator(np.random.PCG64(2024))
  x = rng.standard_normal((BATCH, 3, 32, 32)).astype(np.float32)
  y = rng.integers(0, 100, BATCH).astype(np.int64)
  xt, yt = torch.from_numpy(x).double(), torch.from_numpy(y)
  teacher.eval()
  student.train()
  opt = torch.optim.SGD(student.parameters(), lr=LR, momentum=MOMENTUM, weight_decay=WD)
  feat_s, logit_s = student(xt, is_feat=True, preact=False)
  with torch.no_grad():
    feat_t, logit_t = teacher(xt, is_feat=True, preact=False)
    feat_t = [f.detach() for f in feat_t]
  ce = F.cross_entropy(logit_s, yt)
  p_s = F.log_softmax(logit_s / T, dim=1)
  p_t = F.softmax(logit_t / T, dim=1)
  kd = F.kl_div(p_s, p_t, reduction="sum") * T ** 2 / logit_s.shape[0]
  at_loss = sum((at(fs) - at(ft)).pow(2).mean() for fs, ft in zip(feat_s[1:-1], feat_t[1:-1]))
  loss = R * ce + A * kd + B_AT * at_loss
  opt.zero_grad()
  loss.backward()
  opt.step()
  out = {"input": x, "labels": y.astype(np.int32), "loss": np.array(loss.item()),
         "loss_ce": np.array(float(ce)), "loss_kd": np.array(float(kd)),
         "loss_at": np.array(float(at_loss)), "teacher_logits": logit_t.numpy().astype(np.float32),
         "student_logits": logit_s.detach().numpy().astype(np.float32)}
  for k, v in student.state_dict().items():
    if not k.endswith("num_batches_tracked"):
      out[f"after/{k}"] = v.numpy().astype(np.float32)
  path = os.path.join(ROOT, "tests", "golden", "train_step_r32x4_r8x4.npz")
  np.savez_compressed(path, **out)
  print(f"wrote {path} ({os.path.getsize(path) / 2**20:.1f} MiB): loss {float(loss):.6f} "
        f"(ce {float(ce):.4f}, kd {float(kd):.4f}, at {float(at_loss):.6f})")


if __name__ == "__main__":
  main()
