"""SFTN stage-1 diagnostics on Fashion-MNIST: which loss term moves the teacher (issue 13, item 4).

  nice -n 5 .venv/bin/python tools/evidence/sftn_diagnose.py \
      --limit 2000 --epochs 4 --seeds 0 1 --out docs/sftn_fmnist/diagnose.json

Trains the ``'sftn'`` model (resnet20 teacher + resnet8 branches after stages 1 and 2, the
configuration of ``configs/sftn.py:fmnist:resnet20-resnet8``) with kdjax's own pieces (the model,
the ``sftn`` term, SGD momentum 0.9, wd 5e-4, cosine lr 0.1, batch 128, crop + flip) in a
hand-written step that also differentiates every loss term **separately**:

  L = λ_T CE(z_T, y)  +  λ_R^CE mean_i CE(z_R^i, y)  +  λ_R^KL mean_i τ² KL(p_T^τ ‖ p_R^{i,τ})
        "t_ce"             "b_ce"                         "kl"

and logs, per step, each term's value and the L2 norm of its gradient into the teacher's trunk
(``params['teacher']`` minus the head ``fc``) and into the teacher head, the cosine between the
branch terms' trunk gradient and the teacher-CE trunk gradient, and at the end of every epoch the
teacher's test top-1 (BN running statistics, 2,000 test images).

Variants (all from the same initialisation per seed, so the comparison is paired):

* ``standard``: λ_R^CE = λ_R^KL = 0, i.e. the teacher trains exactly as a plain resnet20 (the
  branches receive no gradient and cannot reach the teacher);
* ``kdjax``: kdjax's defaults (``detach_branch_input=False``, teacher logits not detached in
  the KL);
* ``kimyuji``: ``detach_branch_input=True`` (the unofficial reimplementation's
  ``feat_t = [f.detach() ...]``), teacher logits not detached;
* ``no_kl_to_teacher``: ``detach_branch_input=False``, ``detach_teacher_logits_in_kl=True``.

Deterministic on CPU (fixed seeds, fixed data order). Not the train loop (``kdjax/train``): the
loop cannot report per-term gradients; the accuracy comparison through the public loop is
``tools/evidence/sftn_fmnist.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

from kdjax import data as kdata  # noqa: E402
from kdjax import losses, models  # noqa: E402
from kdjax.data.augment import eval_transform, train_transform  # noqa: E402
from kdjax.methods import Batch, Outputs  # noqa: E402
from kdjax.methods.sftn import sftn_term  # noqa: E402

VARIANTS = {
  "standard": dict(detach_branch_input=False, lam_ce=0.0, lam_kl=0.0, detach_kl=False),
  "kdjax": dict(detach_branch_input=False, lam_ce=1.0, lam_kl=3.0, detach_kl=False),
  "kimyuji": dict(detach_branch_input=True, lam_ce=1.0, lam_kl=3.0, detach_kl=False),
  "no_kl_to_teacher": dict(detach_branch_input=False, lam_ce=1.0, lam_kl=3.0, detach_kl=True),
}
TERMS = ("t_ce", "b_ce", "kl")


def _norm(tree):
  return jnp.sqrt(sum(jnp.sum(jnp.square(x)) for x in jax.tree_util.tree_leaves(tree)))


def _split(g):
  t = dict(g["teacher"])
  head = t.pop("fc")
  return t, head


def _dot(a, b):
  return sum(
    jnp.sum(x * y) for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b))
  )


def run_variant(name, seed, train, test, *, epochs, batch_size, lr, tau, log_every):
  v = VARIANTS[name]
  model = models.get(
    "sftn",
    num_classes=10,
    teacher="resnet20",
    student="resnet8",
    detach_branch_input=v["detach_branch_input"],
  )
  info = train.info
  x0 = jnp.zeros((2,) + tuple(info.image_shape), jnp.float32)
  variables = model.init(jax.random.PRNGKey(seed), x0, train=False)
  params, stats = variables["params"], variables["batch_stats"]
  n = len(train.labels)
  steps_per_epoch = n // batch_size
  total = steps_per_epoch * epochs
  sched = optax.cosine_decay_schedule(lr, total)
  tx = optax.chain(optax.add_decayed_weights(5e-4), optax.sgd(sched, momentum=0.9))
  opt = tx.init(params)

  def term_losses(params, stats, x, y):
    (z_t, taps), new = model.apply(
      {"params": params, "batch_stats": stats}, x, train=True, mutable=["batch_stats"]
    )
    s = Outputs(z_t, taps)
    b = Batch(y, jnp.arange(y.shape[0]))
    t_ce = losses.cross_entropy(z_t.astype(jnp.float32), y).mean()
    common = dict(temperature=tau, detach_teacher_logits_in_kl=v["detach_kl"])
    b_ce = sftn_term(s, None, b, kl_weight=0.0, ce_weight=1.0, **common).mean()
    kl = sftn_term(s, None, b, kl_weight=1.0, ce_weight=0.0, **common).mean()
    vals = jnp.stack([t_ce, b_ce, kl])
    acc = jnp.concatenate([(z_t.argmax(-1) == y)[None], taps["branch_logits"].argmax(-1) == y])
    return vals, (new["batch_stats"], acc.mean(-1))

  weights = jnp.array([1.0, v["lam_ce"], v["lam_kl"]])

  @jax.jit
  def step(params, stats, opt, x, y):
    vals, vjp, (new_stats, acc) = jax.vjp(
      lambda p: term_losses(p, stats, x, y), params, has_aux=True
    )
    # one backward pass per term (the cotangents are the weighted unit vectors)
    grads = jax.vmap(lambda c: vjp(c)[0])(jnp.diag(weights))
    g_total = jax.tree_util.tree_map(lambda a: a.sum(0), grads)
    per = [jax.tree_util.tree_map(lambda a, k=k: a[k], grads) for k in range(3)]
    trunks, heads = zip(*(_split(g) for g in per))
    branch_trunk = jax.tree_util.tree_map(lambda a, b: a + b, trunks[1], trunks[2])
    cos = _dot(branch_trunk, trunks[0]) / (_norm(branch_trunk) * _norm(trunks[0]) + 1e-12)
    diag = dict(
      vals=vals,
      trunk=jnp.stack([_norm(t) for t in trunks]),
      head=jnp.stack([_norm(h) for h in heads]),
      cos_branch_vs_ce=cos,
      acc=acc,
    )
    updates, opt = tx.update(g_total, opt, params)
    return optax.apply_updates(params, updates), new_stats, opt, diag

  @jax.jit
  def predict(params, stats, x):
    z, _ = model.apply({"params": params, "batch_stats": stats}, x, train=False)
    return z.argmax(-1)

  def test_top1(params, stats):
    correct = 0
    for i in range(0, len(test.labels), 500):
      x = eval_transform(info, jnp.asarray(test.images[i : i + 500]))
      correct += int((np.asarray(predict(params, stats, x)) == test.labels[i : i + 500]).sum())
    return 100.0 * correct / len(test.labels)

  log, epochs_top1 = [], []
  rng = jax.random.PRNGKey(seed + 1000)
  t0 = time.time()
  it = 0
  for e in range(epochs):
    perm = np.random.default_rng(seed * 1000 + e).permutation(n)
    for k in range(steps_per_epoch):
      idx = perm[k * batch_size : (k + 1) * batch_size]
      x = train_transform(
        info, jnp.asarray(train.images[idx]), jax.random.fold_in(rng, it), crop_pad=2, flip=True
      )
      y = jnp.asarray(train.labels[idx])
      params, stats, opt, d = step(params, stats, opt, x, y)
      if it % log_every == 0 or it == total - 1:
        d = jax.tree_util.tree_map(lambda a: np.asarray(a).tolist(), d)
        rec = {"step": it, "lr": float(sched(it))}
        rec.update({f"{t}": d["vals"][j] for j, t in enumerate(TERMS)})
        rec.update({f"grad_trunk_{t}": d["trunk"][j] for j, t in enumerate(TERMS)})
        rec.update({f"grad_head_{t}": d["head"][j] for j, t in enumerate(TERMS)})
        rec["cos_branch_vs_ce"] = d["cos_branch_vs_ce"]
        rec["train_acc_teacher"] = d["acc"][0]
        rec["train_acc_branches"] = d["acc"][1:]
        log.append(rec)
      it += 1
    epochs_top1.append(test_top1(params, stats))
    print(
      f"[sftn-diag] {name} seed {seed} epoch {e + 1}: teacher top-1 {epochs_top1[-1]:.2f} "
      f"({time.time() - t0:.0f}s)",
      flush=True,
    )
  return dict(variant=name, seed=seed, epoch_top1=epochs_top1, log=log)


def summarize(paths):
  """Markdown table from result files: per variant and seed, the teacher's test top-1 after each
  epoch and the mean over logged steps (first epoch | whole run) of each term's trunk and head
  gradient norm and of the branch-vs-CE trunk cosine."""
  runs = []
  for p in paths:
    with open(p) as fh:
      runs += json.load(fh)["runs"]
  cols = ["grad_trunk_t_ce", "grad_trunk_b_ce", "grad_trunk_kl", "grad_head_t_ce", "grad_head_kl"]
  head = "| variant | seed | teacher top-1 per epoch | " + " | ".join(cols) + " | cos(branch, CE) |"
  lines = [head, "|" + "---|" * (head.count("|") - 1)]
  for r in sorted(runs, key=lambda r: (list(VARIANTS).index(r["variant"]), r["seed"])):
    log = r["log"]
    n1 = max(1, len(log) // len(r["epoch_top1"]))

    def m(k, sub):
      return float(np.mean([x[k] for x in sub]))

    cells = [f"{m(c, log[:n1]):.2f} / {m(c, log):.2f}" for c in cols + ["cos_branch_vs_ce"]]
    top1 = ", ".join(f"{t:.1f}" for t in r["epoch_top1"])
    lines.append(f"| {r['variant']} | {r['seed']} | {top1} | " + " | ".join(cells) + " |")
  print("\n".join(lines))


def main():
  if sys.argv[1:2] == ["--summarize"]:
    return summarize(sys.argv[2:])
  ap = argparse.ArgumentParser()
  ap.add_argument("--limit", type=int, default=2000)
  ap.add_argument("--test_limit", type=int, default=2000)
  ap.add_argument("--epochs", type=int, default=4)
  ap.add_argument("--batch_size", type=int, default=128)
  ap.add_argument("--lr", type=float, default=0.1)
  ap.add_argument("--tau", type=float, default=1.0)
  ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
  ap.add_argument("--variants", nargs="+", default=list(VARIANTS))
  ap.add_argument("--log_every", type=int, default=5)
  ap.add_argument("--out", default=os.path.join(ROOT, "docs", "sftn_fmnist", "diagnose.json"))
  a = ap.parse_args()
  train = kdata.load_arrays("fashion_mnist", "train", limit=a.limit)
  test = kdata.load_arrays("fashion_mnist", "test", limit=a.test_limit)
  results = []
  if os.path.exists(a.out):
    with open(a.out) as fh:
      results = json.load(fh)["runs"]
  done = {(r["variant"], r["seed"]) for r in results}
  for seed in a.seeds:
    for name in a.variants:
      if (name, seed) in done:
        continue
      results.append(
        run_variant(
          name,
          seed,
          train,
          test,
          epochs=a.epochs,
          batch_size=a.batch_size,
          lr=a.lr,
          tau=a.tau,
          log_every=a.log_every,
        )
      )
      os.makedirs(os.path.dirname(a.out), exist_ok=True)
      with open(a.out, "w") as fh:
        json.dump({"args": vars(a), "runs": results}, fh)
  for r in results:
    print(r["variant"], r["seed"], ["%.2f" % t for t in r["epoch_top1"]])


if __name__ == "__main__":
  main()
