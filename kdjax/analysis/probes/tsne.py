"""Probe ``tsne``: a t-SNE map of the teacher's and each student's ``pooled`` features (the
feature visualisation of Fan et al., "Revisit the Essence of Distilling Knowledge through
Calibration", ICML 2024; methods.md §2), with the kNN class agreement of every map as its number.

Exact t-SNE (van der Maaten & Hinton, JMLR 2008), written here (no scikit-learn dependency), in
the form of scikit-learn's ``method='exact'``:

* ``p_{j|i} ∝ exp(−β_i ‖x_i − x_j‖²)`` with ``β_i`` found by bisection so that the entropy of
  ``p_{·|i}`` is ``log(perplexity)`` (nats); ``P = (P_cond + P_condᵀ) / 2N`` (float64, numpy);
* ``q_ij ∝ (1 + ‖y_i − y_j‖²)⁻¹``; ``KL(P‖Q)``'s gradient
  ``∂/∂y_i = 4 Σ_j (p_ij − q_ij)(1 + ‖y_i − y_j‖²)⁻¹ (y_i − y_j)``;
* gradient descent with momentum (0.5 for the first ``exaggeration_iterations``, then 0.8),
  delta-bar-delta gains (+0.2 / ×0.8, at least 0.01), early exaggeration (``P × 12`` for the first
  250 iterations), the momentum and gains restarted with the second phase (as scikit-learn's two
  ``_gradient_descent`` calls) and scikit-learn's ``learning_rate='auto'``:
  ``max(N / exaggeration / 4, 50)``;
* a fixed number of iterations (no early stop), one jitted ``lax.fori_loop`` in float32.

It is O(N²) in time and memory, so the probe caps the map at 2,000 points. The initial map is
``N(0, 1e-4²)`` from ``seed`` (``init='random'``, the original paper's) or the features' first
two principal components scaled to std 1e-4 (``init='pca'``, scikit-learn's default).

The number reported per model is the leave-one-out ``k``-nearest-neighbour class agreement: the
fraction of a point's ``k`` nearest neighbours (Euclidean) sharing its label, averaged over the
points, in the 2-D map and, for reference, in the pooled feature space itself.
"""

from __future__ import annotations

import functools
import os

import jax
import jax.numpy as jnp
import numpy as np

from kdjax import checks
from kdjax.analysis.probes import base
from kdjax.errors import UserError

__all__ = [
  "conditional_probabilities",
  "joint_probabilities",
  "tsne",
  "knn_agreement",
  "TSNE",
  "MAX_POINTS",
]

MAX_POINTS = 2000  # exact t-SNE: an (N, N) matrix and O(N²) work per iteration


def _sq_dists(x: np.ndarray) -> np.ndarray:
  x = np.asarray(x, np.float64).reshape(len(x), -1)
  sq = np.sum(x * x, axis=1)
  d = sq[:, None] + sq[None, :] - 2.0 * (x @ x.T)
  np.fill_diagonal(d, 0.0)
  return np.maximum(d, 0.0)


def conditional_probabilities(
  x, perplexity: float = 30.0, *, tol: float = 1e-5, steps: int = 100
) -> np.ndarray:
  """``(N, N)`` rows ``p_{·|i}`` (float64, zero diagonal, rows sum to 1): the per-row precision
  ``β_i`` is bisected (all rows at once) until the entropy of ``p_{·|i}`` is within ``tol`` nats
  of ``log(perplexity)``, or ``steps`` bisections."""
  d = _sq_dists(x)
  n = len(d)
  perplexity = checks.positive("perplexity", perplexity)
  if n < 2 or perplexity >= n - 1:
    raise UserError(f"t-SNE needs perplexity < N - 1; got perplexity {perplexity} for N = {n}.")
  off = ~np.eye(n, dtype=bool)
  # shift each row by its smallest off-diagonal distance: p_{j|i} is unchanged, exp cannot underflow
  d = d - np.min(np.where(off, d, np.inf), axis=1, keepdims=True)
  target = np.log(perplexity)
  beta = np.ones((n, 1))
  lo, hi = np.full((n, 1), -np.inf), np.full((n, 1), np.inf)
  for _ in range(steps):
    p = np.where(off, np.exp(-d * beta), 0.0)
    s = np.maximum(p.sum(1, keepdims=True), 1e-300)
    h = np.log(s) + beta * np.sum(d * p, 1, keepdims=True) / s
    if np.all(np.abs(h - target) <= tol):
      break
    up = h > target  # too flat: sharpen (raise beta)
    lo = np.where(up, beta, lo)
    hi = np.where(up, hi, beta)
    beta = np.where(
      up,
      np.where(np.isinf(hi), beta * 2.0, (beta + hi) / 2.0),
      np.where(np.isinf(lo), beta / 2.0, (beta + lo) / 2.0),
    )
  p = np.where(off, np.exp(-d * beta), 0.0)
  return p / np.maximum(p.sum(1, keepdims=True), 1e-300)


