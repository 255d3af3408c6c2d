r"""The offline quickstart: a Fashion-MNIST teacher, the student alone and the student with KD
over three seeds (configs/fmnist_quickstart.py, run by the table runner kdjax.tables); prints
the table and KD's per-seed gain.

  python -m launch.quickstart --workdir runs/quickstart
Relaunching resumes (finished runs are kept). ``--config configs/fmnist_quickstart.py:quick`` is
a one-minute smoke test.
"""

import os
import time

from absl import app, flags
from ml_collections import config_flags

from kdjax import cli

_CONFIG = config_flags.DEFINE_config_file(
  "config", "configs/fmnist_quickstart.py", "Quickstart family config."
)
_WORKDIR = flags.DEFINE_string("workdir", "runs/quickstart", "Where the runs and the table go.")


def quickstart(family, workdir: str, doc: str = "") -> dict:
  from kdjax.tables import paired_gain, run_table

  t0 = time.time()
  res = run_table(
    family, workdir, module_doc=doc, command=f"python -m launch.quickstart --workdir {workdir}"
  )
  g = paired_gain(workdir, family, "kd", "student")
  line = (
    f"KD - student alone (last top-1, paired by seed): {g['mean']:+.2f} ± {g['std']:.2f} "
    f"points over {g['n']} seeds ({g['positive']} of {g['n']} positive)"
    if g["n"]
    else "KD - student alone: no finished seed pair"
  )
  md = res["markdown"] + "\n" + line + "\n"
  with open(os.path.join(workdir, "results.md"), "w") as fh:
    fh.write(md)
  print("\n" + md + f"\ntotal wall time {time.time() - t0:.0f}s; runs in {workdir}")
  res["gain"] = g
  return res


def main(argv):
  del argv
  path = config_flags.get_config_filename(flags.FLAGS["config"])
  from kdjax.tables import module_doc

  cli.guarded(quickstart, _CONFIG.value, _WORKDIR.value, module_doc(path))


if __name__ == "__main__":
  app.run(main, flags_parser=cli.parse_flags)
