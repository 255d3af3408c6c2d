"""Probe ``crop``: agreement of two random crops (Ojha et al., NeurIPS 2023, App. 11.3;
methods.md §6.3.3): the share of evaluation images whose top-1 prediction is the same on two
independent random crops covering a fraction ``s`` of the image area, ``s`` in 0.3-0.6 (the
paper's teacher trained with crops covering 8-100 %, the students with centre crop + flip).

Each view is a square-aspect crop of ``round(sqrt(s) H) x round(sqrt(s) W)`` pixels at a uniform
random position, resized back to ``H x W`` (bilinear, :func:`jax.image.resize`), as
torchvision's ``RandomResizedCrop(scale=(s, s), ratio=(1, 1))`` (our reading: the paper gives
the scales, not the aspect ratio). One jitted kernel makes both views of a fixed-size (padded)
batch from the key ``fold_in(fold_in(seed, scale index), batch index)``; the same views for every
model.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from kdjax import checks
from kdjax.analysis.probes import base
from kdjax.errors import UserError

__all__ = ["random_resized_crops", "Crop"]


@functools.partial(jax.jit, static_argnames=("scale", "num_views"))
def random_resized_crops(images, key, *, scale: float, num_views: int = 2):
  """``(num_views, B, H, W, C)`` float32: per view and example, a random crop of area fraction
  ``scale`` (aspect 1 relative to the image) resized back to ``H x W``."""
  x = jnp.asarray(images, jnp.float32)
  b, h, w, c = x.shape
  ch = max(1, min(h, int(round(math.sqrt(scale) * h))))
  cw = max(1, min(w, int(round(math.sqrt(scale) * w))))
  ky, kx = jax.random.split(key)
  oy = jax.random.randint(ky, (num_views, b), 0, h - ch + 1)
  ox = jax.random.randint(kx, (num_views, b), 0, w - cw + 1)

  def one(img, y0, x0):
    crop = jax.lax.dynamic_slice(img, (y0, x0, 0), (ch, cw, c))
    return jax.image.resize(crop, (h, w, c), method="bilinear")

  per_view = jax.vmap(one, in_axes=(0, 0, 0))
  return jax.vmap(per_view, in_axes=(None, 0, 0))(x, oy, ox)


@base.register("crop", order=55)
class Crop(base.Probe):
  title = "Crop agreement"

  @classmethod
  def defaults(cls):
    return {"scales": (0.3, 0.4, 0.5, 0.6)}

  def __init__(self, name, settings):
    super().__init__(name, settings)
    if not self.settings["scales"]:
      raise UserError(f"probe {name!r}: scales must be a non-empty list of area fractions.")
    for i, s in enumerate(self.settings["scales"]):
      checks.in_range(f"probe {name!r}: scales[{i}] (an area fraction)", s, 0, 1, open_lo=True)

  def compute(self, ctx):
    scales = [float(s) for s in self.settings["scales"]]
    rng = jax.random.PRNGKey(int(ctx.seed))
    bs, sp = ctx.batch_size, ctx.spans()
    agree = {r.name: [] for r in ctx.runs}
    with ctx.bar(len(scales) * len(sp), self.name) as bar:
      for si, s in enumerate(scales):
        same = {r.name: [] for r in ctx.runs}
        for j, (a, b) in enumerate(sp):
          xb = base.pad_to(ctx.images[a:b], bs)
          v = np.asarray(
            random_resized_crops(xb, jax.random.fold_in(jax.random.fold_in(rng, si), j), scale=s)
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
        f"distilled two-crop agreement (scale {scales[0]:g}) > independent",
        d.name,
        agree[d.name][0],
        ind[0],
        lambda x, y: x > y,
      )
    return {"scales": scales, "agreement": agree}

  def markdown(self, ctx, result):
    L = [
      base.table(
        ["model \\ crop area"] + [f"{s:g}" for s in result["scales"]],
        [[r.name] + result["agreement"][r.name] for r in ctx.runs],
        nd=1,
      )
    ]
    L += [
      "",
      "Share (%) of images with the same top-1 class on two independent random crops "
      "of that area fraction, resized back to the input size (Ojha et al. App. 11.3). The "
      "paper's effect needs a teacher trained with wide crop scales and students without.",
    ]
    return L
