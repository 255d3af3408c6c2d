r"""Online distillation: K peers trained together (DML, KDCL; ``config.online``).

  python -m launch.online --config configs/online.py:dml_fmnist --workdir runs/fm/dml
  python -m launch.online --config configs/online.py:kdcl_cifar100:resnet32-resnet32 \
      --workdir runs/cifar100/kdcl_resnet32-resnet32
Relaunching the same command resumes from the workdir. Peer i is a plain run in WORKDIR/peer<i>.
"""

import json

from absl import app, flags
from ml_collections import config_flags

from kdjax import cli

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file (path[:arg]).")
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory (checkpoints, metrics, peers).")


def _run(config, workdir):
  from kdjax.train.loop import train_online

  s = train_online(config, workdir)
  keys = (
    "mode",
    "peers",
    "peer_last_top1",
    "peer_best_top1",
    "ensemble_last_top1",
    "ensemble_best_top1",
    "train_seconds",
  )
  print("[kdjax] " + json.dumps({k: s.get(k) for k in keys}))
  return s


def main(argv):
  del argv
  cli.require(_CONFIG.value, "config")
  cli.guarded(_run, _CONFIG.value, cli.require(_WORKDIR.value, "workdir"))


if __name__ == "__main__":
  app.run(main, flags_parser=cli.parse_flags)
