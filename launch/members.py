r"""N seeds of one run config trained together in one vmapped, jitted step (kdjax.train.members).

  python -m launch.members --config configs/members.py:fmnist_kd --seeds 0,1,2,3 \
      --workdir runs/fm/kd_members --config.teacher.workdir runs/fm/teacher
Member S is a plain run in WORKDIR/seed<S> (load_model, launch.evaluate, teacher.workdir all
take it); WORKDIR/summary.json holds every member's last/best top-1 and their mean ± std.
``--shared_data``: every member sees seed[0]'s data order and augmentation (members differ in
their initialisation only) and the teacher forward runs once for all of them. Relaunching the
same command resumes. ``--grid method.terms.kd.temperature=1,4 --grid optim.lr=0.05,0.1``:
hyper-parameters as a member axis too (every grid point x every seed, one unrolled step); the
summary adds each point's mean ± std over the seeds.
"""

import json

from absl import app, flags
from ml_collections import config_flags

from kdjax import cli

_CONFIG = config_flags.DEFINE_config_file("config", None, "Run config file (path[:arg]).")
_WORKDIR = flags.DEFINE_string("workdir", None, "Joint run directory (members in seed<S>/).")
_SEEDS = flags.DEFINE_list("seeds", ["0", "1", "2"], "The members' seeds.")
_IMPL = flags.DEFINE_enum(
  "impl",
  "auto",
  ["auto", "vmap", "unroll"],
  "Member step: jax.vmap (accelerators) or one unrolled copy per member (CPU); auto = by backend.",
)
_GRID = flags.DEFINE_multi_string(
  "grid",
  [],
  "Hyper-parameters as a member axis: KEY=V1,V2,... (a dotted method./optim. config key; "
  "repeat the flag for a Cartesian product); every grid point is trained with every seed.",
)
_SHARED = flags.DEFINE_bool(
  "shared_data",
  False,
  "All members use seeds[0]'s data order and augmentation (one teacher forward per step).",
)


def parse_grid(specs) -> dict:
  """``['method.terms.kd.temperature=1,4']`` -> ``{'method.terms.kd.temperature': [1.0, 4.0]}``
  (numbers where they parse, else strings)."""
  grid = {}
  for spec in specs:
    key, eq, values = spec.partition("=")
    if not eq or not key or not values:
      cli.require("", f"grid (KEY=V1,V2,..., got {spec!r})")
    vals = []
    for v in values.split(","):
      try:
        vals.append(int(v) if v.strip().lstrip("-").isdigit() else float(v))
      except ValueError:
        vals.append(v)
    grid[key.strip()] = vals
  return grid


def _run(config, workdir, seeds, shared, impl, grid=None):
  from kdjax.train.loop import train_members

  s = train_members(config, seeds, workdir, shared_data=shared, impl=impl, grid=grid or None)
  keys = (
    "model",
    "method",
    "seeds",
    "last_top1",
    "last_top1_mean",
    "last_top1_std",
    "best_top1_mean",
    "best_top1_std",
    "teacher_top1",
    "train_seconds",
    "grid",
  )
  print("[kdjax] " + json.dumps({k: s.get(k) for k in keys}))
  return s


def main(argv):
  del argv
  cli.require(_CONFIG.value, "config")
  try:
    seeds = [int(x) for x in _SEEDS.value]
  except ValueError:
    cli.require("", "seeds (comma-separated integers)")
  cli.guarded(
    _run,
    _CONFIG.value,
    cli.require(_WORKDIR.value, "workdir"),
    seeds,
    _SHARED.value,
    _IMPL.value,
    parse_grid(_GRID.value),
  )


if __name__ == "__main__":
  app.run(main, flags_parser=cli.parse_flags)
