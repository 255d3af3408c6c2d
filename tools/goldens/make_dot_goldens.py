r"""Golden values for DOT, the Distillation-Oriented Trainer (torch, float64): ``tests/golden/dot.npz``.

  $KDJAX_TORCH_PYTHON tools/goldens/make_dot_goldens.py

Our transcription of the update of megvii-research/mdistiller ``mdistiller/engine/dot.py``
(``DistillationOrientedTrainer``, driven as ``trainer.py:DOT.train_iter`` does: KD backward and
``step_kd``, then CE backward and ``step``) for one parameter group whose every parameter both
losses reach, with ``momentum = β − Δ`` (task) and ``momentum_kd = β + Δ`` (distillation), as
``trainer.py:DOT.init_optimizer`` builds it:

  task:    d = g_ce + wd · p;  b_ce = d (first step) else (β − Δ) · b_ce + d;  p -= lr · b_ce
  distill: b_kd = g_kd (first step) else (β + Δ) · b_kd + g_kd;            p -= lr · b_kd

(in that order, in place). Two cases, β = 0.9, Δ = 0.075, wd = 5e-4:

* ``grads``: three parameter tensors, fixed random CE and KD gradients per step, 6 steps with a
  learning rate that drops ×0.1 after step 3 (a multistep schedule);
* ``model``: a linear classifier ``z = x W + b`` (8 examples, 6 features, 5 classes) trained 5
  steps at lr 0.05 on ``0.1 · CE + 0.9 · KD(T = 4)`` against fixed teacher logits (mdistiller's
  ``KD`` distiller: ``T² · KL(softmax(t/T) ‖ softmax(s/T))``, batch mean), the two gradients
  taken by autograd at the current parameters.

Stored: inputs, per-step gradients / learning rates, the parameters after every step.
"""

import os

import numpy as np
import torch
import torch.nn.functional as F

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BETA, DELTA, WD = 0.9, 0.075, 5e-4


class DotReference:
  """DOT's update over a list of torch tensors (both losses reach every parameter)."""

  def __init__(self, params, *, momentum, delta, weight_decay):
    self.params = params
    self.m_task, self.m_kd = momentum - delta, momentum + delta
    self.wd = weight_decay
    self.buf_task = [None] * len(params)
    self.buf_kd = [None] * len(params)

  @torch.no_grad()
  def step(self, g_task, g_kd, lr):
    for i, p in enumerate(self.params):  # task gradient (weight decay here), update
      d = g_task[i].add(p, alpha=self.wd) if self.wd else g_task[i]
      if self.buf_task[i] is None:
        self.buf_task[i] = d.clone()
      else:
        self.buf_task[i].mul_(self.m_task).add_(d)
      p.add_(self.buf_task[i], alpha=-lr)
    for i, p in enumerate(self.params):  # distillation gradient, update
      if self.buf_kd[i] is None:
        self.buf_kd[i] = g_kd[i].clone()
      else:
        self.buf_kd[i].mul_(self.m_kd).add_(g_kd[i])
      p.add_(self.buf_kd[i], alpha=-lr)


def grads_case(rng, out):
  shapes = [(3, 4), (4,), (2, 2, 3)]
  steps = 6
  lrs = [0.05] * 3 + [0.005] * 3
  params = [torch.tensor(rng.standard_normal(s)) for s in shapes]
  for i, p in enumerate(params):
    out[f"grads/p0_{i}"] = p.numpy().copy()
  opt = DotReference(params, momentum=BETA, delta=DELTA, weight_decay=WD)
  for k in range(steps):
    g_ce = [torch.tensor(rng.standard_normal(s)) for s in shapes]
    g_kd = [torch.tensor(3.0 * rng.standard_normal(s)) for s in shapes]
    opt.step(g_ce, g_kd, lrs[k])
    for i in range(len(shapes)):
      out[f"grads/g_task_{k}_{i}"] = g_ce[i].numpy()
      out[f"grads/g_distill_{k}_{i}"] = g_kd[i].numpy()
      out[f"grads/p_{k}_{i}"] = params[i].numpy().copy()
  out["grads/lr"] = np.array(lrs)


def model_case(rng, out, temperature=4.0, ce_w=0.1, kd_w=0.9, lr=0.05, steps=5):
  n, d, k = 8, 6, 5
  x = torch.tensor(rng.standard_normal((n, d)))
  y = torch.tensor(rng.integers(0, k, n))
  t = torch.tensor(3.0 * rng.standard_normal((n, k)))
  w = torch.tensor(0.3 * rng.standard_normal((d, k)), requires_grad=True)
  b = torch.tensor(0.1 * rng.standard_normal(k), requires_grad=True)
  out.update({"model/x": x.numpy(), "model/y": y.numpy(), "model/t": t.numpy()})
  out["model/w0"], out["model/b0"] = w.detach().numpy().copy(), b.detach().numpy().copy()
  opt = DotReference([w, b], momentum=BETA, delta=DELTA, weight_decay=WD)
  for s in range(steps):
    z = x @ w + b
    loss_ce = ce_w * F.cross_entropy(z, y)
    log_p = F.log_softmax(z / temperature, dim=1)
    p_t = F.softmax(t / temperature, dim=1)
    loss_kd = kd_w * F.kl_div(log_p, p_t, reduction="none").sum(1).mean() * temperature**2
    g_kd = torch.autograd.grad(loss_kd, [w, b], retain_graph=True)
    g_ce = torch.autograd.grad(loss_ce, [w, b])
    opt.step(g_ce, g_kd, lr)
    out[f"model/loss_ce_{s}"] = np.array(loss_ce.item())
    out[f"model/loss_kd_{s}"] = np.array(loss_kd.item())
    out[f"model/w_{s}"] = w.detach().numpy().copy()
    out[f"model/b_{s}"] = b.detach().numpy().copy()
  out["model/hparams"] = np.array([temperature, ce_w, kd_w, lr, steps])


def main():
  torch.set_default_dtype(torch.float64)
  rng = np.random.Generator(np.random.PCG64(20230718))
  out = {"hparams": np.array([BETA, DELTA, WD])}
  grads_case(rng, out)
  model_case(rng, out)
  path = os.path.join(ROOT, "tests", "golden", "dot.npz")
  np.savez_compressed(path, **out)
  print("wrote", path, len(out), "arrays")


if __name__ == "__main__":
  main()
