"""Probe ``cues``: shifted and cue-conflict sets built by :mod:`kdjax.analysis.cues` (and optional
external TFDS sets): accuracy of each model and the teacher–student consensus score
(methods.md §6.3.4), shape bias on the cue-conflict set (§6.3.5).

The sets are built on the host (NumPy, deterministic from the seed); every model classifies them
through :func:`kdjax.eval.predict_logits` (fixed-size padded batches, one compiled forward).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from kdjax.analysis import cues as cues_lib
from kdjax.analysis.probes import base
from kdjax.errors import UserError


def _accepts(run, shape) -> bool:
  try:
    jax.eval_shape(
      lambda v, z: run.module.apply(v, z, train=False),
      run.variables,
      jax.ShapeDtypeStruct(shape, jnp.float32),
    )
    return True
  except Exception:  # noqa: BLE001  (shape errors from flax come in many types)
    return False


@base.register("cues", order=60)
class Cues(base.Probe):
  title = "Cues and domain shift"

  @classmethod
  def defaults(cls):
    return {
      "sets": cues_lib.CUE_SETS,  # names from kdjax.analysis.cues.CUE_SETS
      "noise_sigma": 0.2,
      "blur_sigma": 1.5,
      "tint_strength": 0.6,
      "ood_sets": (),  # external TFDS sets 'NAME[:SPLIT]' with the models' labels
      "ood_data_dir": "",
    }

  def __init__(self, name, settings):
    super().__init__(name, settings)
    unknown = [s for s in self.settings["sets"] if s not in cues_lib.CUE_SETS]
    if unknown:
      raise UserError(
        f"unknown cue sets {unknown} in probe {name!r}; known: {', '.join(cues_lib.CUE_SETS)}"
      )

  def check(self, setup):
    for spec in self.settings["ood_sets"] or ():
      nm, _, split = str(spec).partition(":")
      cues_lib.load_tfds_set(
        nm,
        split or "test",
        data_dir=self.settings["ood_data_dir"] or None,
        limit=1,
        purpose=f"the unseen-domain set {spec!r} (probe {self.name!r})",
      )

  def compute(self, ctx):
    cfg = self.settings
    x = ctx.images
    accepts_rgb = x.shape[-1] == 3 or all(_accepts(r, (1,) + x.shape[1:3] + (3,)) for r in ctx.runs)
    sets, skipped = cues_lib.build_shifted_sets(
      x,
      ctx.labels,
      num_classes=ctx.num_classes,
      names=tuple(cfg["sets"]),
      accepts_rgb=accepts_rgb,
      noise_sigma=cfg["noise_sigma"],
      blur_sigma=cfg["blur_sigma"],
      tint_strength=cfg["tint_strength"],
      seed=int(ctx.seed),
    )
    for spec in cfg["ood_sets"] or ():
      nm, _, split = str(spec).partition(":")
      ext = cues_lib.load_tfds_set(
        nm,
        split or "test",
        data_dir=cfg["ood_data_dir"] or None,
        limit=ctx.num_examples,
        image_shape=x.shape[1:],
        purpose=f"the unseen-domain set {spec!r} (probe 'cues')",
      )
      if ext["labels"].max() >= ctx.num_classes:
        raise UserError(
          f"{spec!r} has labels outside the models' {ctx.num_classes} classes; "
          "it must share the training label space"
        )
      sets[f"ext:{spec}"] = cues_lib.ShiftedSet(
        f"ext:{spec}", ext["images"], ext["labels"], note="external TFDS set"
      )
    res, shape_bias = {}, {}
    with ctx.bar(len(sets) * len(ctx.runs), self.name) as bar:
      for name, s in sets.items():
        pred = {}
        for r in ctx.runs:
          pred[r.name] = ctx.predict(r, s.images).argmax(-1)
          bar.update()
        tp = pred[ctx.teacher.name]
        res[name] = {
          "note": s.note,
          "num_examples": int(len(s.labels)),
          "accuracy": {k: 100.0 * float(np.mean(p == s.labels)) for k, p in pred.items()},
          "agreement": {
            st.name: 100.0 * float(np.mean(pred[st.name] == tp)) for st in ctx.students
          },
        }
        if s.texture_labels is not None:
          conflict = s.texture_labels != s.labels
          for k, p in pred.items():
            sh = int(np.sum((p == s.labels) & conflict))
            tx = int(np.sum((p == s.texture_labels) & conflict))
            shape_bias[k] = sh / (sh + tx) if sh + tx else float("nan")
        for d in ctx.distilled:
          ctx.direct(
            self.name,
            f"{name}: distilled consensus with teacher > independent",
            d.name,
            res[name]["agreement"][d.name],
            res[name]["agreement"][ctx.independent.name],
            lambda a, b: a > b,
          )
    if shape_bias:
      tb = shape_bias[ctx.teacher.name]
      for d in ctx.distilled:
        ctx.direct(
          self.name,
          "distilled shape bias closer to the teacher's than independent (|SB_S − SB_T|)",
          d.name,
          abs(shape_bias[d.name] - tb),
          abs(shape_bias[ctx.independent.name] - tb),
          lambda a, b: a < b,
        )
    return {"sets": res, "skipped": skipped, "shape_bias": shape_bias}

  def figures(self, ctx, result):
    sets = list(result["sets"])
    if not sets:
      return
    fig, axes = base.figure(2, 1, size=(11, 3.8))
    base.grouped_bars(
      axes[0, 0],
      sets,
      {r.name: [result["sets"][s]["accuracy"][r.name] for s in sets] for r in ctx.runs},
      "accuracy (%)",
      ctx.colors(),
    )
    axes[0, 0].set_title("Accuracy on shifted sets")
    base.grouped_bars(
      axes[0, 1],
      sets,
      {r.name: [result["sets"][s]["agreement"][r.name] for s in sets] for r in ctx.students},
      "agreement with teacher (%)",
      ctx.colors(),
    )
    axes[0, 1].set_title("Consensus with teacher")
    for ax in axes[0]:
      ax.set_ylim(0, 100)
    ctx.save_figure(fig, self.name, self.figure_name("shifted_accuracy.png"))

  def markdown(self, ctx, result):
    names = [s.name for s in ctx.students]
    sets = list(result["sets"])
    sec = result["sets"]
    L = [
      base.table(
        ["set", "note"] + [f"acc {r.name}" for r in ctx.runs] + [f"agree {n}" for n in names],
        [
          [s, sec[s]["note"]]
          + [sec[s]["accuracy"][r.name] for r in ctx.runs]
          + [sec[s]["agreement"][n] for n in names]
          for s in sets
        ],
        nd=1,
      )
    ]
    for s, why in result["skipped"].items():
      L += ["", f"- `{s}`: {why}."]
    if result["shape_bias"]:
      L += [
        "",
        "Shape bias on the cue-conflict set (#shape / (#shape + #texture)):",
        "",
        base.table(
          ["model", "shape bias"], [[k, v] for k, v in result["shape_bias"].items()], nd=3
        ),
      ]
    if self.name in ctx.figures:
      L += ["", f"![Shifted sets]({ctx.figures[self.name]})"]
    return L
