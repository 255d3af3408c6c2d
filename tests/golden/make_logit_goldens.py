"""Generates tests/golden/logit_losses.{npz,json} from PyTorch re-implementations of the references.

NOT run by CI (CI only reads the fixture files). Needs torch; kdjax itself does not depend on it.

    python3 -m venv $TORCH_VENV   # any Python 3.11 venv outside the repo
    $TORCH_VENV/bin/pip install torch==2.13.0 numpy
    $TORCH_VENV/bin/python tests/golden/make_logit_goldens.py

Each ``ref_*`` function below re-implements, line by line in float64 PyTorch, the computation of
the reference file named in its docstring. For every (loss, case, hyper-parameters) entry we store:

* ``<id>__loss``:        the reference's scalar (batch-reduced) loss;
* ``<id>__per_example``: the reference computation with the batch reduction left out (B,), where
                         the reference has a per-example decomposition (DIST: inter-class term per
                         example plus the batch-level intra-class term added to every example);
* ``<id>__grad``:        d loss / d student_logits (B, K);
* ``<id>__wgrad``:       d (Σ_b w_b · per_example_b) / d student_logits for fixed weights w (only
                         for losses that decompose per example; tests the per-example split).

Inputs per case: ``<case>__student``, ``<case>__teacher`` (B, K), ``<case>__labels`` (B,),
``<case>__weights`` (B,). The JSON lists the entries with function name and keyword arguments as
the kdjax function takes them.
"""

from __future__ import annotations

import json
import os

import numpy as np
import torch
import torch.nn.functional as F

torch.set_default_dtype(torch.float64)
HERE = os.path.dirname(os.path.abspath(__file__))


# ----------------------------------------------------------------------------------------------
# Reference re-implementations (return (batch_loss, per_example or None))
# ----------------------------------------------------------------------------------------------


def ref_kd_repdistiller(y_s, y_t, T):
  """HobbitLong/RepDistiller distiller_zoo/KD.py, DistillKL(T).forward.

  ``F.kl_div(p_s, p_t, size_average=False)`` is ``reduction='sum'``.
  """
  p_s = F.log_softmax(y_s / T, dim=1)
  p_t = F.softmax(y_t / T, dim=1)
  loss = F.kl_div(p_s, p_t, reduction="sum") * (T**2) / y_s.shape[0]
  per_example = F.kl_div(p_s, p_t, reduction="none").sum(1) * (T**2)
  return loss, per_example


def ref_kd_mdistiller(logits_student, logits_teacher, temperature):
  """megvii-research/mdistiller mdistiller/distillers/KD.py, kd_loss."""
  log_pred_student = F.log_softmax(logits_student / temperature, dim=1)
  pred_teacher = F.softmax(logits_teacher / temperature, dim=1)
  per = F.kl_div(log_pred_student, pred_teacher, reduction="none").sum(1)
  loss_kd = per.mean() * temperature**2
  return loss_kd, per * temperature**2


def ref_kl_general(y_s, y_t, T_t, T_s, t2_scale, form):
  """methods.md §0.2 kl_per_example in torch (F.kl_div for 'kl'; −Σ p log q for 'cross_entropy').

  Convention pinned here (kdjax design decision): the T² factor is the student temperature².
  Batch reduction: mean (= 'batchmean').
  """
  log_q = F.log_softmax(y_s / T_s, dim=1)
  p = F.softmax(y_t / T_t, dim=1)
  if form == "kl":
    per = F.kl_div(log_q, p, reduction="none").sum(1)
  else:
    per = -(p * log_q).sum(1)
  if t2_scale:
    per = per * T_s**2
  return per.mean(), per


def ref_ttm(y_s, y_t, l):
  """zkxufo/TTM distiller_zoo/ttm.py, TTM(l).forward."""
  p_s = F.log_softmax(y_s, dim=1)
  p_t = torch.pow(torch.softmax(y_t, dim=1), l)
  norm = torch.sum(p_t, dim=1)
  p_t = p_t / norm.unsqueeze(1)
  KL = torch.sum(F.kl_div(p_s, p_t, reduction="none"), dim=1)
  return torch.mean(KL), KL


def ref_wttm(y_s, y_t, l):
  """zkxufo/TTM distiller_zoo/wttm.py, WTTM(l).forward."""
  p_s = F.log_softmax(y_s, dim=1)
  p_t = torch.pow(torch.softmax(y_t, dim=1), l)
  norm = torch.sum(p_t, dim=1)
  p_t = p_t / norm.unsqueeze(1)
  KL = torch.sum(F.kl_div(p_s, p_t, reduction="none"), dim=1)
  return torch.mean(norm * KL), norm * KL


def _gt_mask(logits, target):
  return torch.zeros_like(logits).scatter_(1, target.reshape(-1).unsqueeze(1), 1).bool()


