r"""Golden values for CTKD (torch, float64): ``tests/golden/ctkd.npz``.

  $KDJAX_TORCH_PYTHON tools/goldens/make_ctkd_goldens.py

Our transcription of zhengli97/CTKD ``models/temp_global.py`` (``Global_T``,
``GradientReversalFunction``), ``distiller_zoo/KD.py`` (``DistillKL``), the temperature of
``helper/loops.py`` (``t_start + t_end · sigmoid(mlp_net(...))``) and ``train_student.py``'s
``CosineDecay``, plus logit-standardization-KD's ``DistillKL_logit_stand``. For fixed random
logits, two values of the temperature parameter θ and two curriculum values λ, stores the loss
``0.9 · DistillKL`` (the reference's ``-a 0.9``) and its gradients w.r.t. the student logits and
θ; and ``CosineDecay(0, -1, 10).get_value(epoch)`` for epochs 0..12.
"""

import math
import os

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
T_START, T_END, ALPHA = 1.0, 20.0, 0.9


class GradientReversalFunction(torch.autograd.Function):
  @staticmethod
  def forward(ctx, x, lambda_):
    ctx.lambda_ = lambda_
    return x.clone()

  @staticmethod
  def backward(ctx, grads):
    return grads.new_tensor(ctx.lambda_) * grads, None


def normalize(logit):
  mean = logit.mean(dim=-1, keepdims=True)
  stdv = logit.std(dim=-1, keepdims=True)
  return (logit - mean) / (1e-7 + stdv)


def distill_kl(y_s, y_t, T, stand):
  if stand:
    y_s, y_t = normalize(y_s), normalize(y_t)
  return (
    nn.KLDivLoss(reduction="batchmean")(F.log_softmax(y_s / T, dim=1), F.softmax(y_t / T, dim=1))
    * T
    * T
  )


def cosine_decay(i, max_value=0.0, min_value=-1.0, num_loops=10):
  i = min(max(i, 0), num_loops)
  value = (math.cos(i * math.pi / num_loops) + 1.0) * 0.5
  return value * (max_value - min_value) + min_value


def main():
  rng = np.random.Generator(np.random.PCG64(41))
  out = {
    "lambda_epochs": np.arange(13),
    "lambda_values": np.array([cosine_decay(e) for e in range(13)]),
    "hparams": np.array([T_START, T_END, ALPHA]),
  }
  s_np = 2.0 * rng.standard_normal((16, 100))
  t_np = 5.0 * rng.standard_normal((16, 100))
  out["student"], out["teacher"] = s_np, t_np
  for ti, theta0 in enumerate((1.0, -0.7)):
    for li, lam in enumerate((cosine_decay(1), -1.0)):
      for stand in (False, True):
        tag = f"theta{ti}_lam{li}_{'ls' if stand else 'kd'}"
        s = torch.tensor(s_np, requires_grad=True)
        theta = torch.tensor([theta0], dtype=torch.float64, requires_grad=True)
        temp = T_START + T_END * torch.sigmoid(GradientReversalFunction.apply(theta, lam))
        loss = ALPHA * distill_kl(s, torch.tensor(t_np), temp, stand)
        loss.backward()
        out[f"{tag}/theta"] = np.array([theta0])
        out[f"{tag}/lambda"] = np.array(lam)
        out[f"{tag}/temperature"] = np.array(temp.item())
        out[f"{tag}/loss"] = np.array(loss.item())
        out[f"{tag}/grad_student"] = s.grad.numpy()
        out[f"{tag}/grad_theta"] = theta.grad.numpy()
  path = os.path.join(ROOT, "tests", "golden", "ctkd.npz")
  np.savez_compressed(path, **out)
  print("wrote", path, {k: float(v) for k, v in out.items() if v.ndim == 0})


if __name__ == "__main__":
  main()
