"""Optimal intermediate-teacher selection (checkpoint KD; Wang et al., NeurIPS 2022, Algorithm 1).

For every kept checkpoint of a teacher run, estimate the task-related mutual information of its
penultimate representation F (the ``pooled`` tap) with the input X and the label Y, min-max
normalise each across checkpoints and pick ``argmax_i Î(X;F_i) + Î(Y;F_i)``.

The paper's estimators are not public (LeapLabTHU/CheckpointKD issues #1, #2). kdjax's
re-derivation (methods.md §5.2 design decisions; every choice is an argument):

* ``I(X;F)``: a reconstruction probe. A ridge-regression decoder F -> X (X = the normalised image
  average-pooled to ``recon_size`` x ``recon_size``) is fitted on half of a fixed training subset;
  on the other half ``Î(X;F) = 0.5 * mean_d log(var(X_d) / mse_d)`` nats (the Gaussian-channel
  value of the reconstruction error; monotone in it).
* ``I(Y;F)``: a classification probe. A linear softmax classifier on standardised F is fitted by
  full-batch gradient descent on the first half; ``Î(Y;F) = H(Y) - CE_heldout`` nats.

Each row also reports the checkpoint's test accuracy, NLL and ECE (``kdjax.calibration``).
"""

from __future__ import annotations

import csv
import functools
import os
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax

from kdjax.errors import UserError
from kdjax import data as kdata
from kdjax.calibration import calibration_report
from kdjax import models
from kdjax.data import augment
from kdjax.eval import predict_logits
from kdjax.train import checkpoint as ckpt_lib
from kdjax.train.checkpoint import SELECTION_FILE, selected_step  # noqa: F401 (public here too)


def _forward(module, variables, images, info, batch=500):
  """Eval-mode logits and the flattened ``pooled`` tap (kdjax.eval.predict_logits)."""
  logits, taps = predict_logits(
    module, variables, images, batch_size=batch, preprocess=_eval_transform(info), taps=("pooled",)
  )
  return logits, taps["pooled"].reshape(len(logits), -1)


def _eval_transform(info):
  return functools.partial(augment.eval_transform, info)


def _standardise(a, b):
  mu, sd = a.mean(0), a.std(0) + 1e-6
  return (a - mu) / sd, (b - mu) / sd


def reconstruction_mi(f_fit, x_fit, f_val, x_val, *, ridge: float = 1e-2) -> float:
  """Gaussian-channel ``I(X;F)`` proxy from a ridge decoder F -> X (nats per output dim)."""
  f_fit, f_val = _standardise(f_fit, f_val)
  f_fit = np.concatenate([f_fit, np.ones((len(f_fit), 1))], 1)
  f_val = np.concatenate([f_val, np.ones((len(f_val), 1))], 1)
  a = f_fit.T @ f_fit + ridge * len(f_fit) * np.eye(f_fit.shape[1])
  w = np.linalg.solve(a, f_fit.T @ x_fit)
  mse = ((f_val @ w - x_val) ** 2).mean(0)
  var = x_val.var(0) + 1e-8
  return float(np.mean(0.5 * np.log(var / np.maximum(mse, 1e-8))))


def classification_mi(
  f_fit,
  y_fit,
  f_val,
  y_val,
  num_classes: int,
  *,
  steps: int = 300,
  lr: float = 0.1,
  l2: float = 1e-4,
) -> float:
  """``I(Y;F) ~ H(Y) - CE`` of a linear softmax probe (nats), CE on the held-out half."""
  f_fit, f_val = _standardise(f_fit, f_val)
  f_fit, f_val = jnp.asarray(f_fit, jnp.float32), jnp.asarray(f_val, jnp.float32)
  params = {"w": jnp.zeros((f_fit.shape[1], num_classes)), "b": jnp.zeros((num_classes,))}
  tx = optax.adam(lr)

  def loss(p, f, y):
    z = f @ p["w"] + p["b"]
    return optax.softmax_cross_entropy_with_integer_labels(z, y).mean() + l2 * jnp.sum(p["w"] ** 2)

  @jax.jit
  def fit(p):
    def body(carry, _):
      p, s = carry
      g = jax.grad(loss)(p, f_fit, y_fit)
      u, s = tx.update(g, s, p)
      return (optax.apply_updates(p, u), s), None

    (p, _), _ = jax.lax.scan(body, (p, tx.init(p)), None, length=steps)
    return p

  p = fit(params)
  z = f_val @ p["w"] + p["b"]
  ce = float(optax.softmax_cross_entropy_with_integer_labels(z, y_val).mean())
  counts = np.bincount(np.asarray(y_val), minlength=num_classes) / len(y_val)
  h_y = float(-np.sum(counts[counts > 0] * np.log(counts[counts > 0])))
  return h_y - ce


def minmax(v):
  v = np.asarray(v, np.float64)
  span = v.max() - v.min()
  return np.zeros_like(v) if span <= 0 else (v - v.min()) / span