def joint_probabilities(x, perplexity: float = 30.0) -> np.ndarray:
  """The symmetric ``(N, N)`` affinities ``P = (P_cond + P_condᵀ) / 2N`` of t-SNE (float64,
  floored at 1e-12 off the diagonal as scikit-learn's)."""
  p = conditional_probabilities(x, perplexity)
  n = len(p)
  return np.maximum((p + p.T) / (2.0 * n), 1e-12) * ~np.eye(n, dtype=bool)


def _kl_grad(p, y):
  sq = jnp.sum(y * y, axis=1)
  w = 1.0 / (1.0 + jnp.maximum(sq[:, None] + sq[None, :] - 2.0 * (y @ y.T), 0.0))
  w = w * (1.0 - jnp.eye(y.shape[0], dtype=y.dtype))
  q = w / jnp.sum(w)
  pq = (p - q) * w
  return 4.0 * (jnp.sum(pq, axis=1, keepdims=True) * y - pq @ y), q


@functools.partial(jax.jit, static_argnames=("iterations", "exaggeration_iterations"))
def _optimise(p, y0, *, iterations, exaggeration_iterations, exaggeration, learning_rate):
  def body(i, carry):
    y, update, gains = carry
    early = i < exaggeration_iterations
    fresh = i == exaggeration_iterations  # the second phase restarts momentum and gains
    update = jnp.where(fresh, 0.0, update)
    gains = jnp.where(fresh, 1.0, gains)
    grad, _ = _kl_grad(jnp.where(early, exaggeration, 1.0) * p, y)
    momentum = jnp.where(early, 0.5, 0.8)
    same = update * grad < 0.0  # sklearn's delta-bar-delta ("inc" where they disagree in sign)
    gains = jnp.maximum(jnp.where(same, gains + 0.2, gains * 0.8), 0.01)
    update = momentum * update - learning_rate * gains * grad
    return y + update, update, gains

  y, _, _ = jax.lax.fori_loop(0, iterations, body, (y0, jnp.zeros_like(y0), jnp.ones_like(y0)))
  _, q = _kl_grad(p, y)
  kl = jnp.sum(jnp.where(p > 0, p * jnp.log(jnp.maximum(p, 1e-12) / jnp.maximum(q, 1e-12)), 0.0))
  return y, kl


