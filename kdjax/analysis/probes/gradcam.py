"""Probe ``gradcam``: Grad-CAM of the ground-truth class at each model's last stage; Spearman,
top-20 % IoU and cosine with the teacher's map, and Ojha et al.'s preference share
``P[cos(T, distilled) > cos(T, independent)]`` (50 % is chance; methods.md §6.3.1).

One jitted Grad-CAM kernel per model (:func:`kdjax.analysis.gradcam.gradcam`: the stem and stages
forward, one VJP of the head for the whole batch), over fixed-size padded batches.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from kdjax.analysis.gradcam import cam_agreement, cam_preference, gradcam
from kdjax.analysis.probes import base
from kdjax.errors import UserError


@base.register("gradcam", order=30)
class GradCAM(base.Probe):
  title = "Grad-CAM"

  @classmethod
  def defaults(cls):
    return {"num_overlays": 4}  # images in the overlay figure

  def _cams(self, ctx, run, bar) -> np.ndarray:
    bs, out = ctx.batch_size, []
    for a, b in ctx.spans():
      xb = ctx.normalize(base.pad_to(ctx.images[a:b], bs))
      yb = base.pad_to(ctx.labels[a:b], bs)
      out.append(
        np.asarray(gradcam(run.module, run.variables, xb, stage=run.num_stages, class_idx=yb))[
          : b - a
        ]
      )
      bar.update()
    return np.concatenate(out)

  def compute(self, ctx):
    bad = [r.name for r in ctx.runs if not r.num_stages]
    if bad:
      raise UserError(
        f"Grad-CAM needs models following the kdjax block protocol "
        f"(num_stages, apply_stage); {bad} do not. Drop the 'gradcam' probe."
      )
    with ctx.bar(len(ctx.spans()) * len(ctx.runs), self.name) as bar:
      cams = {r.name: self._cams(ctx, r, bar) for r in ctx.runs}
    t = cams[ctx.teacher.name]
    st = {}
    for s in ctx.students:
      m = {k: np.asarray(v) for k, v in cam_agreement(t, cams[s.name], size=t.shape[1:]).items()}
      st[s.name] = {
        "spearman": base.nanmean(m["spearman"]),
        "iou_top": base.nanmean(m["iou_top"]),
        "cosine": base.nanmean(m["cosine"]),
        "undefined_spearman": int(np.sum(np.isnan(m["spearman"]))),
      }
    ind = cams[ctx.independent.name]
    pref = {d.name: 100.0 * float(cam_preference(t, cams[d.name], ind)) for d in ctx.distilled}
    for d in ctx.distilled:
      ctx.direct(
        self.name,
        "preference share cos(T,D) > cos(T,I) above 50 % (chance)",
        d.name,
        pref[d.name],
        50.0,
        lambda a, b: a > b,
      )
      ctx.direct(
        self.name,
        "distilled CAM cosine with teacher > independent",
        d.name,
        st[d.name]["cosine"],
        st[ctx.independent.name]["cosine"],
        lambda a, b: a > b,
      )
    k = min(int(self.settings["num_overlays"]), len(ctx.labels))
    self._overlay_cams = {n: c[:k] for n, c in cams.items()}
    return {
      "stage": {r.name: r.num_stages for r in ctx.runs},
      "class": "ground-truth label",
      "students": st,
      "preference": pref,
      "num_images": int(len(ctx.labels)),
    }

  def figures(self, ctx, result):
    del result
    cams = self._overlay_cams
    k = len(next(iter(cams.values())))
    if k < 1:
      return
    cols = [ctx.teacher] + ctx.distilled + [ctx.independent]
    fig, axes = base.figure(len(cols) + 1, k, size=(1.8 * (len(cols) + 1), 1.9 * k))
    h, w = ctx.images.shape[1:3]
    up = {
      n: np.asarray(jax.image.resize(jnp.asarray(c), (k, h, w), "bilinear"))
      for n, c in cams.items()
    }
    for i in range(k):
      img = ctx.images[i].astype(np.float32) / 255.0
      show = img[..., 0] if img.shape[-1] == 1 else img
      cmap = "gray" if img.shape[-1] == 1 else None
      axes[i, 0].imshow(show, cmap=cmap)
      axes[i, 0].set_title(f"input (y={int(ctx.labels[i])})", fontsize=7)
      for j, r in enumerate(cols, start=1):
        axes[i, j].imshow(show, cmap=cmap)
        axes[i, j].imshow(up[r.name][i], cmap="jet", alpha=0.5, vmin=0, vmax=1)
        axes[i, j].set_title(f"{r.name} ({r.role[0].upper()})", fontsize=7)
      for ax in axes[i]:
        ax.axis("off")
    ctx.save_figure(fig, self.name, self.figure_name("gradcam_overlays.png"))

  def markdown(self, ctx, result):
    st = result["students"]
    L = [
      base.table(
        ["student", "role", "Spearman", "IoU top-20 %", "cosine", "preference (%)"],
        [
          [
            s.name,
            s.role,
            st[s.name]["spearman"],
            st[s.name]["iou_top"],
            st[s.name]["cosine"],
            result["preference"].get(s.name),
          ]
          for s in ctx.students
        ],
        nd=3,
      )
    ]
    stages = ", ".join(f"{k}: stage {v}" for k, v in result["stage"].items())
    L += [
      "",
      f"Grad-CAM of the ground-truth class at each model's last stage ({stages}), "
      f"{result['num_images']} images; preference = % of images with "
      "cos(T, distilled) > cos(T, independent) (50 % is chance).",
    ]
    if self.name in ctx.figures:
      L += ["", f"![Grad-CAM overlays]({ctx.figures[self.name]})"]
    return L
