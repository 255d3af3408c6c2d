"""Probe ``adversarial``: I-FGSM / PGD and FGSM crafted on the **teacher** at each ε (``[0, 1]``
pixel units, via the dataset's per-channel mean / std); fooling rate of the teacher and of each
student, and Ojha et al.'s transfer rate (among images both get right that fool the teacher,
the share that also fool the student; methods.md §6.3.2).

Per fixed-size padded batch, one jitted kernel (:func:`kdjax.analysis.adversarial.attack_sweep`)
makes every attack at every radius (the first sign-gradient shared by all of them, ε = 0 without
gradients); every model then classifies the adversarial images through
:func:`kdjax.eval.predict_logits`.
"""

from __future__ import annotations

import numpy as np

from kdjax.analysis.adversarial import attack_sweep
from kdjax.analysis.probes import base
from kdjax.errors import UserError

ATTACKS = ("pgd", "fgsm")


def _rate(num, den) -> float:
  """``100 · Σ num / Σ den`` (NaN for an empty denominator)."""
  d = int(np.sum(den))
  return 100.0 * float(np.sum(num)) / d if d else float("nan")


@base.register("adversarial", order=40)
class Adversarial(base.Probe):
  title = "Adversarial transfer"

  @classmethod
  def defaults(cls):
    return {
      "eps_list": (0.0, 1 / 255, 2 / 255, 4 / 255, 8 / 255),  # [0, 1] pixel units
      "pgd_steps": 10,
      "pgd_step_frac": 0.25,  # step = frac * eps; 0 or None = 1 / pgd_steps (I-FGSM)
      "attacks": ATTACKS,
    }

  def __init__(self, name, settings):
    super().__init__(name, settings)
    bad = [a for a in self.settings["attacks"] if a not in ATTACKS]
    if bad:
      raise UserError(f"unknown attack(s) {bad} in probe {name!r}; use 'pgd' and/or 'fgsm'")

  def compute(self, ctx):
    eps_list = [float(e) for e in self.settings["eps_list"]]
    steps, frac = int(self.settings["pgd_steps"]), self.settings["pgd_step_frac"]
    frac = 1.0 / max(steps, 1) if not frac else float(frac)
    attacks = tuple(self.settings["attacks"])
    info, teacher, bs, y = ctx.info, ctx.teacher, ctx.batch_size, ctx.labels
    clean_ok = {r.name: ctx.logits[r.name].argmax(-1) == y for r in ctx.runs}
    n_eps = len(eps_list)
    # Every reported rate counts only images some model classifies correctly when clean; the
    # others are not attacked (their adversarial predictions would enter no number).
    attacked = np.flatnonzero(np.any([clean_ok[r.name] for r in ctx.runs], axis=0))
    # preds[attack][model]: (E, N) predicted classes on the adversarial images (-1: not attacked)
    preds = {a: {r.name: np.full((n_eps, len(y)), -1, np.int64) for r in ctx.runs} for a in attacks}
    sp = base.spans(len(attacked), bs)
    with ctx.bar(len(sp), self.name) as bar:
      for a, b in sp:
        rows = attacked[a:b]
        xb = ctx.normalize(base.pad_to(ctx.images[rows], bs))
        yb = base.pad_to(y[rows], bs)
        xp, xf = attack_sweep(
          teacher.module,
          teacher.variables,
          xb,
          yb,
          eps_list=eps_list,
          steps=steps if "pgd" in attacks else 0,
          step_size_frac=frac,
          fgsm="fgsm" in attacks,
          pixel_std=info.std,
          pixel_mean=info.mean,
        )
        adv = {"pgd": xp, "fgsm": xf}
        for r in ctx.runs:
          done = {}  # eps = 0 gives the same images for both attacks: classify them once
          for atk in attacks:
            for j in range(n_eps):
              key = ("any", j) if eps_list[j] == 0 else (atk, j)
              if key not in done:
                done[key] = ctx.predict(r, adv[atk][j], pixels=False).argmax(-1)[: b - a]
              preds[atk][r.name][j, rows] = done[key]
        bar.update()
    out = {
      "eps": eps_list,
      "eps_255": [e * 255 for e in eps_list],
      "pgd_steps": steps,
      "pgd_step_frac": frac,
      "units": "[0, 1] pixels (per-channel std/mean of the dataset)",
      "crafted_on": "teacher",
      "num_attacked": int(len(attacked)),
      "attacks": {},
    }
    for attack in attacks:
      res = {
        "teacher_fooling_rate": [],
        "fooling_rate": {s.name: [] for s in ctx.students},
        "transfer_rate": {s.name: [] for s in ctx.students},
        "num_teacher_fooled": {s.name: [] for s in ctx.students},
      }
      adv_ok_all = {k: v == y for k, v in preds[attack].items()}
      for j in range(n_eps):
        adv_ok = {k: v[j] for k, v in adv_ok_all.items()}
        t_ok, t_adv = clean_ok[teacher.name], adv_ok[teacher.name]
        res["teacher_fooling_rate"].append(_rate(t_ok & ~t_adv, t_ok))
        for s in ctx.students:
          s_ok, s_adv = clean_ok[s.name], adv_ok[s.name]
          fooled_t = t_ok & s_ok & ~t_adv
          res["fooling_rate"][s.name].append(_rate(s_ok & ~s_adv, s_ok))
          res["transfer_rate"][s.name].append(_rate(fooled_t & ~s_adv, fooled_t))
          res["num_teacher_fooled"][s.name].append(int(np.sum(fooled_t)))
      out["attacks"][attack] = res
    # Direction at the paper's ε = 8/255 when swept, else at the largest ε.
    ref = min(range(n_eps), key=lambda j: abs(eps_list[j] - 8 / 255))
    out["reference_eps_index"] = ref
    for attack, res in out["attacks"].items():
      for d in ctx.distilled:
        ctx.direct(
          self.name,
          f"{attack} ε={eps_list[ref] * 255:g}/255 crafted on T: "
          f"distilled transfer rate > independent",
          d.name,
          res["transfer_rate"][d.name][ref],
          res["transfer_rate"][ctx.independent.name][ref],
          lambda a, b: a > b,
        )
    return out

  def figures(self, ctx, result):
    atks = list(result["attacks"])
    if not atks:
      return
    fig, axes = base.figure(len(atks), 1, size=(5 * len(atks), 3.8))
    e = np.asarray(result["eps_255"])
    col = ctx.colors()
    for ax, atk in zip(axes[0], atks):
      res = result["attacks"][atk]
      ax.plot(
        e,
        res["teacher_fooling_rate"],
        "-o",
        color=col[ctx.teacher.name],
        label="teacher (white-box)",
      )
      for s in ctx.students:
        ax.plot(e, res["fooling_rate"][s.name], "-o", color=col[s.name], label=f"{s.name} fooling")
        ax.plot(
          e, res["transfer_rate"][s.name], "--x", color=col[s.name], label=f"{s.name} transfer"
        )
      ax.set_xlabel("ε (/255)")
      ax.set_ylabel("%")
      ax.set_ylim(-2, 102)
      ax.set_title(f"{atk} crafted on teacher")
      ax.legend(fontsize=6)
    ctx.save_figure(fig, self.name, self.figure_name("adversarial_transfer.png"))

  def markdown(self, ctx, result):
    L = []
    eps = result["eps_255"]
    for atk, res in result["attacks"].items():
      L += [
        f"### {atk} ({result['pgd_steps']} steps of {result['pgd_step_frac']:.3g}·ε)"
        if atk == "pgd"
        else f"### {atk}",
        "",
      ]
      rows = [["teacher (fooling)"] + res["teacher_fooling_rate"]]
      for s in ctx.students:
        rows.append([f"{s.name} (fooling)"] + res["fooling_rate"][s.name])
        rows.append([f"{s.name} (transfer)"] + res["transfer_rate"][s.name])
      L += [base.table(["model \\ ε (/255)"] + [f"{e:g}" for e in eps], rows, nd=1), ""]
    L += [
      "Fooling rate: % of the images the model classifies correctly that the attack "
      "(crafted on the teacher) flips. Transfer rate (paper): among images that teacher "
      "and student both get right and that fool the teacher, % that also fool the "
      f"student. ε in {result['units']}."
    ]
    if self.name in ctx.figures:
      L += ["", f"![Adversarial transfer]({ctx.figures[self.name]})"]
    return L
