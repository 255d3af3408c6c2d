r"""Golden values for MLKD (torch, float64): ``tests/golden/mlkd.npz``.

  $KDJAX_TORCH_PYTHON tools/goldens/make_mlkd_goldens.py

Our torch transcription of the loss of Jin-Ying/Multi-Level-Logit-Distillation
``mdistiller/distillers/KD_ours.py`` ``KD_ours.forward_train``, from the logits on (the networks are
replaced by fixed random weak/strong student and teacher logits): the five temperatures
(``cfg.KD.TEMPERATURE`` 4 and 3, 5, 2, 6), ``kd_loss`` / ``cc_loss`` / ``bc_loss`` with
``reduce=True`` multiplied by the *mean* of the confidence masks (``np.percentile(·, 50)`` of the
teacher's weak-view max-probability and class sums, ``le``), the strong-view KD sum whose T = 2
and T = 6 parts read the weak view, and the returned ``loss_ce``, ``loss_kd``, ``loss_cc``,
``loss_bc`` with ``CE_WEIGHT`` 0.1 and ``KD_WEIGHT`` 0.9 (mdistiller's defaults, not overridden by
the MLKD yaml files). For every case it stores the inputs, the four losses and the gradients of
each (and of their sum) w.r.t. the weak and strong student logits.
"""

import os

import numpy as np
import torch
import torch.nn.functional as F

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
T0 = 4.0  # cfg.KD.TEMPERATURE
CE_W, KD_W = 0.1, 0.9


def kd_loss(s, t, temperature):
  log_ps = F.log_softmax(s / temperature, dim=1)
  pt = F.softmax(t / temperature, dim=1)
  return F.kl_div(log_ps, pt, reduction="none").sum(1).mean() * temperature**2


def cc_loss(s, t, temperature):
  c = t.shape[1]
  ps, pt = F.softmax(s / temperature, dim=1), F.softmax(t / temperature, dim=1)
  return ((pt.t() @ pt - ps.t() @ ps) ** 2).sum() / c


def bc_loss(s, t, temperature):
  b = t.shape[0]
  ps, pt = F.softmax(s / temperature, dim=1), F.softmax(t / temperature, dim=1)
  return ((pt @ pt.t() - ps @ ps.t()) ** 2).sum() / b


def forward_losses(s_w, s_s, t_w, t_s, target):
  """The released ``forward_train`` losses dict (our transcription, from logits)."""
  p_tw = F.softmax(t_w.detach(), dim=1)
  conf = p_tw.max(dim=1)[0].detach()
  mask = conf.le(float(np.percentile(conf.numpy().flatten(), 50))).bool()
  class_conf = p_tw.sum(dim=0).detach()
  class_mask = class_conf.le(float(np.percentile(class_conf.numpy().flatten(), 50))).bool()
  temps = (T0, 3.0, 5.0, 2.0, 6.0)
  loss_ce = CE_W * (F.cross_entropy(s_w, target) + F.cross_entropy(s_s, target))
  kd_weak = sum(KD_W * (kd_loss(s_w, t_w, T) * mask).mean() for T in temps)
  kd_strong = sum(KD_W * kd_loss(s_s, t_s, T) for T in temps[:3]) + sum(
    KD_W * kd_loss(s_w, t_w, T) for T in temps[3:]
  )
  cc_weak = sum(KD_W * (cc_loss(s_w, t_w, T) * class_mask).mean() for T in temps)
  bc_weak = sum(KD_W * (bc_loss(s_w, t_w, T) * mask).mean() for T in temps)
  out = {"ce": loss_ce, "kd": kd_weak + kd_strong, "cc": cc_weak, "bc": bc_weak}
  return out, mask.double().mean().item(), class_mask.double().mean().item()


def case(rng, b, c, s_scale, t_scale, tag, out):
  arrays = {
    "student_weak": s_scale * rng.standard_normal((b, c)),
    "student_strong": s_scale * rng.standard_normal((b, c)),
    "teacher_weak": t_scale * rng.standard_normal((b, c)) + 1.0,
    "teacher_strong": t_scale * rng.standard_normal((b, c)) - 0.5,
  }
  labels = rng.integers(0, c, b)
  for k, v in arrays.items():
    out[f"{tag}/{k}"] = v
  out[f"{tag}/labels"] = labels
  names = ("ce", "kd", "cc", "bc", "total")
  for name in names:
    s_w = torch.tensor(arrays["student_weak"], requires_grad=True)
    s_s = torch.tensor(arrays["student_strong"], requires_grad=True)
    t_w, t_s = torch.tensor(arrays["teacher_weak"]), torch.tensor(arrays["teacher_strong"])
    losses, m_b, m_c = forward_losses(s_w, s_s, t_w, t_s, torch.tensor(labels))
    loss = sum(losses.values()) if name == "total" else losses[name]
    loss.backward()
    out[f"{tag}/{name}"] = np.array(loss.item())
    out[f"{tag}/{name}/grad_student_weak"] = s_w.grad.numpy()
    out[f"{tag}/{name}/grad_student_strong"] = (
      s_s.grad.numpy() if s_s.grad is not None else np.zeros_like(arrays["student_strong"])
    )
  out[f"{tag}/mask_fractions"] = np.array([m_b, m_c])


def main():
  rng = np.random.Generator(np.random.PCG64(23))
  out = {"temperatures": np.array((T0, 3.0, 5.0, 2.0, 6.0)), "weights": np.array([CE_W, KD_W])}
  case(rng, 8, 10, 2.0, 3.0, "small", out)
  case(rng, 16, 100, 1.0, 4.0, "cifar", out)
  case(rng, 7, 21, 0.5, 8.0, "odd", out)  # odd B and C: m_B = 4/7, m_C = 11/21; sharp teacher
  path = os.path.join(ROOT, "tests", "golden", "mlkd.npz")
  np.savez_compressed(path, **out)
  print("wrote", path, {k: float(v) for k, v in out.items() if v.ndim == 0})
  print({k: v for k, v in out.items() if k.endswith("mask_fractions")})


if __name__ == "__main__":
  main()
