r"""Golden for one whole distillation train step, RepDistiller ``train_distill`` semantics (torch).

  /path/to/python-with-torch tools/goldens/make_train_step_golden.py

Teacher resnet32x4 and student resnet8x4 with the deterministic weights of the parity fixtures
(``tests/golden/parity/{resnet32x4,resnet8x4}.npz``: recipe weights and BN affine parameters, BN
running statistics calibrated on random batches, so eval-mode BN is a non-trivial affine map),
one batch of 16 random 32x32x3 inputs (standard normal, i.e. already normalised) with 100-class
labels, and exactly one iteration of RepDistiller's ``helper/loops.py:train_distill`` (our own
transcription, float64) for two methods:

* ``kd``        -- ``--distill kd -r 0.1 -a 0.9 -b 0``:
  ``loss = 0.1 CE + 0.9 DistillKL_T(z_s, z_t)``;
* ``kd_at``     -- ``--distill attention -r 0.1 -a 0.9 -b 1000`` (KD + AT):
  ``loss = 0.1 CE + 0.9 DistillKL_T(z_s, z_t) + 1000 sum_l AT(feat_s[l], feat_t[l])``, l = 1..3;

with ``DistillKL_T = KL(softmax(z_t/T) || softmax(z_s/T))`` summed / B * T^2, T = 4 (``F.kl_div(
log_softmax(z_s/T), softmax(z_t/T), reduction='sum') * T**2 / B``) and RepDistiller's AT (p = 2):
``at(f) = F.normalize(f.pow(p).mean(1).view(B, -1))``, ``AT = (at(f_s) - at(f_t)).pow(2).mean()``
(same spatial sizes here, so no adaptive pooling). Student ``.train()`` (BN batch statistics,
running statistics updated with momentum 0.1 and the *unbiased* batch variance), teacher ``.eval()``
under ``no_grad``, both called with ``is_feat=True, preact=False``;
``torch.optim.SGD(lr=0.05, momentum=0.9, weight_decay=5e-4)`` over all student parameters,
``zero_grad(); loss.backward(); step()``.

Stored (``tests/golden/train_step_r32x4_r8x4.npz``, compressed):

* ``input`` (16, 3, 32, 32) float32 NCHW, ``labels`` (16,) int32;
* ``teacher_logits`` / ``<m>/student_logits``: pre-step logits (orientation only);
* per method ``m`` in ``kd``, ``kd_at``: ``<m>/loss``, ``<m>/loss_ce``, ``<m>/loss_kd``,
  ``<m>/loss_at`` (float64 scalars; ``loss_at`` = 0 for ``kd``);
* ``<m>/delta/<torch key>``: ``after - before`` of every student parameter and BN running
  mean/variance, computed in float64 and stored as float32. The pre-step tensors are the
  recipe's float32 values (exactly representable in float64), so ``before + delta`` is the
  updated float64 tensor to float32 precision *of the update* (storing the updated tensors
  themselves in float32 would lose ~6e-8 of each tensor's magnitude, which is not small next to
  an update of lr * grad). Two full parameter sets in float32 are ~9.9 MB; deltas of the 8x4
  student only, the teacher is rebuilt from its recipe;
* ``<m>/torch_float32_err_params`` / ``<m>/torch_float32_err_delta``: PyTorch's own float32 error
  on the same step (float32 modules, default CPU kernels, one thread), max over tensors of
  ``max|p32 - p64| / max|p64|`` for the updated parameters and of ``max|d32 - d64| / max|d64|`` for
  the updates; ``<m>/torch_float32_worst_param`` names the tensor of the latter maximum. This is the
  error scale a float32 implementation of the same step has, for judging kdjax's float32 numbers.
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

GAMMA, ALPHA, T, P = 0.1, 0.9, 4.0, 2.0
METHODS = {"kd": 0.0, "kd_at": 1000.0}  # method -> beta (RepDistiller ``-b``)
LR, MOMENTUM, WD = 0.05, 0.9, 5e-4
BATCH = 16
OUT = os.path.join(ROOT, "tests", "golden", "train_step_r32x4_r8x4.npz")


def state_dict(arch):
  with np.load(os.path.join(ROOT, "tests", "golden", "parity", f"{arch}.npz")) as f:
    return recipe.state_dict({k: f[k] for k in f.files})


def load(arch, sd, dtype):
  model = torch_models.CIFAR[arch](100)
  model.load_state_dict({k: torch.from_numpy(v) for k, v in sd.items()}, strict=True)
  return model.to(dtype)


def at(f):
  return F.normalize(f.pow(P).mean(1).view(f.size(0), -1))


def distill_kl(logit_s, logit_t):
  p_s = F.log_softmax(logit_s / T, dim=1)
  p_t = F.softmax(logit_t / T, dim=1)
  return F.kl_div(p_s, p_t, reduction="sum") * T**2 / logit_s.shape[0]


def train_distill_step(beta, x, y, t_sd, s_sd, dtype):
  """One iteration of ``train_distill``; returns (loss parts, student state dict, logits)."""
  teacher, student = load("resnet32x4", t_sd, dtype), load("resnet8x4", s_sd, dtype)
  xt, yt = torch.from_numpy(x).to(dtype), torch.from_numpy(y)
  student.train()
  teacher.eval()
  opt = torch.optim.SGD(student.parameters(), lr=LR, momentum=MOMENTUM, weight_decay=WD)
  feat_s, logit_s = student(xt, is_feat=True, preact=False)
  with torch.no_grad():
    feat_t, logit_t = teacher(xt, is_feat=True, preact=False)
    feat_t = [f.detach() for f in feat_t]
  loss_cls = F.cross_entropy(logit_s, yt)
  loss_div = distill_kl(logit_s, logit_t)
  if beta:  # --distill attention
    loss_kd = sum((at(fs) - at(ft)).pow(2).mean() for fs, ft in zip(feat_s[1:-1], feat_t[1:-1]))
  else:  # --distill kd
    loss_kd = torch.zeros((), dtype=dtype)
  loss = GAMMA * loss_cls + ALPHA * loss_div + beta * loss_kd
  opt.zero_grad()
  loss.backward()
  opt.step()
  parts = {
    "loss": loss.item(),
    "loss_ce": loss_cls.item(),
    "loss_kd": loss_div.item(),
    "loss_at": loss_kd.item(),
  }
  after = {
    k: v.detach().double().numpy().copy()
    for k, v in student.state_dict().items()
    if not k.endswith("num_batches_tracked")
  }
  return parts, after, logit_s.detach().double().numpy(), logit_t.double().numpy()


def main():
  torch.set_num_threads(1)
  t_sd, s_sd = state_dict("resnet32x4"), state_dict("resnet8x4")
  rng = np.random.Generator(np.random.PCG64(2024))
  x = rng.standard_normal((BATCH, 3, 32, 32)).astype(np.float32)
  y = rng.integers(0, 100, BATCH).astype(np.int64)
  out = {"input": x, "labels": y.astype(np.int32)}
  for m, beta in METHODS.items():
    parts, after, logit_s, logit_t = train_distill_step(beta, x, y, t_sd, s_sd, torch.float64)
    parts32, after32, _, _ = train_distill_step(beta, x, y, t_sd, s_sd, torch.float32)
    out["teacher_logits"] = logit_t.astype(np.float32)
    out[f"{m}/student_logits"] = logit_s.astype(np.float32)
    for k, v in parts.items():
      out[f"{m}/{k}"] = np.array(v, np.float64)
    err_p, err_d, worst = 0.0, 0.0, ""
    for k, v in after.items():
      before = s_sd[k].astype(np.float64)
      delta = v - before
      out[f"{m}/delta/{k}"] = delta.astype(np.float32)
      e_p = np.abs(after32[k] - v).max() / np.abs(v).max()
      d_max = np.abs(delta).max()
      e_d = np.abs((after32[k] - before) - delta).max() / d_max if d_max else 0.0
      err_p = max(err_p, float(e_p))
      if e_d > err_d:
        err_d, worst = float(e_d), k
    out[f"{m}/torch_float32_err_params"] = np.array(err_p)
    out[f"{m}/torch_float32_err_delta"] = np.array(err_d)
    out[f"{m}/torch_float32_worst_param"] = np.array(worst)
    print(
      f"{m:6s} loss {parts['loss']:.8f} (ce {parts['loss_ce']:.6f}, kd {parts['loss_kd']:.6f},"
      f" at {parts['loss_at']:.8f}); torch float32: loss rel err "
      f"{abs(parts32['loss'] - parts['loss']) / abs(parts['loss']):.1e}, params {err_p:.1e}, "
      f"updates {err_d:.1e} ({worst})"
    )
  np.savez_compressed(OUT, **out)
  print(f"wrote {OUT} ({os.path.getsize(OUT) / 2**20:.2f} MiB)")


if __name__ == "__main__":
  main()