def tsne(
  x,
  *,
  perplexity: float = 30.0,
  iterations: int = 1000,
  early_exaggeration: float = 12.0,
  exaggeration_iterations: int = 250,
  learning_rate: float = 0.0,
  init: str = "random",
  seed: int = 0,
  dims: int = 2,
):
  """``(embedding (N, dims) float32 numpy, final KL(P‖Q))`` of the rows of ``x`` (module
  docstring). ``learning_rate = 0``: ``max(N / early_exaggeration / 4, 50)``. Deterministic for a
  given ``seed``."""
  x = np.asarray(x, np.float64).reshape(len(x), -1)
  n = len(x)
  if n > MAX_POINTS:
    raise UserError(f"exact t-SNE is O(N²): at most {MAX_POINTS} points, got {n}.")
  iterations = checks.integer("iterations", iterations, minimum=1)
  exaggeration_iterations = checks.integer(
    "exaggeration_iterations", exaggeration_iterations, minimum=0
  )
  early_exaggeration = checks.positive("early_exaggeration", early_exaggeration)
  learning_rate = checks.nonnegative("learning_rate", learning_rate)
  dims = checks.integer("dims", dims, minimum=1)
  lr = learning_rate or max(n / early_exaggeration / 4.0, 50.0)
  p = joint_probabilities(x, perplexity)
  if init == "random":
    y0 = 1e-4 * np.random.default_rng(seed).standard_normal((n, dims))
  elif init == "pca":
    xc = x - x.mean(0)
    _, _, vt = np.linalg.svd(xc, full_matrices=False)
    y0 = xc @ vt[:dims].T
    y0 *= np.sign(y0[np.argmax(np.abs(y0), 0), np.arange(dims)])  # a fixed sign per axis
    y0 = y0 / np.std(y0[:, 0]) * 1e-4
  else:
    raise UserError(f"t-SNE init must be 'random' or 'pca', got {init!r}.")
  y, kl = _optimise(
    jnp.asarray(p, jnp.float32),
    jnp.asarray(y0, jnp.float32),
    iterations=iterations,
    exaggeration_iterations=min(exaggeration_iterations, iterations),
    exaggeration=jnp.float32(early_exaggeration),
    learning_rate=jnp.float32(lr),
  )
  return np.asarray(y), float(kl)


def knn_agreement(x, labels, k: int = 10) -> float:
  """Leave-one-out ``k``-NN class agreement: the mean over points of the fraction of their ``k``
  nearest other points (Euclidean) that share their label."""
  labels = np.asarray(labels)
  k = checks.integer("k", k, minimum=1)
  if k >= len(labels):
    raise UserError(f"kNN agreement needs k < N; got k = {k} for N = {len(labels)}.")
  d = _sq_dists(x)
  np.fill_diagonal(d, np.inf)
  nn = np.argsort(d, axis=1, kind="stable")[:, :k]
  return float(np.mean(labels[nn] == labels[:, None]))


def _has_pooled(run: base.Run, x) -> bool:
  _, taps = jax.eval_shape(lambda v, z: run.module.apply(v, z, train=False), run.variables, x)
  return "pooled" in taps


