"""Probe ``agreement``: top-1 agreement with the teacher, KL(T ‖ S), JS, per-class agreement.

Ojha et al. (NeurIPS 2023), methods.md §6.5 ("KL fidelity"); computed from the clean logits of
:attr:`Context.logits` (no model call of its own).
"""

from __future__ import annotations

import numpy as np

from kdjax.analysis.agreement import js_divergence, kl_divergence
from kdjax.analysis.probes import base


@base.register("agreement", order=10)
class Agreement(base.Probe):
  title = "Agreement"

  def compute(self, ctx):
    y = ctx.labels
    t = ctx.logits[ctx.teacher.name]
    acc = {r.name: 100.0 * float(np.mean(ctx.logits[r.name].argmax(-1) == y)) for r in ctx.runs}
    st = {}
    for s in ctx.students:
      lg = ctx.logits[s.name]
      same = lg.argmax(-1) == t.argmax(-1)
      per_class = [
        100.0 * float(np.mean(same[y == c])) if np.any(y == c) else float("nan")
        for c in range(ctx.num_classes)
      ]
      st[s.name] = {
        "agreement": 100.0 * float(np.mean(same)),
        "kl": float(np.mean(np.asarray(kl_divergence(t, lg)))),
        "js": float(np.mean(np.asarray(js_divergence(t, lg)))),
        "per_class_agreement": per_class,
      }
    ind = st[ctx.independent.name]
    for d in ctx.distilled:
      ctx.direct(
        self.name,
        "distilled top-1 agreement > independent",
        d.name,
        st[d.name]["agreement"],
        ind["agreement"],
        lambda a, b: a > b,
      )
      ctx.direct(
        self.name,
        "distilled KL(T‖S) < independent",
        d.name,
        st[d.name]["kl"],
        ind["kl"],
        lambda a, b: a < b,
      )
    return {"accuracy": acc, "students": st}

  def figures(self, ctx, result):
    names = [s.name for s in ctx.students]
    fig, axes = base.figure(1, 1, size=(5, 3.6))
    ax = axes[0, 0]
    ax.bar(
      names,
      [result["students"][n]["agreement"] for n in names],
      color=[ctx.colors()[n] for n in names],
    )
    ax.set_ylabel("top-1 agreement with teacher (%)")
    ax.set_ylim(0, 100)
    ax.set_title("Agreement")
    ctx.save_figure(fig, self.name, self.figure_name("agreement.png"))

  def markdown(self, ctx, result):
    names = [s.name for s in ctx.students]
    st = result["students"]
    L = [
      base.table(
        ["model", "role", "accuracy (%)", "agreement (%)", "KL(T‖S)", "JS"],
        [[ctx.teacher.name, "teacher", result["accuracy"][ctx.teacher.name], 100.0, 0.0, 0.0]]
        + [
          [
            s.name,
            s.role,
            result["accuracy"][s.name],
            st[s.name]["agreement"],
            st[s.name]["kl"],
            st[s.name]["js"],
          ]
          for s in ctx.students
        ],
        nd=3,
      )
    ]
    if self.name in ctx.figures:
      L += ["", f"![Agreement]({ctx.figures[self.name]})"]
    k = len(next(iter(st.values()))["per_class_agreement"])
    L += [
      "",
      "Per-class agreement (%):",
      "",
      base.table(
        ["class"] + names,
        [[c] + [st[n]["per_class_agreement"][c] for n in names] for c in range(k)],
        nd=1,
      ),
    ]
    return L
