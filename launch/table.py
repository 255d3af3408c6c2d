r"""Runs a config family's table: cells x seeds, resumable, Markdown + CSV + JSON (kdjax.tables).

  python -m launch.table --config configs/fmnist_quickstart.py --out runs/tables/quickstart
  python -m launch.table --config configs/fmnist_tiny.py --out /tmp/tiny --cells teacher,kd
  python -m launch.table --config configs/tables/repdistiller.py:cifar100 --out runs/tables/rd
  python -m launch.table --config configs/tables/dkd.py:fmnist --out runs/tables/dkd_fmnist
The paper-table families are ``configs/tables/<family>.py`` (``:cifar100[,PAIR]`` for the paper's
setting on a GPU, ``:fmnist`` for the CPU-sized Fashion-MNIST variant); :func:`run` is the same
command as a function.
Relaunching the same command skips finished (cell, seed) runs and resumes interrupted ones; the
table is rewritten after every cell (OUT/table.md, table.csv, table.json).
"""

import os
import shlex
import sys

from absl import app, flags
from ml_collections import config_flags

from kdjax import cli

_CONFIG = config_flags.DEFINE_config_file("config", None, "Family config (path[:arg]).")
_OUT = flags.DEFINE_string("out", None, "Output directory (default runs/tables/<family name>).")
_CELLS = flags.DEFINE_list("cells", [], "Only these cells (default: all, in the family's order).")


def _run(family, out, doc, command, only, log=print):
  from kdjax.tables import run_table

  res = run_table(family, out, module_doc=doc, command=command, only=tuple(only), log=log)
  log(
    "\n" + res["markdown"] + f"\n[kdjax] table in {out}/table.md (.csv, .json); "
    f"{res['seconds']:.0f}s"
  )
  return res


def load_family(config: str, overrides=None):
  """The family ConfigDict of ``'path[:arg]'`` (what ``--config`` loads) and its module's
  docstring; ``overrides`` maps dotted keys to values (like ``--config.<key>=<value>``)."""
  import importlib.util

  path, _, arg = config.partition(":")
  spec = importlib.util.spec_from_file_location("_table_family", path)
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  family = mod.get_config(arg) if arg else mod.get_config()
  for key, value in (overrides or {}).items():
    *parents, leaf = key.split(".")
    node = family
    for k in parents:
      node = node[k]
    node[leaf] = value
  return family, mod.__doc__ or ""


def run(config: str, out: str, *, cells=(), overrides=None, log=print) -> dict:
  """``python -m launch.table --config CONFIG --out OUT [--cells ...]`` as a function."""
  family, doc = load_family(config, overrides)
  command = f"python -m launch.table --config {shlex.quote(config)} --out {shlex.quote(out)}"
  if cells:
    command += " --cells " + ",".join(cells)
  return _run(family, out, doc, command, cells, log=log)


def main(argv):
  del argv
  cli.require(_CONFIG.value, "config")
  path = config_flags.get_config_filename(flags.FLAGS["config"])
  out = _OUT.value or os.path.join("runs", "tables", _CONFIG.value.name)
  command = "python -m launch.table " + " ".join(shlex.quote(a) for a in sys.argv[1:])
  from kdjax.tables import module_doc

  cli.guarded(_run, _CONFIG.value, out, module_doc(path), command, _CELLS.value)


if __name__ == "__main__":
  app.run(main, flags_parser=cli.parse_flags)
