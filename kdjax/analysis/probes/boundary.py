"""Probe ``boundary``: decision-boundary similarity (Ojha et al., NeurIPS 2023, Table 1 and
methods.md §6.3.8; the construction of Somepalli et al., CVPR 2022, somepago/dbViz).

For a triplet of evaluation images ``(x1, x2, x3)`` with three different labels (in model-input
space, i.e. normalised), the plane through them has the orthonormal basis
``a = (x2 − x1) / |x2 − x1|`` and ``b = Gram–Schmidt(x3 − x1) / |·|``; the images sit at plane
coordinates ``(0, 0)``, ``(|x2 − x1|, 0)`` and ``(a·(x3 − x1), b·(x3 − x1))``. A
``resolution x resolution`` grid covers the triangle's bounding box widened by ``margin`` of its
side on each side (dbViz's ``range_l = range_r = 0.1``), every grid point ``x1 + u a + v b`` is
classified by every model, and the similarity of two models is dbViz's "IoU" (its
``calculate_iou_simple``): the fraction of grid points where their top-1 predictions agree, over
all points of all triplets. Triplets are drawn once from the evaluation set (seeded), the same for
every model; 50 triplets as in the paper (grid resolution: a design decision, default 32 x 32).

The grid of one triplet is built by one jitted function and classified through
:func:`kdjax.eval.predict_logits` (``pixels=False``: the points are model inputs).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from kdjax import checks
from kdjax.analysis.probes import base
from kdjax.errors import UserError

__all__ = ["plane_basis", "plane_points", "sample_triplets", "prediction_iou", "Boundary"]


def plane_basis(x1, x2, x3):
  """``(a, b, coords)``: orthonormal plane basis (shapes of ``x1``) and the ``(3, 2)`` plane
  coordinates of the three points (module docstring)."""
  v1 = (x2 - x1).ravel()
  v2 = (x3 - x1).ravel()
  n1 = jnp.sqrt(jnp.sum(v1 * v1))
  a = v1 / jnp.maximum(n1, 1e-12)
  c1 = jnp.dot(a, v2)
  w = v2 - c1 * a
  b = w / jnp.maximum(jnp.sqrt(jnp.sum(w * w)), 1e-12)
  c2 = jnp.dot(b, v2)
  coords = jnp.stack([jnp.zeros(2), jnp.stack([n1, 0.0]), jnp.stack([c1, c2])])
  return a.reshape(x1.shape), b.reshape(x1.shape), coords


@functools.partial(jax.jit, static_argnames=("resolution",))
def plane_points(x1, x2, x3, *, resolution: int, margin: float = 0.1):
  """``(resolution², *x1.shape)`` points ``x1 + u a + v b`` on the grid over the triangle's
  bounding box widened by ``margin`` x its side (``u`` the slow axis, as dbViz's meshgrid)."""
  a, b, coords = plane_basis(x1, x2, x3)
  lo, hi = coords.min(0), coords.max(0)
  span = hi - lo
  us = jnp.linspace(lo[0] - margin * span[0], hi[0] + margin * span[0], resolution)
  vs = jnp.linspace(lo[1] - margin * span[1], hi[1] + margin * span[1], resolution)
  u, v = (g.ravel() for g in jnp.meshgrid(us, vs, indexing="ij"))
  return x1[None] + u.reshape((-1,) + (1,) * x1.ndim) * a + v.reshape((-1,) + (1,) * x1.ndim) * b


def sample_triplets(labels, num_triplets: int, seed: int) -> np.ndarray:
  """``(num_triplets, 3)`` indices of evaluation examples, three different labels per triplet
  (numpy ``default_rng(seed)``: the first three distinct classes of a random draw order)."""
  labels = np.asarray(labels)
  if len(np.unique(labels)) < 3:
    raise UserError(
      "the boundary probe needs evaluation examples of at least 3 classes, got "
      f"{len(np.unique(labels))}."
    )
  rng = np.random.default_rng(seed)
  out = []
  for _ in range(int(num_triplets)):
    picked, seen = [], set()
    for i in rng.permutation(len(labels)):
      if labels[i] not in seen:
        picked.append(int(i))
        seen.add(labels[i])
        if len(picked) == 3:
          break
    out.append(picked)
  return np.asarray(out, np.int64).reshape(-1, 3)


def prediction_iou(pred_a, pred_b) -> float:
  """dbViz's "IoU" of two prediction maps: the fraction of points with the same top-1 class."""
  pred_a, pred_b = np.asarray(pred_a), np.asarray(pred_b)
  if pred_a.shape != pred_b.shape:
    raise ValueError(f"prediction maps differ in shape: {pred_a.shape} vs {pred_b.shape}")
  return float(np.mean(pred_a == pred_b))


@base.register("boundary", order=25)
class Boundary(base.Probe):
  title = "Decision-boundary similarity"

  @classmethod
  def defaults(cls):
    return {"triplets": 50, "resolution": 32, "margin": 0.1}

  def __init__(self, name, settings):
    super().__init__(name, settings)
    checks.integer(f"probe {name!r}: triplets", self.settings["triplets"], minimum=1)
    checks.integer(f"probe {name!r}: resolution", self.settings["resolution"], minimum=2)

  def compute(self, ctx):
    s = self.settings
    res, margin = int(s["resolution"]), float(s["margin"])
    trip = sample_triplets(ctx.labels, int(s["triplets"]), int(ctx.seed))
    x = np.asarray(ctx.normalize(jnp.asarray(ctx.images[np.unique(trip)], jnp.float32)))
    pos = {int(i): k for k, i in enumerate(np.unique(trip))}
    preds = {r.name: [] for r in ctx.runs}
    with ctx.bar(len(trip), self.name) as bar:
      for t in trip:
        pts = np.asarray(
          plane_points(*(jnp.asarray(x[pos[int(i)]]) for i in t), resolution=res, margin=margin)
        )
        for r in ctx.runs:
          preds[r.name].append(ctx.predict(r, pts, pixels=False).argmax(-1))
        bar.update()
    teach = preds[ctx.teacher.name]
    per_triplet = {
      st.name: [prediction_iou(p, q) for p, q in zip(preds[st.name], teach)] for st in ctx.students
    }
    iou = {n: prediction_iou(np.concatenate(preds[n]), np.concatenate(teach)) for n in per_triplet}
    ind = iou[ctx.independent.name]
    for d in ctx.distilled:
      ctx.direct(
        self.name,
        "distilled decision-boundary IoU with the teacher > independent",
        d.name,
        iou[d.name],
        ind,
        lambda a, b: a > b,
      )
    first = {r.name: np.asarray(preds[r.name][0]).reshape(res, res).tolist() for r in ctx.runs}
    return {
      "iou": iou,
      "per_triplet": per_triplet,
      "triplets": trip.tolist(),
      "resolution": res,
      "margin": margin,
      "first_plane": first,
    }

  def figures(self, ctx, result):
    names = [r.name for r in ctx.runs]
    fig, axes = base.figure(len(names), 1, size=(2.4 * len(names), 2.6))
    k = max(ctx.num_classes, 1)
    for ax, n in zip(axes[0], names):
      ax.imshow(
        np.asarray(result["first_plane"][n]).T,
        origin="lower",
        cmap="tab20",
        vmin=0,
        vmax=max(k - 1, 1),
        interpolation="nearest",
      )
      ax.set_title(n, fontsize=8)
      ax.set_xticks([])
      ax.set_yticks([])
    ctx.save_figure(fig, self.name, "boundary_plane.png")

  def markdown(self, ctx, result):
    rows = []
    for st in ctx.students:
      pt = np.asarray(result["per_triplet"][st.name])
      rows.append([st.name, st.role, result["iou"][st.name], float(pt.std())])
    L = [base.table(["student", "role", "IoU with teacher", "std over triplets"], rows, nd=4)]
    L += [
      "",
      f"Fraction of grid points ({result['resolution']}² per plane, margin "
      f"{result['margin']:g}) where the student's top-1 class equals the teacher's, on planes "
      f"through {len(result['triplets'])} triplets of differently-labelled evaluation images "
      "(Somepalli et al. 2022; Ojha et al. Table 1).",
    ]
    if self.name in ctx.figures:
      L += ["", f"![Decision regions on the first plane]({ctx.figures[self.name]})"]
    return L
