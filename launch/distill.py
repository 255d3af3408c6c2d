r"""Distils a student from a teacher run (``config.teacher.workdir``).

  python -m launch.distill --config configs/cifar100/kd.py:resnet32x4-resnet8x4 \
      --workdir runs/cifar100/kd_r32x4_r8x4 \
      --config.teacher.workdir runs/cifar100/resnet32x4
Relaunching the same command resumes from the workdir.
"""

from absl import app, flags
from ml_collections import config_flags

from kdjax import cli
from kdjax.experiments import distill

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file (path[:arg]).")
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory (checkpoints, metrics).")


def main(argv):
  del argv
  cli.require(_CONFIG.value, "config")
  cli.guarded(distill, _CONFIG.value, cli.require(_WORKDIR.value, "workdir"))


if __name__ == "__main__":
  app.run(main, flags_parser=cli.parse_flags)