def select_teacher(
  workdir: str,
  *,
  num_examples: int = 2000,
  recon_size: int = 8,
  probe_steps: int = 300,
  data_dir: Optional[str] = None,
  idx_dir: Optional[str] = None,
  eval_limit: int = 0,
  out_dir: str = "",
  seed: int = 0,
) -> dict:
  """Scores every kept checkpoint of ``workdir`` and writes the table, plot and selection.

  Returns ``{'selected': {'step', 'epoch'}, 'rows': [...]}`` and writes
  ``<out_dir>/selection.{json,csv,png}`` (``out_dir`` defaults to ``workdir``); the json is what
  ``teacher.which = 'selected'`` reads.
  """
  kept = ckpt_lib.kept_checkpoints(workdir)
  if len(kept) < 2:
    raise UserError(
      f"{workdir!r} has {len(kept)} kept checkpoint(s); selection needs at least "
      "two (train the teacher with keep_every_epochs > 0)."
    )
  meta0 = kept[0]
  info = kdata.info(meta0["dataset"])
  train = kdata.load_arrays(meta0["dataset"], info.train_split, data_dir=data_dir, idx_dir=idx_dir)
  test = kdata.load_arrays(
    meta0["dataset"], info.eval_split, data_dir=data_dir, idx_dir=idx_dir, limit=eval_limit or None
  )
  rs = np.random.RandomState(seed)
  pick = rs.permutation(len(train.labels))[:num_examples]
  sub = train.subset(np.sort(pick))
  half = len(sub.labels) // 2
  x = np.asarray(augment.eval_transform(info, sub.images))
  h, w = x.shape[1:3]
  x_small = np.asarray(
    jax.image.resize(x, (len(x), recon_size, recon_size, x.shape[3]), "linear")
  ).reshape(len(x), -1)
  y = sub.labels.astype(np.int32)
  rows = []
  for meta in kept:
    variables, m = ckpt_lib.load_model(workdir, meta["step"])
    module = models.get(
      m["arch"], num_classes=int(m["num_classes"]), **dict(m.get("model_kwargs") or {})
    )
    _, f = _forward(module, variables, sub.images, info)
    t_logits, _ = _forward(module, variables, test.images, info)
    rep = calibration_report(t_logits, test.labels)
    rows.append(
      {
        "step": int(meta["step"]),
        "epoch": int(meta.get("epoch", 0)),
        "test_top1": 100.0 * float(rep["accuracy"]),
        "test_nll": float(rep["nll"]),
        "test_ece": float(rep["ece"]),
        "mi_x": reconstruction_mi(f[:half], x_small[:half], f[half:], x_small[half:]),
        "mi_y": classification_mi(
          f[:half], y[:half], f[half:], y[half:], info.num_classes, steps=probe_steps
        ),
      }
    )
  nx, ny = minmax([r["mi_x"] for r in rows]), minmax([r["mi_y"] for r in rows])
  for r, a, b in zip(rows, nx, ny):
    r.update(mi_x_norm=float(a), mi_y_norm=float(b), score=float(a + b))
  best = max(rows, key=lambda r: (r["score"], r["step"]))
  result = {
    "workdir": workdir,
    "selected": {"step": best["step"], "epoch": best["epoch"]},
    "rows": rows,
    "estimators": {
      "num_examples": num_examples,
      "recon_size": recon_size,
      "probe_steps": probe_steps,
      "seed": seed,
    },
  }
  out_dir = out_dir or workdir
  os.makedirs(out_dir, exist_ok=True)
  ckpt_lib.write_json(os.path.join(out_dir, SELECTION_FILE), result)
  with open(os.path.join(out_dir, "selection.csv"), "w", newline="") as fh:
    wr = csv.DictWriter(fh, fieldnames=list(rows[0]))
    wr.writeheader()
    wr.writerows(rows)
  _plot(rows, best, os.path.join(out_dir, "selection.png"))
  return result


def _plot(rows, best, path):
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  ep = [r["epoch"] for r in rows]
  fig, ax = plt.subplots(1, 2, figsize=(10, 3.6))
  ax[0].plot(ep, [r["mi_x_norm"] for r in rows], "o-", label="Î(X;F) (normalised)")
  ax[0].plot(ep, [r["mi_y_norm"] for r in rows], "s-", label="Î(Y;F) (normalised)")
  ax[0].plot(ep, [r["score"] for r in rows], "k^-", label="score")
  ax[0].axvline(best["epoch"], color="r", ls="--", label=f"selected: epoch {best['epoch']}")
  ax[0].set_xlabel("teacher epoch")
  ax[0].legend(fontsize=8)
  ax[1].plot(ep, [r["test_top1"] for r in rows], "o-", label="test top-1 (%)")
  ax2 = ax[1].twinx()
  ax2.plot(ep, [r["test_ece"] for r in rows], "s--", color="C3", label="ECE")
  ax[1].set_xlabel("teacher epoch")
  ax[1].legend(loc="lower left", fontsize=8)
  ax2.legend(loc="lower right", fontsize=8)
  fig.suptitle("Checkpoint-KD teacher selection")
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)
