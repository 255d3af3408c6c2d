"""What gets distilled: the analysis suite over saved checkpoints (Ojha et al., NeurIPS 2023).

methods.md §6: beyond accuracy, distillation transfers implicit properties of the teacher. Given a
teacher run, one or more distilled student runs and an independently trained student run (all
``kdjax`` workdirs on the same dataset), :func:`analyze` compares every student (each distilled one
**and** the independent one) with the teacher on the evaluation split and writes
``report.md``, ``report.json`` and PNG figures to ``out_dir``.

Probes (``probes=``):

* ``agreement``: top-1 agreement with the teacher, mean KL(T ‖ S) and JS, per-class agreement.
* ``cka``: linear CKA (unbiased minibatch estimator of Nguyen et al. 2021) between the teacher's
  and the student's ``pooled`` taps and last-stage taps, accumulated over the evaluation set.
* ``gradcam``: Grad-CAM of the ground-truth class at each model's last stage; Spearman, top-20 %
  IoU and cosine with the teacher's map, and the paper's preference share
  ``P[cos(T, distilled) > cos(T, independent)]`` (50 % is chance; §6.3.1).
* ``adversarial``: PGD / I-FGSM and FGSM crafted on the **teacher** for each ε (``[0, 1]`` pixel
  units, via the dataset's per-channel mean/std); fooling rate of the teacher and of each student,
  and the paper's transfer rate (among images both get right that fool the teacher, the share that
  also fool the student; §6.3.2).
* ``invariance``: colour-jitter agreement score (share of predictions unchanged; §6.3.3), same
  jittered views for every model. On 1-channel data only brightness and contrast apply.
* ``cues``: shifted / cue-conflict sets built by :mod:`kdjax.analysis.cues` (and optional external
  TFDS sets): accuracy of each model and the teacher–student consensus score (§6.3.4), shape bias
  on the cue-conflict set (§6.3.5).
* ``calibration``: accuracy, ECE, NLL, Brier per model; calibration transfer
  ``|ECE_student − ECE_teacher|`` (methods.md §2).
* ``fairness``: per-group accuracy, worst group and gap (§6.3.7). Without a grouping attribute the
  class label is the group (said in the report); an external TFDS set with a group feature (e.g.
  FairFace ``race``) can be given instead.

Every "direction vs paper" sentence compares a distilled student with the independent one using
the numbers just computed (e.g. "distilled agreement > independent: yes"); nothing is asserted
from the paper's tables.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import re
from typing import Any, Dict, List, Mapping, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from kdjax import data as kdata
from kdjax import models as kmodels
from kdjax.analysis import cues as cues_lib
from kdjax.analysis.adversarial import fgsm, pgd
from kdjax.analysis.agreement import js_divergence, kl_divergence
from kdjax.analysis.cka import CKAAccumulator
from kdjax.analysis.fairness import group_fairness_report
from kdjax.analysis.gradcam import cam_agreement, cam_preference, gradcam
from kdjax.analysis.invariance import color_jitter
from kdjax.calibration import calibration_report

__all__ = ["analyze", "ALL_PROBES", "PAPER_JITTER", "DEFAULT_EPS"]

ALL_PROBES = ("agreement", "cka", "gradcam", "adversarial", "invariance", "cues", "calibration",
              "fairness")
#: Ojha et al.'s colour-jitter teacher: brightness/contrast/saturation ~ U[0, 0.4], hue ~ U[0, 0.2].
PAPER_JITTER = {"brightness": 0.4, "contrast": 0.4, "saturation": 0.4, "hue": 0.2}
DEFAULT_EPS = (0.0, 1 / 255, 2 / 255, 4 / 255, 8 / 255)
_JITTER_KEYS = ("brightness", "contrast", "saturation", "hue")
_SECTION_TITLES = {
    "agreement": "Agreement", "cka": "CKA", "gradcam": "Grad-CAM",
    "adversarial": "Adversarial transfer", "invariance": "Invariance",
    "cues": "Cues and domain shift", "calibration": "Calibration", "fairness": "Fairness",
}


# ------------------------------------------------------------------------------------ models


@dataclasses.dataclass
class _Run:
    name: str
    role: str  # 'teacher' | 'distilled' | 'independent'
    workdir: str
    module: Any
    variables: Any
    meta: dict
    last_tap: Optional[str]
    num_stages: Optional[int]


def _load_run(name, role, workdir, which) -> _Run:
    from kdjax.train.checkpoint import load_model
    variables, meta = load_model(workdir, which)
    for k in ("arch", "num_classes", "dataset"):
        if k not in meta:
            raise ValueError(f"checkpoint metadata of {workdir!r} has no {k!r}; is it a kdjax run?")
    module = kmodels.get(meta["arch"], num_classes=int(meta["num_classes"]),
                         **dict(meta.get("model_kwargs") or {}))
    ns = getattr(module, "num_stages", None)
    return _Run(name, role, workdir, module, jax.device_put(variables), meta, None,
                ns if isinstance(ns, int) else None)


def _last_stage_tap(run: _Run, x) -> Optional[str]:
    """The last ``stageK`` tap (None when the model has no ``stageK`` or no ``pooled`` tap)."""
    _, taps = jax.eval_shape(lambda v, z: run.module.apply(v, z, train=False), run.variables, x)
    stages = [int(m.group(1)) for k in taps for m in [re.fullmatch(r"stage(\d+)", k)] if m]
    return f"stage{max(stages)}" if stages and "pooled" in taps else None


def _accepts(run: _Run, shape) -> bool:
    try:
        jax.eval_shape(lambda v, z: run.module.apply(v, z, train=False), run.variables,
                       jax.ShapeDtypeStruct(shape, jnp.float32))
        return True
    except Exception:  # noqa: BLE001  (shape errors from flax come in many types)
        return False


@functools.partial(jax.jit, static_argnames=("model",))
def _logits_kernel(model, variables, x):
    out = model.apply(variables, x, train=False)
    return out[0] if isinstance(out, (tuple, list)) else out


@functools.partial(jax.jit, static_argnames=("model", "tap"))
def _forward_kernel(model, variables, x, *, tap):
    logits, taps = model.apply(variables, x, train=False)
    return logits, taps["pooled"], taps[tap]


@jax.jit
def _cka_update(acc, a, b):
    return acc.update(a, b)


# ------------------------------------------------------------------------------------ helpers


def _pad(a: np.ndarray, bs: int) -> np.ndarray:
    if len(a) >= bs:
        return a
    return np.concatenate([a, np.repeat(a[-1:], bs - len(a), axis=0)])


def _spans(n: int, bs: int):
    return [(i, min(n, i + bs)) for i in range(0, n, bs)]


def _f(x) -> float:
    return float(np.asarray(x))


def _nanmean(x) -> float:
    x = np.asarray(x, np.float64)
    return float(np.nanmean(x)) if np.any(~np.isnan(x)) else float("nan")


def _fmt(v, nd=2) -> str:
    if v is None:
        return "–"
    if isinstance(v, (bool, np.bool_)):
        return "yes" if v else "no"
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if isinstance(v, (float, np.floating)):
        return "–" if not math.isfinite(float(v)) else f"{float(v):.{nd}f}"
    return str(v)


def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]], nd=2) -> str:
    out = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    out += ["| " + " | ".join(_fmt(v, nd) for v in r) + " |" for r in rows]
    return "\n".join(out)


def _jsonable(o):
    if isinstance(o, dict):
        return {str(k): _jsonable(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_jsonable(v) for v in o]
    if isinstance(o, np.ndarray):
        return _jsonable(o.tolist())
    if isinstance(o, (np.bool_, bool)):
        return bool(o)
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (float, np.floating)):
        return float(o) if math.isfinite(float(o)) else None
    return o


def _mag_label(m: Mapping[str, float]) -> str:
    return " ".join(f"{k[0]}{m.get(k, 0.0):g}" for k in _JITTER_KEYS)


# ------------------------------------------------------------------------------------ context


@dataclasses.dataclass
class _Ctx:
    teacher: _Run
    students: List[_Run]
    info: Any
    images: np.ndarray  # uint8 (N, H, W, C)
    labels: np.ndarray
    batch_size: int
    out_dir: str
    cfg: dict
    logits: Dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
    cka: Dict[str, dict] = dataclasses.field(default_factory=dict)
    directions: List[dict] = dataclasses.field(default_factory=list)
    notes: List[str] = dataclasses.field(default_factory=list)
    figures: Dict[str, str] = dataclasses.field(default_factory=dict)

    @property
    def runs(self) -> List[_Run]:
        return [self.teacher] + self.students

    @property
    def distilled(self) -> List[_Run]:
        return [s for s in self.students if s.role == "distilled"]

    @property
    def independent(self) -> _Run:
        return [s for s in self.students if s.role == "independent"][0]

    def norm(self, x255) -> jax.Array:
        return kdata.normalize(jnp.asarray(x255), self.info.mean, self.info.std)

    def predict(self, run: _Run, images) -> np.ndarray:
        """Logits of ``run`` on uint8 / [0, 255] float images, in fixed-size padded batches."""
        images = np.asarray(images)
        out = []
        for a, b in _spans(len(images), self.batch_size):
            xb = self.norm(_pad(images[a:b], self.batch_size))
            out.append(np.asarray(_logits_kernel(run.module, run.variables, xb))[:b - a])
        return np.concatenate(out)

    def direct(self, probe: str, claim: str, student: str, d, i, holds):
        d, i = float(d), float(i)
        ok = None if not (math.isfinite(d) and math.isfinite(i)) else bool(holds(d, i))
        self.directions.append(dict(probe=probe, claim=claim, student=student, distilled=d,
                                    independent=i, holds=ok))


def _clean_pass(ctx: _Ctx, want_cka: bool):
    """Clean logits of every model (and the CKA accumulators) in one pass over the data."""
    n, bs = len(ctx.labels), ctx.batch_size
    logits = {r.name: [] for r in ctx.runs}
    accs = {s.name: {"pooled": CKAAccumulator.create(), "last_stage": CKAAccumulator.create()}
            for s in ctx.students}
    can_cka = want_cka and all(r.last_tap for r in ctx.runs)
    for a, b in _spans(n, bs):
        xb = ctx.norm(_pad(ctx.images[a:b], bs))
        feats = {}
        for r in ctx.runs:
            if can_cka:
                lg, pooled, last = _forward_kernel(r.module, r.variables, xb, tap=r.last_tap)
                feats[r.name] = (pooled[:b - a], last[:b - a])
            else:
                lg = _logits_kernel(r.module, r.variables, xb)
            logits[r.name].append(np.asarray(lg)[:b - a])
        if can_cka and b - a >= 4:
            tp, tl = feats[ctx.teacher.name]
            for s in ctx.students:
                sp, sl = feats[s.name]
                accs[s.name]["pooled"] = _cka_update(accs[s.name]["pooled"], tp, sp)
                accs[s.name]["last_stage"] = _cka_update(accs[s.name]["last_stage"], tl, sl)
    ctx.logits = {k: np.concatenate(v) for k, v in logits.items()}
    if want_cka and not can_cka:
        missing = [r.name for r in ctx.runs if not r.last_tap]
        ctx.notes.append(f"CKA skipped: no 'stageK' or 'pooled' tap in {missing}.")
    elif want_cka:
        ctx.cka = {s: {k: _f(acc.result()) for k, acc in d.items()} | {
            "num_batches": int(d["pooled"].num_batches)} for s, d in accs.items()}


# ------------------------------------------------------------------------------------ probes


def _probe_agreement(ctx: _Ctx) -> dict:
    y = ctx.labels
    k = int(ctx.teacher.meta["num_classes"])
    t = ctx.logits[ctx.teacher.name]
    acc = {r.name: 100.0 * float(np.mean(ctx.logits[r.name].argmax(-1) == y)) for r in ctx.runs}
    st = {}
    for s in ctx.students:
        lg = ctx.logits[s.name]
        same = lg.argmax(-1) == t.argmax(-1)
        per_class = [100.0 * float(np.mean(same[y == c])) if np.any(y == c) else float("nan")
                     for c in range(k)]
        st[s.name] = {"agreement": 100.0 * float(np.mean(same)),
                      "kl": float(np.mean(np.asarray(kl_divergence(t, lg)))),
                      "js": float(np.mean(np.asarray(js_divergence(t, lg)))),
                      "per_class_agreement": per_class}
    ind = st[ctx.independent.name]
    for d in ctx.distilled:
        ctx.direct("agreement", "distilled top-1 agreement > independent", d.name,
                   st[d.name]["agreement"], ind["agreement"], lambda a, b: a > b)
        ctx.direct("agreement", "distilled KL(T‖S) < independent", d.name, st[d.name]["kl"],
                   ind["kl"], lambda a, b: a < b)
    return {"accuracy": acc, "students": st}


def _probe_cka(ctx: _Ctx) -> dict:
    if not ctx.cka:
        return {"skipped": "no CKA (see notes)"}
    ind = ctx.cka[ctx.independent.name]
    for d in ctx.distilled:
        for tap in ("pooled", "last_stage"):
            ctx.direct("cka", f"distilled CKA({tap}) > independent", d.name,
                       ctx.cka[d.name][tap], ind[tap], lambda a, b: a > b)
    return {"taps": {r.name: {"pooled": "pooled", "last_stage": r.last_tap} for r in ctx.runs},
            "estimator": "unbiased minibatch linear CKA (Nguyen et al. 2021)",
            "students": ctx.cka}


def _cams(ctx: _Ctx, run: _Run) -> np.ndarray:
    bs, out = ctx.batch_size, []
    for a, b in _spans(len(ctx.labels), bs):
        xb = ctx.norm(_pad(ctx.images[a:b], bs))
        yb = _pad(ctx.labels[a:b], bs)
        out.append(np.asarray(gradcam(run.module, run.variables, xb, stage=run.num_stages,
                                      class_idx=yb))[:b - a])
    return np.concatenate(out)


def _probe_gradcam(ctx: _Ctx) -> dict:
    bad = [r.name for r in ctx.runs if not r.num_stages]
    if bad:
        raise ValueError(f"Grad-CAM needs models following the kdjax block protocol "
                         f"(num_stages, apply_stage); {bad} do not. Drop the 'gradcam' probe.")
    cams = {r.name: _cams(ctx, r) for r in ctx.runs}
    t = cams[ctx.teacher.name]
    st = {}
    for s in ctx.students:
        m = {k: np.asarray(v) for k, v in cam_agreement(t, cams[s.name], size=t.shape[1:]).items()}
        st[s.name] = {"spearman": _nanmean(m["spearman"]), "iou_top": _nanmean(m["iou_top"]),
                      "cosine": _nanmean(m["cosine"]),
                      "undefined_spearman": int(np.sum(np.isnan(m["spearman"])))}
    ind = cams[ctx.independent.name]
    pref = {d.name: 100.0 * _f(cam_preference(t, cams[d.name], ind)) for d in ctx.distilled}
    for d in ctx.distilled:
        ctx.direct("gradcam", "preference share cos(T,D) > cos(T,I) above 50 % (chance)", d.name,
                   pref[d.name], 50.0, lambda a, b: a > b)
        ctx.direct("gradcam", "distilled CAM cosine with teacher > independent", d.name,
                   st[d.name]["cosine"], st[ctx.independent.name]["cosine"], lambda a, b: a > b)
    _plot_overlays(ctx, cams)
    return {"stage": {r.name: r.num_stages for r in ctx.runs},
            "class": "ground-truth label", "students": st, "preference": pref,
            "num_images": int(len(ctx.labels))}


def _rate(num, den) -> float:
    """``100 · Σ num / Σ den`` (NaN for an empty denominator)."""
    d = int(np.sum(den))
    return 100.0 * float(np.sum(num)) / d if d else float("nan")


def _probe_adversarial(ctx: _Ctx) -> dict:
    cfg = ctx.cfg
    eps_list = [float(e) for e in cfg["eps_list"]]
    steps, frac = int(cfg["pgd_steps"]), cfg["pgd_step_frac"]
    frac = 1.0 / max(steps, 1) if not frac else float(frac)
    info, teacher, bs, y = ctx.info, ctx.teacher, ctx.batch_size, ctx.labels
    clean_ok = {r.name: ctx.logits[r.name].argmax(-1) == y for r in ctx.runs}
    out = {"eps": eps_list, "eps_255": [e * 255 for e in eps_list], "pgd_steps": steps,
           "pgd_step_frac": frac, "units": "[0, 1] pixels (per-channel std/mean of the dataset)",
           "crafted_on": "teacher", "attacks": {}}
    for attack in cfg["attacks"]:
        if attack not in ("pgd", "fgsm"):
            raise ValueError(f"unknown attack {attack!r}; use 'pgd' and/or 'fgsm'")
        res = {"teacher_fooling_rate": [], "fooling_rate": {s.name: [] for s in ctx.students},
               "transfer_rate": {s.name: [] for s in ctx.students},
               "num_teacher_fooled": {s.name: [] for s in ctx.students}}
        for eps in eps_list:
            preds = {r.name: [] for r in ctx.runs}
            for a, b in _spans(len(y), bs):
                xb = ctx.norm(_pad(ctx.images[a:b], bs))
                yb = jnp.asarray(_pad(y[a:b], bs))
                kw = dict(eps=eps, pixel_std=info.std, pixel_mean=info.mean)
                xa = (pgd(teacher.module, teacher.variables, xb, yb, steps=steps,
                          step_size=eps * frac, **kw) if attack == "pgd"
                      else fgsm(teacher.module, teacher.variables, xb, yb, **kw))
                for r in ctx.runs:
                    preds[r.name].append(np.asarray(
                        _logits_kernel(r.module, r.variables, xa)).argmax(-1)[:b - a])
            adv_ok = {k: np.concatenate(v) == y for k, v in preds.items()}
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
    ref = min(range(len(eps_list)), key=lambda j: abs(eps_list[j] - 8 / 255))
    out["reference_eps_index"] = ref
    for attack, res in out["attacks"].items():
        for d in ctx.distilled:
            ctx.direct("adversarial", f"{attack} ε={eps_list[ref] * 255:g}/255 crafted on T: "
                       f"distilled transfer rate > independent", d.name,
                       res["transfer_rate"][d.name][ref],
                       res["transfer_rate"][ctx.independent.name][ref], lambda a, b: a > b)
    _plot_adversarial(ctx, out)
    return out


def _probe_invariance(ctx: _Ctx) -> dict:
    cfg = ctx.cfg
    mags = [dict({k: 0.0 for k in _JITTER_KEYS}, **{k: float(v) for k, v in dict(m).items()})
            for m in cfg["jitter"]]
    for m in mags:
        if set(m) - set(_JITTER_KEYS):
            raise ValueError(f"unknown jitter keys {sorted(set(m) - set(_JITTER_KEYS))}")
    grey = ctx.images.shape[-1] == 1
    eff = [dict(m, saturation=0.0, hue=0.0) if grey else dict(m) for m in mags]
    note = ("Grayscale data: only brightness and contrast apply (saturation and hue are the "
            "identity on one channel)." if grey else
            "RGB data: brightness, contrast, saturation and hue all apply.")
    note += (" The paper's effect needs a teacher trained with colour jitter and students "
             "without; with a plain teacher the scores measure inherited invariance only.")
    rng = jax.random.PRNGKey(int(cfg["seed"]))
    views = int(cfg["jitter_views"])
    n, bs = len(ctx.labels), ctx.batch_size
    cons = {r.name: [] for r in ctx.runs}
    for m in eff:
        agree = {r.name: [] for r in ctx.runs}
        for j, (a, b) in enumerate(_spans(n, bs)):
            x01 = jnp.asarray(_pad(ctx.images[a:b], bs), jnp.float32) / 255.0
            for v in range(views):
                key = jax.random.fold_in(jax.random.fold_in(rng, v), j)
                xj = color_jitter(x01, key, **m) * 255.0
                xn = ctx.norm(xj)
                for r in ctx.runs:
                    p = np.asarray(_logits_kernel(r.module, r.variables, xn)).argmax(-1)[:b - a]
                    agree[r.name].append(p == ctx.logits[r.name][a:b].argmax(-1))
        for r in ctx.runs:
            cons[r.name].append(100.0 * float(np.mean(np.concatenate(agree[r.name]))))
    ind = cons[ctx.independent.name]
    for d in ctx.distilled:
        ctx.direct("invariance", f"distilled colour consistency ({_mag_label(eff[0])}) > "
                   "independent", d.name, cons[d.name][0], ind[0], lambda a, b: a > b)
    out = {"magnitudes": mags, "effective": eff, "labels": [_mag_label(m) for m in eff],
           "views": views, "note": note, "consistency": cons}
    _plot_consistency(ctx, out)
    return out


def _probe_cues(ctx: _Ctx) -> dict:
    cfg = ctx.cfg
    x = ctx.images
    accepts_rgb = x.shape[-1] == 3 or all(_accepts(r, (1,) + x.shape[1:3] + (3,))
                                          for r in ctx.runs)
    sets, skipped = cues_lib.build_shifted_sets(
        x, ctx.labels, num_classes=int(ctx.teacher.meta["num_classes"]),
        names=tuple(cfg["cue_sets"]), accepts_rgb=accepts_rgb, noise_sigma=cfg["noise_sigma"],
        blur_sigma=cfg["blur_sigma"], tint_strength=cfg["tint_strength"], seed=int(cfg["seed"]))
    for spec in cfg["ood_sets"] or ():
        name, _, split = str(spec).partition(":")
        ext = cues_lib.load_tfds_set(name, split or "test", data_dir=cfg["ood_data_dir"],
                                     limit=cfg["num_examples"], image_shape=x.shape[1:],
                                     purpose=f"the unseen-domain set {spec!r} (probe 'cues')")
        if ext["labels"].max() >= int(ctx.teacher.meta["num_classes"]):
            raise ValueError(f"{spec!r} has labels outside the models' "
                             f"{ctx.teacher.meta['num_classes']} classes; it must share the "
                             "training label space")
        sets[f"ext:{spec}"] = cues_lib.ShiftedSet(f"ext:{spec}", ext["images"], ext["labels"],
                                                  note="external TFDS set")
    res, shape_bias = {}, {}
    for name, s in sets.items():
        lg = {r.name: ctx.predict(r, s.images) for r in ctx.runs}
        pred = {k: v.argmax(-1) for k, v in lg.items()}
        tp = pred[ctx.teacher.name]
        res[name] = {"note": s.note, "num_examples": int(len(s.labels)),
                     "accuracy": {k: 100.0 * float(np.mean(p == s.labels))
                                  for k, p in pred.items()},
                     "agreement": {st.name: 100.0 * float(np.mean(pred[st.name] == tp))
                                   for st in ctx.students}}
        if s.texture_labels is not None:
            conflict = s.texture_labels != s.labels
            for k, p in pred.items():
                sh = int(np.sum((p == s.labels) & conflict))
                tx = int(np.sum((p == s.texture_labels) & conflict))
                shape_bias[k] = sh / (sh + tx) if sh + tx else float("nan")
        for d in ctx.distilled:
            ctx.direct("cues", f"{name}: distilled consensus with teacher > independent", d.name,
                       res[name]["agreement"][d.name],
                       res[name]["agreement"][ctx.independent.name], lambda a, b: a > b)
    if shape_bias:
        tb = shape_bias[ctx.teacher.name]
        for d in ctx.distilled:
            ctx.direct("cues", "distilled shape bias closer to the teacher's than independent "
                       "(|SB_S − SB_T|)", d.name, abs(shape_bias[d.name] - tb),
                       abs(shape_bias[ctx.independent.name] - tb), lambda a, b: a < b)
    out = {"sets": res, "skipped": skipped, "shape_bias": shape_bias}
    _plot_shifted(ctx, out)
    return out


def _probe_calibration(ctx: _Ctx) -> dict:
    rep = {}
    for r in ctx.runs:
        c = calibration_report(ctx.logits[r.name], ctx.labels, num_bins=int(ctx.cfg["ece_bins"]))
        rep[r.name] = {"accuracy": 100.0 * c["accuracy"], "ece": c["ece"], "nll": c["nll"],
                       "brier": c["brier"]}
    te = rep[ctx.teacher.name]["ece"]
    for s in ctx.students:
        rep[s.name]["ece_transfer"] = abs(rep[s.name]["ece"] - te)
    for d in ctx.distilled:
        ctx.direct("calibration", "distilled |ECE_S − ECE_T| < independent", d.name,
                   rep[d.name]["ece_transfer"], rep[ctx.independent.name]["ece_transfer"],
                   lambda a, b: a < b)
    return {"models": rep, "num_bins": int(ctx.cfg["ece_bins"])}


def _probe_fairness(ctx: _Ctx) -> dict:
    cfg = ctx.cfg
    if cfg["fairness_dataset"]:
        spec = cfg["fairness_dataset"]
        name, _, split = str(spec).partition(":")
        ext = cues_lib.load_tfds_set(
            name, split or "test", data_dir=cfg["fairness_data_dir"],
            label_key=cfg["fairness_label_key"], extra_keys=(cfg["fairness_group_key"],),
            limit=cfg["num_examples"], image_shape=ctx.images.shape[1:],
            purpose=f"the fairness probe ({spec!r}, group {cfg['fairness_group_key']!r})")
        labels, groups = ext["labels"], ext[cfg["fairness_group_key"]]
        preds = {r.name: ctx.predict(r, ext["images"]).argmax(-1) for r in ctx.runs}
        attr = f"{cfg['fairness_group_key']} ({spec})"
        note = f"Groups: the {cfg['fairness_group_key']!r} feature of {spec}."
    else:
        labels, groups = ctx.labels, ctx.labels
        preds = {r.name: ctx.logits[r.name].argmax(-1) for r in ctx.runs}
        attr = "class label"
        note = (f"{ctx.info.name} has no grouping attribute: the class label is used as the group, "
                "so per-group accuracy is per-class accuracy (the paper uses FairFace race groups; "
                "pass fairness_dataset to use one).")
    rep = {}
    for r in ctx.runs:
        g = group_fairness_report(preds[r.name], labels, groups)
        rep[r.name] = {"per_group": {str(k): 100.0 * v for k, v in g["per_group"].items()},
                       "worst_group": str(g["worst_group"]),
                       "worst_group_accuracy": 100.0 * g["worst_group_accuracy"],
                       "gap": 100.0 * g["gap"], "overall": 100.0 * g["overall_accuracy"]}
    tg = rep[ctx.teacher.name]["per_group"]
    dist = {s.name: float(np.mean([abs(rep[s.name]["per_group"][k] - tg[k]) for k in tg]))
            for s in ctx.students}
    for d in ctx.distilled:
        ctx.direct("fairness", "distilled per-group accuracy profile closer to the teacher's "
                   "(mean |Δacc|) than independent", d.name, dist[d.name],
                   dist[ctx.independent.name], lambda a, b: a < b)
        tgap = rep[ctx.teacher.name]["gap"]
        ctx.direct("fairness", "distilled accuracy gap closer to the teacher's than independent",
                   d.name, abs(rep[d.name]["gap"] - tgap),
                   abs(rep[ctx.independent.name]["gap"] - tgap), lambda a, b: a < b)
    return {"group_attribute": attr, "note": note, "models": rep, "distance_to_teacher": dist}


_PROBES = {"agreement": _probe_agreement, "cka": _probe_cka, "gradcam": _probe_gradcam,
           "adversarial": _probe_adversarial, "invariance": _probe_invariance,
           "cues": _probe_cues, "calibration": _probe_calibration, "fairness": _probe_fairness}


# ------------------------------------------------------------------------------------ figures


def _figure(ncols=1, nrows=1, size=(6, 4)):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    fig = Figure(figsize=size)
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    return fig, axes


def _save(ctx: _Ctx, fig, key: str, fname: str):
    path = os.path.join(ctx.out_dir, fname)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    ctx.figures[key] = fname


_DISTILLED_COLORS = ("tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown",
                     "tab:pink", "tab:olive", "tab:cyan")


def _colors(ctx: _Ctx) -> Dict[str, str]:
    """One colour per model, the same in every figure."""
    c = {ctx.teacher.name: "tab:gray", ctx.independent.name: "tab:blue"}
    for i, d in enumerate(ctx.distilled):
        c[d.name] = _DISTILLED_COLORS[i % len(_DISTILLED_COLORS)]
    return c


def _grouped_bars(ax, groups: Sequence[str], series: Dict[str, Sequence[float]], ylabel: str,
                  colors: Optional[Mapping[str, str]] = None):
    names = list(series)
    w = 0.8 / max(len(names), 1)
    xs = np.arange(len(groups))
    for i, nm in enumerate(names):
        vals = np.nan_to_num(np.asarray(series[nm], np.float64), nan=0.0)
        ax.bar(xs + (i - (len(names) - 1) / 2) * w, vals, width=w, label=nm,
               color=(colors or {}).get(nm))
    ax.set_xticks(xs)
    ax.set_xticklabels(groups, rotation=20, ha="right", fontsize=8)
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=7)


def _plot_overlays(ctx: _Ctx, cams: Dict[str, np.ndarray]):
    k = min(int(ctx.cfg["num_overlays"]), len(ctx.labels))
    if k < 1:
        return
    cols = [ctx.teacher] + ctx.distilled + [ctx.independent]
    fig, axes = _figure(len(cols) + 1, k, size=(1.8 * (len(cols) + 1), 1.9 * k))
    h, w = ctx.images.shape[1:3]
    for i in range(k):
        img = ctx.images[i].astype(np.float32) / 255.0
        show = img[..., 0] if img.shape[-1] == 1 else img
        cmap = "gray" if img.shape[-1] == 1 else None
        axes[i, 0].imshow(show, cmap=cmap)
        axes[i, 0].set_title(f"input (y={int(ctx.labels[i])})", fontsize=7)
        for j, r in enumerate(cols, start=1):
            cam = np.asarray(jax.image.resize(jnp.asarray(cams[r.name][i]), (h, w), "bilinear"))
            axes[i, j].imshow(show, cmap=cmap)
            axes[i, j].imshow(cam, cmap="jet", alpha=0.5, vmin=0, vmax=1)
            axes[i, j].set_title(f"{r.name} ({r.role[0].upper()})", fontsize=7)
        for ax in axes[i]:
            ax.axis("off")
    _save(ctx, fig, "gradcam", "gradcam_overlays.png")


def _plot_agreement(ctx: _Ctx, report: dict):
    ag = report.get("agreement")
    cka = report.get("cka", {}).get("students")
    if not ag:
        return
    names = [s.name for s in ctx.students]
    ncols = 2 if cka else 1
    fig, axes = _figure(ncols, 1, size=(5 * ncols, 3.6))
    ax = axes[0, 0]
    ax.bar(names, [ag["students"][n]["agreement"] for n in names],
           color=[_colors(ctx)[n] for n in names])
    ax.set_ylabel("top-1 agreement with teacher (%)")
    ax.set_ylim(0, 100)
    ax.set_title("Agreement")
    if cka:
        _grouped_bars(axes[0, 1], names, {"pooled": [cka[n]["pooled"] for n in names],
                                          "last stage": [cka[n]["last_stage"] for n in names]},
                      "linear CKA with teacher")
        axes[0, 1].set_title("CKA")
    _save(ctx, fig, "agreement", "agreement.png")


def _plot_adversarial(ctx: _Ctx, out: dict):
    atks = list(out["attacks"])
    if not atks:
        return
    fig, axes = _figure(len(atks), 1, size=(5 * len(atks), 3.8))
    e = np.asarray(out["eps_255"])
    for ax, atk in zip(axes[0], atks):
        res = out["attacks"][atk]
        col = _colors(ctx)
        ax.plot(e, res["teacher_fooling_rate"], "-o", color=col[ctx.teacher.name],
                label="teacher (white-box)")
        for s in ctx.students:
            ax.plot(e, res["fooling_rate"][s.name], "-o", color=col[s.name],
                    label=f"{s.name} fooling")
            ax.plot(e, res["transfer_rate"][s.name], "--x", color=col[s.name],
                    label=f"{s.name} transfer")
        ax.set_xlabel("ε (/255)")
        ax.set_ylabel("%")
        ax.set_ylim(-2, 102)
        ax.set_title(f"{atk} crafted on teacher")
        ax.legend(fontsize=6)
    _save(ctx, fig, "adversarial", "adversarial_transfer.png")


def _plot_consistency(ctx: _Ctx, out: dict):
    fig, axes = _figure(1, 1, size=(6, 3.6))
    _grouped_bars(axes[0, 0], out["labels"], out["consistency"], "prediction unchanged (%)",
                  _colors(ctx))
    axes[0, 0].set_ylim(0, 100)
    axes[0, 0].set_title("Colour-jitter consistency")
    _save(ctx, fig, "invariance", "consistency.png")


def _plot_shifted(ctx: _Ctx, out: dict):
    sets = list(out["sets"])
    if not sets:
        return
    fig, axes = _figure(2, 1, size=(11, 3.8))
    _grouped_bars(axes[0, 0], sets, {r.name: [out["sets"][s]["accuracy"][r.name] for s in sets]
                                     for r in ctx.runs}, "accuracy (%)", _colors(ctx))
    axes[0, 0].set_title("Accuracy on shifted sets")
    _grouped_bars(axes[0, 1], sets, {r.name: [out["sets"][s]["agreement"][r.name] for s in sets]
                                     for r in ctx.students}, "agreement with teacher (%)",
                  _colors(ctx))
    axes[0, 1].set_title("Consensus with teacher")
    for ax in axes[0]:
        ax.set_ylim(0, 100)
    _save(ctx, fig, "cues", "shifted_accuracy.png")


# ------------------------------------------------------------------------------------ markdown


def _md_section(ctx: _Ctx, probe: str, sec: dict) -> List[str]:
    L = [f"## {_SECTION_TITLES[probe]}", ""]
    names = [s.name for s in ctx.students]
    if "skipped" in sec and len(sec) == 1:
        return L + [f"Skipped: {sec['skipped']}", ""]
    if probe == "agreement":
        L.append(_table(["model", "role", "accuracy (%)", "agreement (%)", "KL(T‖S)", "JS"],
                        [[ctx.teacher.name, "teacher", sec["accuracy"][ctx.teacher.name], 100.0,
                          0.0, 0.0]] +
                        [[s.name, s.role, sec["accuracy"][s.name],
                          sec["students"][s.name]["agreement"], sec["students"][s.name]["kl"],
                          sec["students"][s.name]["js"]] for s in ctx.students], nd=3))
        if "agreement" in ctx.figures:
            L += ["", f"![Agreement and CKA]({ctx.figures['agreement']})"]
        k = len(next(iter(sec["students"].values()))["per_class_agreement"])
        L += ["", "Per-class agreement (%):", "",
              _table(["class"] + names, [[c] + [sec["students"][n]["per_class_agreement"][c]
                                                for n in names] for c in range(k)], nd=1)]
    elif probe == "cka":
        L.append(_table(["student", "role", "CKA pooled", "CKA last stage", "taps (T / S)"],
                        [[s.name, s.role, sec["students"][s.name]["pooled"],
                          sec["students"][s.name]["last_stage"],
                          f"{ctx.teacher.last_tap} / {s.last_tap}"] for s in ctx.students], nd=4))
        L += ["", f"Estimator: {sec['estimator']}, over "
              f"{next(iter(sec['students'].values()))['num_batches']} batches."]
    elif probe == "gradcam":
        L.append(_table(["student", "role", "Spearman", "IoU top-20 %", "cosine",
                         "preference (%)"],
                        [[s.name, s.role, sec["students"][s.name]["spearman"],
                          sec["students"][s.name]["iou_top"], sec["students"][s.name]["cosine"],
                          sec["preference"].get(s.name)] for s in ctx.students], nd=3))
        stages = ", ".join(f"{k}: stage {v}" for k, v in sec["stage"].items())
        L += ["", f"Grad-CAM of the ground-truth class at each model's last stage "
              f"({stages}), {sec['num_images']} images; preference = % of images with "
              "cos(T, distilled) > cos(T, independent) (50 % is chance)."]
        if "gradcam" in ctx.figures:
            L += ["", f"![Grad-CAM overlays]({ctx.figures['gradcam']})"]
    elif probe == "adversarial":
        eps = sec["eps_255"]
        for atk, res in sec["attacks"].items():
            L += [f"### {atk} ({sec['pgd_steps']} steps of {sec['pgd_step_frac']:.3g}·ε)"
                  if atk == "pgd" else f"### {atk}", ""]
            rows = [["teacher (fooling)"] + res["teacher_fooling_rate"]]
            for s in ctx.students:
                rows.append([f"{s.name} (fooling)"] + res["fooling_rate"][s.name])
                rows.append([f"{s.name} (transfer)"] + res["transfer_rate"][s.name])
            L += [_table(["model \\ ε (/255)"] + [f"{e:g}" for e in eps], rows, nd=1), ""]
        L += ["Fooling rate: % of the images the model classifies correctly that the attack "
              "(crafted on the teacher) flips. Transfer rate (paper): among images that teacher "
              "and student both get right and that fool the teacher, % that also fool the "
              f"student. ε in {sec['units']}."]
        if "adversarial" in ctx.figures:
            L += ["", f"![Adversarial transfer]({ctx.figures['adversarial']})"]
    elif probe == "invariance":
        L.append(_table(["model \\ jitter"] + sec["labels"],
                        [[r.name] + sec["consistency"][r.name] for r in ctx.runs], nd=1))
        L += ["", f"Agreement score (% of predictions unchanged), {sec['views']} view(s) per "
              f"image. {sec['note']}"]
        if "invariance" in ctx.figures:
            L += ["", f"![Consistency]({ctx.figures['invariance']})"]
    elif probe == "cues":
        sets = list(sec["sets"])
        L.append(_table(["set", "note"] + [f"acc {r.name}" for r in ctx.runs] +
                        [f"agree {n}" for n in names],
                        [[s, sec["sets"][s]["note"]] +
                         [sec["sets"][s]["accuracy"][r.name] for r in ctx.runs] +
                         [sec["sets"][s]["agreement"][n] for n in names] for s in sets], nd=1))
        for s, why in sec["skipped"].items():
            L += ["", f"- `{s}`: {why}."]
        if sec["shape_bias"]:
            L += ["", "Shape bias on the cue-conflict set (#shape / (#shape + #texture)):", "",
                  _table(["model", "shape bias"],
                         [[k, v] for k, v in sec["shape_bias"].items()], nd=3)]
        if "cues" in ctx.figures:
            L += ["", f"![Shifted sets]({ctx.figures['cues']})"]
    elif probe == "calibration":
        L.append(_table(["model", "accuracy (%)", "ECE", "NLL", "Brier", "|ECE_S − ECE_T|"],
                        [[r.name, m["accuracy"], m["ece"], m["nll"], m["brier"],
                          m.get("ece_transfer")] for r in ctx.runs
                         for m in [sec["models"][r.name]]], nd=4))
        L += ["", f"ECE: {sec['num_bins']} equal-width bins, top-label."]
    elif probe == "fairness":
        groups = list(sec["models"][ctx.teacher.name]["per_group"])
        L.append(_table(["model", "overall", "worst group", "worst acc", "gap",
                         "mean |Δacc| vs T"],
                        [[r.name, m["overall"], m["worst_group"], m["worst_group_accuracy"],
                          m["gap"], sec["distance_to_teacher"].get(r.name)]
                         for r in ctx.runs for m in [sec["models"][r.name]]], nd=1))
        L += ["", "Per-group accuracy (%):", "",
              _table(["group"] + [r.name for r in ctx.runs],
                     [[g] + [sec["models"][r.name]["per_group"].get(g) for r in ctx.runs]
                      for g in groups], nd=1), "", f"Grouping attribute: {sec['group_attribute']}. "
              f"{sec['note']}"]
    dirs = [d for d in ctx.directions if d["probe"] == probe]
    if dirs:
        L += ["", "Direction vs paper:", ""]
        L += [f"- {_direction_sentence(d)}" for d in dirs]
    return L + [""]


def _direction_sentence(d: dict) -> str:
    ans = "n/a" if d["holds"] is None else ("yes" if d["holds"] else "no")
    return (f"{d['student']}: {d['claim']}: **{ans}** ({_fmt(d['distilled'], 3)} vs "
            f"{_fmt(d['independent'], 3)})")


def _write_markdown(ctx: _Ctx, report: dict, path: str):
    s = report["setup"]
    L = ["# What gets distilled: analysis report", "",
         "Ojha et al., *What Knowledge Gets Distilled in Knowledge Distillation?* (NeurIPS 2023); "
         "methods.md §6. Every student (each distilled one and the independent one) is compared "
         "with the teacher.", "",
         f"Dataset `{s['dataset']}`, split `{s['split']}`, {s['num_examples']} evaluation "
         f"examples (seed {s['seed']}).", "",
         _table(["name", "role", "arch", "checkpoint step", "workdir"],
                [[m["name"], m["role"], m["arch"], m["step"], f"`{m['workdir']}`"]
                 for m in s["models"]]), ""]
    if ctx.notes:
        L += ["Notes:", ""] + [f"- {n}" for n in ctx.notes] + [""]
    for probe in s["probes"]:
        L += _md_section(ctx, probe, report[probe])
    L += ["## Direction vs paper", ""]
    decided = [d for d in ctx.directions if d["holds"] is not None]
    L.append(f"The paper's direction (distilled student closer to the teacher than the "
             f"independent one) holds in {sum(d['holds'] for d in decided)} of {len(decided)} "
             f"comparisons computed here.")
    L += [""] + [f"- [{d['probe']}] {_direction_sentence(d)}" for d in ctx.directions] + [""]
    with open(path, "w") as f:
        f.write("\n".join(L))


# ------------------------------------------------------------------------------------ entry


def _load_eval_data(dataset, split, n, *, data_dir, idx_dir, seed, image_size):
    info = kdata.info(dataset)
    split = split or info.eval_split
    if info.in_memory:
        s = kdata.load_arrays(dataset, split, data_dir=data_dir, idx_dir=idx_dir)
        if len(s.labels) == 0:
            raise ValueError(f"{dataset} split {split!r} is empty")
        idx = np.arange(len(s.labels))
        if n and n < len(idx):
            idx = np.sort(np.random.default_rng(seed).permutation(len(idx))[:n])
        return info, split, s.images[idx], s.labels[idx].astype(np.int32)
    stream = kdata.HostStream(dataset, split, batch_size=256, train=False, data_dir=data_dir,
                              image_size=image_size or info.image_shape[0], limit=n or None)
    imgs, labels = [], []
    for b in stream.iter_epoch(0):
        imgs.append(b["image"])
        labels.append(b["label"])
    return info, split, np.concatenate(imgs), np.concatenate(labels).astype(np.int32)


def analyze(teacher_workdir: str, distilled_workdirs: Mapping[str, str],
            independent_workdir: str, out_dir: str, *,
            probes: Sequence[str] = ALL_PROBES,
            num_examples: int = 1000,
            batch_size: int = 250,
            which: Any = "final",
            eps_list: Sequence[float] = DEFAULT_EPS,
            pgd_steps: int = 10,
            pgd_step_frac: Optional[float] = 0.25,
            attacks: Sequence[str] = ("pgd", "fgsm"),
            jitter: Sequence[Mapping[str, float]] = (PAPER_JITTER,),
            jitter_views: int = 1,
            cue_sets: Sequence[str] = cues_lib.CUE_SETS,
            noise_sigma: float = 0.2,
            blur_sigma: float = 1.5,
            tint_strength: float = 0.6,
            ood_sets: Sequence[str] = (),
            ood_data_dir: Optional[str] = None,
            fairness_dataset: str = "",
            fairness_group_key: str = "race",
            fairness_label_key: str = "label",
            fairness_data_dir: Optional[str] = None,
            ece_bins: int = 15,
            num_overlays: int = 4,
            data_dir: Optional[str] = None,
            idx_dir: Optional[str] = None,
            eval_split: Optional[str] = None,
            image_size: Optional[int] = None,
            seed: int = 0,
            progress: bool = True) -> dict:
    """Runs the probes on (teacher, distilled students, independent student) and writes a report.

    Args:
      teacher_workdir: kdjax run of the teacher.
      distilled_workdirs: ``{name: workdir}`` of the distilled students (``{'kd': ..., ...}``).
      independent_workdir: run of the same student architecture trained without a teacher.
      out_dir: where ``report.md``, ``report.json`` and the PNGs go (created).
      probes: subset of :data:`ALL_PROBES` (run in that order).
      num_examples: evaluation examples (a seeded random subset of the eval split; 0 = all).
      batch_size: examples per device batch (batches are padded to this size).
      which: checkpoint selector for every run ('final', 'best', a step, ...).
      eps_list: L∞ radii in ``[0, 1]`` pixel units (e.g. ``8/255``).
      pgd_steps: PGD / I-FGSM steps; ``pgd_step_frac``: step size as a fraction of ε
        (None or 0 = ``1/pgd_steps``, Ojha et al.'s I-FGSM).
      attacks: ``'pgd'`` and/or ``'fgsm'``.
      jitter: colour-jitter magnitude dicts (brightness, contrast, saturation, hue); the first is
        the one the direction sentence uses.
      jitter_views: jittered views per image.
      cue_sets: names from :data:`kdjax.analysis.cues.CUE_SETS`.
      noise_sigma, blur_sigma, tint_strength: cue-set parameters.
      ood_sets: external TFDS sets ``'name[:split]'`` sharing the label space (PACS, VLCS, the
        Geirhos sets, ...); read from ``ood_data_dir``; a missing one raises
        :class:`kdjax.data.DatasetNotFoundError`.
      fairness_dataset: ``'name[:split]'`` of a TFDS set with a group feature
        (``fairness_group_key``, labels in ``fairness_label_key``); empty = class label as group.
      ece_bins: bins for ECE.
      num_overlays: images in the Grad-CAM overlay figure.
      data_dir, idx_dir, eval_split, image_size: data location / split overrides.
      seed: subset, jitter and cue-set seed.
      progress: tqdm progress bar over the probes.

    Returns:
      The report dict (also written to ``out_dir/report.json``).
    """
    from tqdm import tqdm

    probes = list(probes)
    unknown = [p for p in probes if p not in ALL_PROBES]
    if unknown or not probes:
        raise ValueError(f"unknown probes {unknown or probes}; choose from {', '.join(ALL_PROBES)}")
    if not distilled_workdirs:
        raise ValueError("give at least one distilled student (name=workdir)")
    if not independent_workdir:
        raise ValueError("the independent student's workdir is required (the paper's reference)")
    names = list(distilled_workdirs)
    for n in names:
        if n in ("teacher", "independent") or not re.fullmatch(r"[A-Za-z0-9_.\-]+", n):
            raise ValueError(f"bad distilled student name {n!r}: use letters, digits, _ . -; "
                             "'teacher' and 'independent' are reserved")
    cfg = dict(num_examples=num_examples, eps_list=tuple(eps_list), pgd_steps=pgd_steps,
               pgd_step_frac=pgd_step_frac, attacks=tuple(attacks),
               jitter=[dict(m) for m in jitter], jitter_views=jitter_views,
               cue_sets=tuple(cue_sets), noise_sigma=noise_sigma, blur_sigma=blur_sigma,
               tint_strength=tint_strength, ood_sets=tuple(ood_sets), ood_data_dir=ood_data_dir,
               fairness_dataset=fairness_dataset, fairness_group_key=fairness_group_key,
               fairness_label_key=fairness_label_key, fairness_data_dir=fairness_data_dir,
               ece_bins=ece_bins, num_overlays=num_overlays, seed=seed, which=which,
               batch_size=batch_size)

    # Fail before any work when an external dataset a selected probe needs is missing.
    if "cues" in probes:
        for spec in ood_sets or ():
            name, _, split = str(spec).partition(":")
            cues_lib.load_tfds_set(name, split or "test", data_dir=ood_data_dir, limit=1,
                                   purpose=f"the unseen-domain set {spec!r} (probe 'cues')")
    if "fairness" in probes and fairness_dataset:
        name, _, split = str(fairness_dataset).partition(":")
        cues_lib.load_tfds_set(name, split or "test", data_dir=fairness_data_dir, limit=1,
                               label_key=fairness_label_key, extra_keys=(fairness_group_key,),
                               purpose=f"the fairness probe ({fairness_dataset!r}, group "
                                       f"{fairness_group_key!r})")
    if isinstance(which, str) and which.isdigit():
        which = int(which)
    teacher = _load_run("teacher", "teacher", teacher_workdir, which)
    students = [_load_run(n, "distilled", distilled_workdirs[n], which) for n in names]
    students.append(_load_run("independent", "independent", independent_workdir, which))
    runs = [teacher] + students
    datasets = {r.name: r.meta["dataset"] for r in runs}
    if len(set(datasets.values())) != 1:
        raise ValueError(f"all models must share one dataset; got {datasets}")
    ncls = {r.name: int(r.meta["num_classes"]) for r in runs}
    if len(set(ncls.values())) != 1:
        raise ValueError(f"all models must have the same number of classes; got {ncls}")
    dataset = datasets["teacher"]

    info, split, images, labels = _load_eval_data(
        dataset, eval_split, int(num_examples), data_dir=data_dir, idx_dir=idx_dir,
        seed=int(seed), image_size=image_size)
    bs = max(1, min(int(batch_size), len(labels)))
    for r in runs:
        r.last_tap = _last_stage_tap(r, jnp.zeros((1,) + images.shape[1:], jnp.float32))
    os.makedirs(out_dir, exist_ok=True)
    ctx = _Ctx(teacher, students, info, images, labels, bs, out_dir, cfg)

    report: Dict[str, Any] = {}
    steps = ["forward"] + probes
    bar = tqdm(steps, desc="analysis", disable=not progress, unit="probe")
    for step in bar:
        bar.set_postfix_str(step)
        if step == "forward":
            _clean_pass(ctx, want_cka="cka" in probes)
        else:
            report[step] = _PROBES[step](ctx)
    bar.close()
    _plot_agreement(ctx, report)

    report = {"setup": {
        "paper": "Ojha et al., What Knowledge Gets Distilled in Knowledge Distillation?, "
                 "NeurIPS 2023 (methods.md §6)",
        "dataset": dataset, "split": split, "num_examples": int(len(labels)), "seed": int(seed),
        "probes": probes, "config": cfg,
        "models": [{"name": r.name, "role": r.role, "workdir": r.workdir,
                    "arch": r.meta["arch"], "step": r.meta.get("step"),
                    "last_stage_tap": r.last_tap} for r in runs]}, **report}
    report["directions"] = ctx.directions
    report["notes"] = ctx.notes
    _write_markdown(ctx, report, os.path.join(out_dir, "report.md"))
    report["figures"] = dict(ctx.figures)
    from kdjax.train.checkpoint import write_json
    write_json(os.path.join(out_dir, "report.json"), _jsonable(report))
    return report
