"""Probe ``invariance``: colour-jitter agreement score (share of predictions unchanged;
Ojha et al., methods.md §6.3.3), the same jittered views for every model. On 1-channel data only
brightness and contrast apply.

The views of batch ``j`` (fixed size ``batch_size``, padded) are jittered by one jitted kernel
(:func:`kdjax.analysis.invariance.color_jitter`) with key ``fold_in(fold_in(seed, view), j)``;
every model classifies them through :func:`kdjax.eval.predict_logits`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from kdjax.analysis.invariance import color_jitter
from kdjax.analysis.probes import base
from kdjax.errors import UserError

JITTER_KEYS = ("brightness", "contrast", "saturation", "hue")
#: Ojha et al.'s colour-jitter teacher: brightness/contrast/saturation ~ U[0, 0.4], hue ~ U[0, 0.2].
PAPER_JITTER = {"brightness": 0.4, "contrast": 0.4, "saturation": 0.4, "hue": 0.2}


def mag_label(m) -> str:
  return " ".join(f"{k[0]}{m.get(k, 0.0):g}" for k in JITTER_KEYS)


@base.register("invariance", order=50)
class Invariance(base.Probe):
  title = "Invariance"

  @classmethod
  def defaults(cls):
    # magnitude dicts; the first is the one the direction sentence uses
    return {"jitter": (dict(PAPER_JITTER),), "views": 1}

  def __init__(self, name, settings):
    super().__init__(name, settings)
    for m in self.settings["jitter"]:
      extra = set(dict(m)) - set(JITTER_KEYS)
      if extra:
        raise UserError(
          f"unknown jitter keys {sorted(extra)} in probe {name!r}; use {', '.join(JITTER_KEYS)}"
        )

  def compute(self, ctx):
    mags = [
      dict({k: 0.0 for k in JITTER_KEYS}, **{k: float(v) for k, v in dict(m).items()})
      for m in self.settings["jitter"]
    ]
    grey = ctx.images.shape[-1] == 1
    eff = [dict(m, saturation=0.0, hue=0.0) if grey else dict(m) for m in mags]
    note = (
      "Grayscale data: only brightness and contrast apply (saturation and hue are the "
      "identity on one channel)."
      if grey
      else "RGB data: brightness, contrast, saturation and hue all apply."
    )
    note += (
      " The paper's effect needs a teacher trained with colour jitter and students "
      "without; with a plain teacher the scores measure inherited invariance only."
    )
    rng = jax.random.PRNGKey(int(ctx.seed))
    views = int(self.settings["views"])
    bs, sp = ctx.batch_size, ctx.spans()
    clean = {r.name: ctx.logits[r.name].argmax(-1) for r in ctx.runs}
    cons = {r.name: [] for r in ctx.runs}
    with ctx.bar(len(eff) * len(sp) * views, self.name) as bar:
      for m in eff:
        agree = {r.name: [] for r in ctx.runs}
        for j, (a, b) in enumerate(sp):
          x01 = jnp.asarray(base.pad_to(ctx.images[a:b], bs), jnp.float32) / 255.0
          for v in range(views):
            key = jax.random.fold_in(jax.random.fold_in(rng, v), j)
            xj = color_jitter(x01, key, **m) * 255.0
            for r in ctx.runs:
              p = ctx.predict(r, xj).argmax(-1)[: b - a]
              agree[r.name].append(p == clean[r.name][a:b])
            bar.update()
        for r in ctx.runs:
          cons[r.name].append(100.0 * float(np.mean(np.concatenate(agree[r.name]))))
    ind = cons[ctx.independent.name]
    for d in ctx.distilled:
      ctx.direct(
        self.name,
        f"distilled colour consistency ({mag_label(eff[0])}) > independent",
        d.name,
        cons[d.name][0],
        ind[0],
        lambda a, b: a > b,
      )
    return {
      "magnitudes": mags,
      "effective": eff,
      "labels": [mag_label(m) for m in eff],
      "views": views,
      "note": note,
      "consistency": cons,
    }

  def figures(self, ctx, result):
    fig, axes = base.figure(1, 1, size=(6, 3.6))
    base.grouped_bars(
      axes[0, 0], result["labels"], result["consistency"], "prediction unchanged (%)", ctx.colors()
    )
    axes[0, 0].set_ylim(0, 100)
    axes[0, 0].set_title("Colour-jitter consistency")
    ctx.save_figure(fig, self.name, self.figure_name("consistency.png"))

  def markdown(self, ctx, result):
    L = [
      base.table(
        ["model \\ jitter"] + result["labels"],
        [[r.name] + result["consistency"][r.name] for r in ctx.runs],
        nd=1,
      )
    ]
    L += [
      "",
      f"Agreement score (% of predictions unchanged), {result['views']} view(s) per "
      f"image. {result['note']}",
    ]
    if self.name in ctx.figures:
      L += ["", f"![Consistency]({ctx.figures[self.name]})"]
    return L
