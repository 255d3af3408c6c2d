r"""Trains a network with cross-entropy (a teacher, or a student baseline).

  python -m launch.train_teacher --config configs/cifar100/teacher.py:resnet32x4 \
      --workdir runs/cifar100/resnet32x4
Relaunching the same command resumes from the workdir.
"""

from absl import app, flags
from ml_collections import config_flags

from kdjax import cli
from kdjax.experiments import train_teacher

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file (path[:arg]).")
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory (checkpoints, metrics).")


def main(argv):
  del argv
  cli.require(_CONFIG.value, "config")
  cli.guarded(train_teacher, _CONFIG.value, cli.require(_WORKDIR.value, "workdir"))


if __name__ == "__main__":
  app.run(main, flags_parser=cli.parse_flags)
