r"""What gets distilled (Ojha et al., NeurIPS 2023): compare a teacher, distilled students and an
independent student on agreement, CKA, Grad-CAM, adversarial transfer, invariance, cues / domain
shift, calibration and fairness.

  python -m launch.analyze --teacher runs/fm/teacher --distilled kd=runs/fm/kd,crd=runs/fm/crd \
      --independent runs/fm/student --out runs/fm/analysis \
      [--config configs/analysis.py:fmnist] [--num_examples 2000] [--probes agreement,cka]
Writes report.md, report.json and PNG figures into --out (settings: configs/analysis.py).
"""
import os

from absl import app, flags
from ml_collections import config_flags

from kdjax import cli

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_CONFIG = config_flags.DEFINE_config_file(
    "config", os.path.join(_ROOT, "configs", "analysis.py") + ":fmnist", "Analysis settings.")
_TEACHER = flags.DEFINE_string("teacher", None, "Teacher run (workdir).")
_DISTILLED = flags.DEFINE_list("distilled", None, "Distilled students: NAME=WORKDIR,...")
_INDEPENDENT = flags.DEFINE_string("independent", None, "Independently trained student run.")
_OUT = flags.DEFINE_string("out", None, "Output directory.")
_N = flags.DEFINE_integer("num_examples", None, "Evaluation examples (overrides the config).")
_PROBES = flags.DEFINE_list("probes", None, "Subset of the probes (overrides the config).")
_PROGRESS = flags.DEFINE_bool("progress", True, "Show a progress bar.")


def _run(config, teacher, distilled, independent, out):
  from kdjax.analysis.report import analyze
  runs = {}
  for item in distilled:
    name, sep, wd = item.partition("=")
    if not sep or not name or not wd:
      raise ValueError(f"--distilled expects NAME=WORKDIR items, got {item!r}")
    if name in runs:
      raise ValueError(f"--distilled names the student {name!r} twice")
    runs[name] = wd
  kw = config.to_dict()
  kw.pop("setting", None)
  for k in ("data_dir", "idx_dir", "ood_data_dir", "fairness_data_dir", "eval_split"):
    kw[k] = kw[k] or None
  kw["image_size"] = kw["image_size"] or None
  if _N.value is not None:
    kw["num_examples"] = _N.value
  if _PROBES.value:
    kw["probes"] = tuple(_PROBES.value)
  return analyze(teacher, runs, independent, out, progress=_PROGRESS.value, **kw)


def main(argv):
  del argv
  out = cli.require(_OUT.value, "out")
  rep = cli.guarded(_run, _CONFIG.value, cli.require(_TEACHER.value, "teacher"),
                    cli.require(_DISTILLED.value, "distilled"),
                    cli.require(_INDEPENDENT.value, "independent"), out)
  decided = [d for d in rep["directions"] if d["holds"] is not None]
  for d in rep["directions"]:
    ans = "n/a" if d["holds"] is None else ("yes" if d["holds"] else "no")
    print(f"[{d['probe']}] {d['student']}: {d['claim']}: {ans}")
  print(f"paper direction holds in {sum(d['holds'] for d in decided)}/{len(decided)} comparisons; "
        f"report: {os.path.join(out, 'report.md')}")


if __name__ == "__main__":
  app.run(main)
