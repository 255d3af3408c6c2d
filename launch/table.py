r"""Runs a config family's table: cells x seeds, resumable, Markdown + CSV + JSON (kdjax.tables).

  python -m launch.table --config configs/fmnist_quickstart.py --out runs/tables/quickstart
  python -m launch.table --config configs/fmnist_tiny.py --out /tmp/tiny --cells teacher,kd
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


def _run(family, out, doc, command, only):
  from kdjax.tables import run_table

  res = run_table(family, out, module_doc=doc, command=command, only=tuple(only))
  print(
    "\n" + res["markdown"] + f"\n[kdjax] table in {out}/table.md (.csv, .json); "
    f"{res['seconds']:.0f}s"
  )
  return res


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