def _other_mask(logits, target):
  return torch.ones_like(logits).scatter_(1, target.reshape(-1).unsqueeze(1), 0).bool()


def _cat_mask(t, mask1, mask2):
  t1 = (t * mask1).sum(dim=1, keepdims=True)
  t2 = (t * mask2).sum(1, keepdims=True)
  return torch.cat([t1, t2], dim=1)


def ref_dkd(logits_student, logits_teacher, target, alpha, beta, temperature):
  """megvii-research/mdistiller mdistiller/distillers/DKD.py, dkd_loss (size_average=False == sum).

  per_example: the same computation with the class sum kept per row (reduction='none').sum(1).
  """
  gt_mask = _gt_mask(logits_student, target)
  other_mask = _other_mask(logits_student, target)
  pred_student = F.softmax(logits_student / temperature, dim=1)
  pred_teacher = F.softmax(logits_teacher / temperature, dim=1)
  pred_student = _cat_mask(pred_student, gt_mask, other_mask)
  pred_teacher = _cat_mask(pred_teacher, gt_mask, other_mask)
  log_pred_student = torch.log(pred_student)
  tckd_loss = (
    F.kl_div(log_pred_student, pred_teacher, reduction="sum") * (temperature**2) / target.shape[0]
  )
  tckd_per = F.kl_div(log_pred_student, pred_teacher, reduction="none").sum(1) * (temperature**2)
  pred_teacher_part2 = F.softmax(logits_teacher / temperature - 1000.0 * gt_mask, dim=1)
  log_pred_student_part2 = F.log_softmax(logits_student / temperature - 1000.0 * gt_mask, dim=1)
  nckd_loss = (
    F.kl_div(log_pred_student_part2, pred_teacher_part2, reduction="sum")
    * (temperature**2)
    / target.shape[0]
  )
  nckd_per = F.kl_div(log_pred_student_part2, pred_teacher_part2, reduction="none").sum(1) * (
    temperature**2
  )
  return alpha * tckd_loss + beta * nckd_loss, alpha * tckd_per + beta * nckd_per


def _cosine_similarity(a, b, eps=1e-8):
  return (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1) + eps)


def _pearson_correlation(a, b, eps=1e-8):
  return _cosine_similarity(a - a.mean(1).unsqueeze(1), b - b.mean(1).unsqueeze(1), eps)


def ref_dist(z_s, z_t, beta, gamma, tau):
  """zkxufo/TTM distiller_zoo/dist.py, DIST(beta, gamma, tau).forward.

  per_example (kdjax split): τ²β(1 − ρ_b) per row plus the batch-level intra term on every row.
  """
  y_s = (z_s / tau).softmax(dim=1)
  y_t = (z_t / tau).softmax(dim=1)
  inter_loss = tau**2 * (1 - _pearson_correlation(y_s, y_t).mean())
  intra_loss = tau**2 * (1 - _pearson_correlation(y_s.transpose(0, 1), y_t.transpose(0, 1)).mean())
  loss = beta * inter_loss + gamma * intra_loss
  per = beta * tau**2 * (1 - _pearson_correlation(y_s, y_t)) + gamma * intra_loss
  return loss, per


# ----------------------------------------------------------------------------------------------
# Inputs
# ----------------------------------------------------------------------------------------------


def make_cases():
  rng = np.random.RandomState(20240611)
  cases = {}
  # small: CIFAR-10-like, moderate logits
  B, K = 8, 10
  cases["small"] = dict(
    student=2.0 * rng.randn(B, K),
    teacher=3.0 * rng.randn(B, K),
    labels=rng.randint(0, K, size=B),
  )
  # medium: CIFAR-100-like, a confident teacher (boosted label logit)
  B, K = 16, 100
  labels = rng.randint(0, K, size=B)
  teacher = 2.5 * rng.randn(B, K)
  teacher[np.arange(B), labels] += 8.0
  cases["medium"] = dict(student=1.5 * rng.randn(B, K), teacher=teacher, labels=labels)
  # large: logits in about ±20 on both sides (same shape as medium: one compile in the tests)
  B, K = 16, 100
  cases["large"] = dict(
    student=rng.uniform(-20.0, 20.0, size=(B, K)),
    teacher=rng.uniform(-20.0, 20.0, size=(B, K)),
    labels=rng.randint(0, K, size=B),
  )
  for c in cases.values():
    c["weights"] = rng.uniform(0.1, 2.0, size=c["student"].shape[0])
  return cases


