"""Probe ``cka``: linear CKA between the teacher's and each student's ``pooled`` and last-stage
taps (the unbiased minibatch estimator of Nguyen et al., ICLR 2021), accumulated over the
evaluation set batch by batch (O(batch²) memory, the taps are never all held at once).

The taps come from :func:`kdjax.eval.predict_logits` on fixed-size padded batches (one compiled
forward per model); the accumulator sees each batch at its true size, so the batches (and the
number) are those of the pre-probe implementation: every span of ``batch_size`` examples, a last
short batch included when it has at least 4 examples.
"""

from __future__ import annotations

import jax

from kdjax.analysis.cka import CKAAccumulator
from kdjax.analysis.probes import base


@jax.jit
def _update(accs, t_pooled, t_last, s_feats):
  """One batch for every student: ``accs[s] = {'pooled': acc, 'last_stage': acc}``."""
  return {
    s: {
      "pooled": a["pooled"].update(t_pooled, s_feats[s][0]),
      "last_stage": a["last_stage"].update(t_last, s_feats[s][1]),
    }
    for s, a in accs.items()
  }


@base.register("cka", order=20)
class CKA(base.Probe):
  title = "CKA"

  def compute(self, ctx):
    missing = [r.name for r in ctx.runs if not r.last_tap]
    if missing:
      ctx.notes.append(f"CKA skipped: no 'stageK' or 'pooled' tap in {missing}.")
      return {"skipped": "no CKA (see notes)"}
    bs = ctx.batch_size
    accs = {
      s.name: {"pooled": CKAAccumulator.create(), "last_stage": CKAAccumulator.create()}
      for s in ctx.students
    }
    sp = ctx.spans()
    with ctx.bar(len(sp), self.name) as bar:
      for a, b in sp:
        xb = base.pad_to(ctx.images[a:b], bs)
        feats = {}
        for r in ctx.runs:
          _, t = ctx.predict(r, xb, taps=("pooled", r.last_tap))
          feats[r.name] = (t["pooled"][: b - a], t[r.last_tap][: b - a])
        if b - a >= 4:
          tp, tl = feats[ctx.teacher.name]
          accs = _update(accs, tp, tl, {s.name: feats[s.name] for s in ctx.students})
        bar.update()
    cka = {
      s: {k: float(acc.result()) for k, acc in d.items()}
      | {"num_batches": int(d["pooled"].num_batches)}
      for s, d in accs.items()
    }
    ind = cka[ctx.independent.name]
    for d in ctx.distilled:
      for tap in ("pooled", "last_stage"):
        ctx.direct(
          self.name,
          f"distilled CKA({tap}) > independent",
          d.name,
          cka[d.name][tap],
          ind[tap],
          lambda a, b: a > b,
        )
    return {
      "taps": {r.name: {"pooled": "pooled", "last_stage": r.last_tap} for r in ctx.runs},
      "estimator": "unbiased minibatch linear CKA (Nguyen et al. 2021)",
      "students": cka,
    }

  def figures(self, ctx, result):
    if "students" not in result:
      return
    cka = result["students"]
    names = [s.name for s in ctx.students]
    fig, axes = base.figure(1, 1, size=(5, 3.6))
    base.grouped_bars(
      axes[0, 0],
      names,
      {
        "pooled": [cka[n]["pooled"] for n in names],
        "last stage": [cka[n]["last_stage"] for n in names],
      },
      "linear CKA with teacher",
    )
    axes[0, 0].set_title("CKA")
    ctx.save_figure(fig, self.name, self.figure_name("cka.png"))

  def markdown(self, ctx, result):
    st = result["students"]
    L = [
      base.table(
        ["student", "role", "CKA pooled", "CKA last stage", "taps (T / S)"],
        [
          [
            s.name,
            s.role,
            st[s.name]["pooled"],
            st[s.name]["last_stage"],
            f"{ctx.teacher.last_tap} / {s.last_tap}",
          ]
          for s in ctx.students
        ],
        nd=4,
      )
    ]
    L += [
      "",
      f"Estimator: {result['estimator']}, over {next(iter(st.values()))['num_batches']} batches.",
    ]
    if self.name in ctx.figures:
      L += ["", f"![CKA]({ctx.figures[self.name]})"]
    return L