@base.register("tsne", order=75)
class TSNE(base.Probe):
  title = "t-SNE of pooled features"

  @classmethod
  def defaults(cls):
    return {
      "num_points": 1000,  # at most MAX_POINTS (exact t-SNE)
      "max_classes": 10,  # keep the examples of the first K classes (0 = all)
      "perplexity": 30.0,
      "iterations": 1000,
      "early_exaggeration": 12.0,
      "exaggeration_iterations": 250,
      "learning_rate": 0.0,  # 0 = max(N / early_exaggeration / 4, 50)
      "init": "random",  # 'random' (seeded) | 'pca'
      "knn": 10,
    }

  def __init__(self, name, settings):
    super().__init__(name, settings)
    s = self.settings
    n = checks.integer("tsne num_points", s["num_points"], minimum=2)
    if n > MAX_POINTS:
      raise UserError(f"tsne num_points must be <= {MAX_POINTS} (exact t-SNE), got {n}.")
    checks.integer("tsne max_classes", s["max_classes"], minimum=0)
    checks.integer("tsne knn", s["knn"], minimum=1)
    if s["init"] not in ("random", "pca"):
      raise UserError(f"tsne init must be 'random' or 'pca', got {s['init']!r}.")
    self._maps = {}

  def _select(self, ctx):
    labels = np.asarray(ctx.labels)
    keep = np.arange(len(labels))
    k = int(self.settings["max_classes"])
    if k:
      classes = np.unique(labels)[:k]
      keep = keep[np.isin(labels, classes)]
    n = int(self.settings["num_points"])
    if len(keep) > n:
      keep = np.sort(np.random.default_rng(ctx.seed).permutation(keep)[:n])
    return keep

  def compute(self, ctx):
    s = self.settings
    sel = self._select(ctx)
    knn = int(s["knn"])
    if len(sel) <= max(knn, float(s["perplexity"]) + 1):
      ctx.notes.append(
        f"t-SNE skipped: {len(sel)} points is too few for perplexity {s['perplexity']} "
        f"and k = {knn}."
      )
      return {"skipped": "too few points (see notes)"}
    images, labels = ctx.images[sel], np.asarray(ctx.labels)[sel]
    missing = [r.name for r in ctx.runs if not _has_pooled(r, ctx.normalize(images[:1]))]
    if missing:
      ctx.notes.append(f"t-SNE skipped: no 'pooled' tap in {missing}.")
      return {"skipped": "no pooled tap (see notes)"}
    models = {}
    with ctx.bar(len(ctx.runs), self.name) as bar:
      for r in ctx.runs:
        _, taps = ctx.predict(r, images, taps=("pooled",))
        feats = np.asarray(taps["pooled"], np.float64).reshape(len(sel), -1)
        emb, kl = tsne(
          feats,
          perplexity=s["perplexity"],
          iterations=s["iterations"],
          early_exaggeration=s["early_exaggeration"],
          exaggeration_iterations=s["exaggeration_iterations"],
          learning_rate=s["learning_rate"],
          init=s["init"],
          seed=ctx.seed,
        )
        self._maps[r.name] = emb
        models[r.name] = {
          "role": r.role,
          "knn_agreement_tsne": knn_agreement(emb, labels, knn),
          "knn_agreement_features": knn_agreement(feats, labels, knn),
          "kl": kl,
          "feature_dim": int(feats.shape[1]),
        }
        bar.update()
    self._labels = labels
    return {
      "num_points": int(len(sel)),
      "classes": [int(c) for c in np.unique(labels)],
      "knn": knn,
      "settings": {k: s[k] for k in sorted(s)},
      "models": models,
    }

  def figures(self, ctx, result):
    if "models" not in result or not self._maps:
      return
    names = list(self._maps)
    cols = min(len(names), 4)
    rows = -(-len(names) // cols)
    fig, axes = base.figure(cols, rows, size=(3.2 * cols, 3.2 * rows))
    classes = np.unique(self._labels)
    cmap = "tab10" if len(classes) <= 10 else "tab20"
    for ax in axes.ravel():
      ax.axis("off")
    for ax, nm in zip(axes.ravel(), names):
      emb = self._maps[nm]
      ax.scatter(
        emb[:, 0],
        emb[:, 1],
        c=np.searchsorted(classes, self._labels) % 20,
        cmap=cmap,
        vmin=0,
        vmax=(9 if cmap == "tab10" else 19),
        s=4,
        linewidths=0,
      )
      m = result["models"][nm]
      ax.set_title(f"{nm} ({m['role']})\nkNN agreement {m['knn_agreement_tsne']:.3f}", fontsize=8)
    ctx.save_figure(fig, self.name, self.figure_name("tsne.png"))
    np.savez(
      os.path.join(ctx.out_dir, self.figure_name("tsne.npz")),
      labels=self._labels,
      **{f"map_{nm}": self._maps[nm] for nm in names},
    )

  def markdown(self, ctx, result):
    if "models" not in result:
      return [f"t-SNE: {result.get('skipped', 'skipped')}."]
    st = result["models"]
    L = [
      base.table(
        ["model", "role", f"{result['knn']}-NN agreement (t-SNE)", "(pooled features)", "KL(P‖Q)"],
        [
          [n, m["role"], m["knn_agreement_tsne"], m["knn_agreement_features"], m["kl"]]
          for n, m in st.items()
        ],
        nd=3,
      ),
      "",
      f"Exact t-SNE of the `pooled` features of {result['num_points']} evaluation examples of "
      f"classes {result['classes'][:10]}{' …' if len(result['classes']) > 10 else ''}; "
      f"perplexity {result['settings']['perplexity']}, {result['settings']['iterations']} "
      f"iterations, init {result['settings']['init']} (seed {ctx.seed}).",
    ]
    if self.name in ctx.figures:
      L += ["", f"![t-SNE]({ctx.figures[self.name]})"]
    return L
