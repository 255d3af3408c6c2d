r"""What gets distilled (Ojha et al., NeurIPS 2023): compare a teacher, distilled students and an
independent student on agreement, CKA, Grad-CAM, adversarial transfer, invariance, cues / domain
shift, calibration and fairness.

  python -m launch.analyze --teacher runs/fm/teacher --distilled kd=runs/fm/kd,crd=runs/fm/crd \
      --independent runs/fm/student --out runs/fm/analysis \
      [--config configs/analysis.py:fmnist] [--num_examples 2000] [--probes agreement,cka] \
      [--config.probes.adversarial.pgd_steps=5]
Writes report.md, report.json and PNG figures into --out (settings: configs/analysis.py).
"""

import os

from absl import app, flags
from ml_collections import config_flags

from kdjax import cli
from kdjax.analysis import report

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_CONFIG = config_flags.DEFINE_config_file(
  "config", os.path.join(_ROOT, "configs", "analysis.py") + ":fmnist", "Analysis settings."
)
_TEACHER = flags.DEFINE_string("teacher", None, "Teacher run (workdir); or --config.teacher.")
_DISTILLED = flags.DEFINE_list("distilled", None, "Distilled students: NAME=WORKDIR,...")
_INDEPENDENT = flags.DEFINE_string("independent", None, "Independently trained student run.")
_OUT = flags.DEFINE_string("out", None, "Output directory (or --config.out_dir).")
_N = flags.DEFINE_integer("num_examples", None, "Evaluation examples (overrides the config).")
_PROBES = flags.DEFINE_list("probes", None, "Subset of the configured probes.")
_PROGRESS = flags.DEFINE_bool("progress", None, "Progress bars (overrides the config).")


def _run(config):
  for field, flag in (("teacher", _TEACHER), ("independent", _INDEPENDENT), ("out_dir", _OUT)):
    if flag.value:
      config[field] = flag.value
  if _DISTILLED.value:
    config.distilled = ",".join(_DISTILLED.value)
  if _N.value is not None:
    config.num_examples = _N.value
  if _PROGRESS.value is not None:
    config.progress = _PROGRESS.value
  if _PROBES.value:
    report.select_probes(config, _PROBES.value)
  return report.analyze(config)


def main(argv):
  del argv
  config = _CONFIG.value
  for field, flag in (
    ("teacher", "teacher"),
    ("distilled", "distilled"),
    ("independent", "independent"),
    ("out_dir", "out"),
  ):
    if not config[field]:
      cli.require(getattr(flags.FLAGS, flag), flag)
  rep = cli.guarded(_run, config)
  decided = [d for d in rep["directions"] if d["holds"] is not None]
  for d in rep["directions"]:
    ans = "n/a" if d["holds"] is None else ("yes" if d["holds"] else "no")
    print(f"[{d['probe']}] {d['student']}: {d['claim']}: {ans}")
  secs = ", ".join(f"{k} {v:.0f}s" for k, v in rep["setup"]["seconds"].items())
  print(
    f"paper direction holds in {sum(d['holds'] for d in decided)}/{len(decided)} comparisons; "
    f"time: {secs}; report: {os.path.join(config.out_dir, 'report.md')}"
  )


if __name__ == "__main__":
  app.run(main, flags_parser=cli.parse_flags)