# entries: (name, fn, kwargs, reference callable taking (s, t, labels))
def make_specs():
  specs = []
  for T in (1.0, 4.0):
    specs.append(
      (
        "kd",
        {"temperature": T},
        "HobbitLong/RepDistiller distiller_zoo/KD.py DistillKL",
        lambda s, t, y, T=T: ref_kd_repdistiller(s, t, T),
      )
    )
    specs.append(
      (
        "kd",
        {"temperature": T},
        "megvii-research/mdistiller mdistiller/distillers/KD.py kd_loss",
        lambda s, t, y, T=T: ref_kd_mdistiller(s, t, T),
      )
    )
  for T_t, T_s, t2, form in (
    (4.0, 4.0, True, "kl"),
    (1.8, 1.8, True, "cross_entropy"),
    (4.0, 1.0, False, "kl"),
    (2.0, 3.0, True, "cross_entropy"),
    (0.5, 2.0, True, "kl"),
  ):
    kw = {"teacher_temperature": T_t, "student_temperature": T_s, "t2_scale": t2, "form": form}
    specs.append(
      (
        "kl_per_example",
        kw,
        "methods.md §0.2 (torch F.kl_div / -sum p log_softmax)",
        lambda s, t, y, a=(T_t, T_s, t2, form): ref_kl_general(s, t, *a),
      )
    )
  for g in (0.1, 0.3, 1.0):
    specs.append(
      (
        "ttm",
        {"gamma": g},
        "zkxufo/TTM distiller_zoo/ttm.py TTM",
        lambda s, t, y, g=g: ref_ttm(s, t, g),
      )
    )
  for g in (0.1, 0.5):
    specs.append(
      (
        "wttm",
        {"gamma": g},
        "zkxufo/TTM distiller_zoo/wttm.py WTTM",
        lambda s, t, y, g=g: ref_wttm(s, t, g),
      )
    )
  for a, b, T in ((1.0, 8.0, 4.0), (1.0, 0.5, 1.0), (2.0, 6.0, 2.0)):
    specs.append(
      (
        "dkd",
        {"alpha": a, "beta": b, "temperature": T},
        "megvii-research/mdistiller mdistiller/distillers/DKD.py dkd_loss",
        lambda s, t, y, a=a, b=b, T=T: ref_dkd(s, t, y, a, b, T),
      )
    )
  for b, g, tau in ((1.0, 1.0, 4.0), (2.0, 0.5, 1.0)):
    specs.append(
      (
        "dist",
        {"beta": b, "gamma": g, "temperature": tau},
        "zkxufo/TTM distiller_zoo/dist.py DIST",
        lambda s, t, y, b=b, g=g, tau=tau: ref_dist(s, t, b, g, tau),
      )
    )
  return specs


DECOMPOSABLE = {"kd", "kl_per_example", "ttm", "wttm", "dkd"}


def main():
  cases = make_cases()
  arrays, entries = {}, []
  for cname, c in cases.items():
    for key in ("student", "teacher", "labels", "weights"):
      arrays[f"{cname}__{key}"] = c[key]
  for cname, c in cases.items():
    for i, (fn, kwargs, ref_name, ref) in enumerate(make_specs()):
      eid = f"{fn}__{cname}__{i:02d}"
      s = torch.tensor(c["student"], dtype=torch.float64, requires_grad=True)
      t = torch.tensor(c["teacher"], dtype=torch.float64)
      y = torch.tensor(c["labels"], dtype=torch.int64)
      w = torch.tensor(c["weights"], dtype=torch.float64)
      loss, per = ref(s, t, y)
      (grad,) = torch.autograd.grad(loss, s, retain_graph=True)
      arrays[f"{eid}__loss"] = loss.detach().numpy()
      arrays[f"{eid}__per_example"] = per.detach().numpy()
      arrays[f"{eid}__grad"] = grad.numpy()
      has_wgrad = fn in DECOMPOSABLE
      if has_wgrad:
        (wgrad,) = torch.autograd.grad((w * per).sum(), s)
        arrays[f"{eid}__wgrad"] = wgrad.numpy()
      assert np.isfinite(arrays[f"{eid}__loss"]) and np.all(np.isfinite(grad.numpy())), eid
      assert np.allclose(per.detach().numpy().mean(), loss.item(), rtol=1e-12, atol=0), eid
      entries.append(
        {
          "id": eid,
          "fn": fn,
          "case": cname,
          "kwargs": kwargs,
          "reference": ref_name,
          "has_wgrad": has_wgrad,
        }
      )
  np.savez_compressed(os.path.join(HERE, "logit_losses.npz"), **arrays)
  meta = {
    "generator": "tests/golden/make_logit_goldens.py",
    "torch": torch.__version__,
    "dtype": "float64",
    "note": "loss = reference batch loss; per_example.mean() == loss; grad = d loss/d student",
    "entries": entries,
  }
  with open(os.path.join(HERE, "logit_losses.json"), "w") as f:
    json.dump(meta, f, indent=1)
  print(f"wrote {len(entries)} entries, {len(arrays)} arrays")


if __name__ == "__main__":
  main()
