r"""Calibration study (Fan et al., ICML 2024): distil one student from each teacher, correlate
teacher ECE with student accuracy.

  python -m launch.calibration_study --config configs/cifar100/calibration_kd.py:resnet8,kl \
      --teachers runs/t_r32x4,runs/t_r32x4_short@epoch:100,runs/t_wrn40_2 --out runs/calib \
      [--temperature_scaled]
Writes study.{csv,json,md,png} and reliability diagrams into --out.
"""

from absl import app, flags
from ml_collections import config_flags

from kdjax import cli
from kdjax.calibration.study import calibration_study

_CONFIG = config_flags.DEFINE_config_file("config", None, "Student distillation config.")
_TEACHERS = flags.DEFINE_list("teachers", None, "Teacher workdirs (WORKDIR[@WHICH]).")
_OUT = flags.DEFINE_string("out", None, "Output directory.")
_TS = flags.DEFINE_bool(
  "temperature_scaled", False, "Also distil from temperature-scaled teachers."
)


def main(argv):
  del argv
  cli.require(_CONFIG.value, "config")
  res = cli.guarded(
    calibration_study,
    _CONFIG.value,
    cli.require(_TEACHERS.value, "teachers"),
    cli.require(_OUT.value, "out"),
    temperature_scaled=_TS.value,
  )
  for k, c in res["correlations"].items():
    print(f"{k}: Spearman {c['spearman']:.3f}  Pearson {c['pearson']:.3f}  (n={c['n']})")


if __name__ == "__main__":
  app.run(main, flags_parser=cli.parse_flags)
