r"""The offline quickstart: Fashion-MNIST teacher, student alone, student with KD; prints a table.

  python -m launch.quickstart --workdir runs/quickstart
"""
from absl import app, flags
from ml_collections import config_flags

from kdjax import cli
from kdjax.experiments import quickstart

_CONFIG = config_flags.DEFINE_config_file("config", "configs/quickstart.py", "Quickstart config.")
_WORKDIR = flags.DEFINE_string("workdir", "runs/quickstart", "Where the three runs go.")


def main(argv):
  del argv
  cli.guarded(quickstart, _CONFIG.value, _WORKDIR.value)


if __name__ == "__main__":
  app.run(main)
