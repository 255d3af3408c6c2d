"""Probe ``shift``: agreement of two shifted crops (Ojha et al., NeurIPS 2023, App. 11.4;
methods.md §6.3.3; the paper distils an anti-aliased ResNet50 into a plain ResNet18): the share
of evaluation images with the same top-1 class on two ``H x W`` crops taken at independent
uniform offsets in ``[0, m]`` of a ``(H + m) x (W + m)`` region, ``m`` the maximum shift.

The paper crops the 224 + m centre of a resized ImageNet image (m = 8 / 16 / 24 / 32 px). The
evaluation arrays here are already ``H x W``, so the ``(H + m)`` region is the image padded by
``m // 2`` before and ``m − m // 2`` after each spatial axis (``pad_mode``: ``'reflect'`` by
default, or ``'edge'`` / ``'constant'`` zeros), which replaces the surrounding image content by
padding (our adaptation). Shifts are given as fractions of the image side (default
8/224 … 32/224, the paper's pixels at 224), rounded to at least 1 pixel. One jitted kernel per
shift makes both views of a padded batch from ``fold_in(fold_in(seed, shift index), batch)``.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from kdjax import checks
from kdjax.analysis.probes import base
from kdjax.errors import UserError

__all__ = ["shifted_pairs", "Shift"]

_PAD_MODES = ("reflect", "edge", "constant")


@functools.partial(jax.jit, static_argnames=("max_shift", "pad_mode", "num_views"))
def shifted_pairs(images, key, *, max_shift: int, pad_mode: str = "reflect", num_views: int = 2):
  """``(num_views, B, H, W, C)`` float32 crops of the padded ``(H + m, W + m)`` images at uniform
  offsets in ``[0, m]`` per axis, independent per view and example (``m = max_shift``)."""
  x = jnp.asarray(images, jnp.float32)
  b, h, w, c = x.shape
  m = int(max_shift)
  lo = m // 2
  xp = jnp.pad(x, ((0, 0), (lo, m - lo), (lo, m - lo), (0, 0)), mode=pad_mode)
  off = jax.random.randint(key, (num_views, b, 2), 0, m + 1)

  def one(img, o):
    return jax.lax.dynamic_slice(img, (o[0], o[1], 0), (h, w, c))

  return jax.vmap(jax.vmap(one), in_axes=(None, 0))(xp, off)


def shift_pixels(frac: float, size: int) -> int:
  """A shift given as a fraction of the image side, in pixels (at least 1)."""
  return max(1, int(round(float(frac) * size)))


@base.register("shift", order=56)
class Shift(base.Probe):
  title = "Shift agreement"

  @classmethod
  def defaults(cls):
    return {"shifts": (8 / 224, 16 / 224, 24 / 224, 32 / 224), "pad_mode": "reflect"}

  def __init__(self, name, settings):
    super().__init__(name, settings)
    if self.settings["pad_mode"] not in _PAD_MODES:
      raise UserError(
        f"probe {name!r}: pad_mode must be one of {_PAD_MODES}, got {self.settings['pad_mode']!r}."
      )
    if not self.settings["shifts"]:
      raise UserError(f"probe {name!r}: shifts must be a non-empty list of fractions.")
    for i, s in enumerate(self.settings["shifts"]):
      checks.in_range(
        f"probe {name!r}: shifts[{i}] (a fraction of the image side)",
        s,
        0,
        1,
        open_lo=True,
        open_hi=True,
      )

  def compute(self, ctx):
    size = int(min(ctx.images.shape[1:3]))
    px = [shift_pixels(s, size) for s in self.settings["shifts"]]
    mode = self.settings["pad_mode"]
    rng = jax.random.PRNGKey(int(ctx.seed))
    bs, sp = ctx.batch_size, ctx.spans()
    agree = {r.name: [] for r in ctx.runs}
    with ctx.bar(len(px) * len(sp), self.name) as bar:
      for si, m in enumerate(px):
        same = {r.name: [] for r in ctx.runs}
        for j, (a, b) in enumerate(sp):
          xb = base.pad_to(ctx.images[a:b], bs)
          v = np.asarray(
            shifted_pairs(
              xb, jax.random.fold_in(jax.random.fold_in(rng, si), j), max_shift=m, pad_mode=mode
            )
          )
          for r in ctx.runs:
            p1 = ctx.predict(r, v[0]).argmax(-1)[: b - a]
            p2 = ctx.predict(r, v[1]).argmax(-1)[: b - a]
            same[r.name].append(p1 == p2)
          bar.update()
        for r in ctx.runs:
          agree[r.name].append(100.0 * float(np.mean(np.concatenate(same[r.name]))))
    ind = agree[ctx.independent.name]
    for d in ctx.distilled:
      ctx.direct(
        self.name,
        f"distilled shifted-pair agreement (max shift {px[-1]} px) > independent",
        d.name,
        agree[d.name][-1],
        ind[-1],
        lambda x, y: x > y,
      )
    return {"shift_pixels": px, "pad_mode": mode, "agreement": agree}

  def markdown(self, ctx, result):
    L = [
      base.table(
        ["model \\ max shift (px)"] + [str(p) for p in result["shift_pixels"]],
        [[r.name] + result["agreement"][r.name] for r in ctx.runs],
        nd=1,
      )
    ]
    L += [
      "",
      "Share (%) of images with the same top-1 class on two crops shifted by up to the "
      f"given number of pixels (Ojha et al. App. 11.4; images padded with "
      f"'{result['pad_mode']}' in place of the surrounding content).",
    ]
    return L
