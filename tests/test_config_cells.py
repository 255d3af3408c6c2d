"""Every config cell of ``configs/`` builds the method recorded in tests/golden/config_cells.json.

The golden (``tools/goldens/make_config_cells.py``) records, per ``get_config(arg)``: the terms
(loss, weight, hyper-parameters), the student/teacher taps each reads, the connectors' parameter
shapes on the pair's taps, the term states, the views, the init stage and the rest of the config,
in a canonical form independent of kdjax's internal names. Models are abstract
(``jax.eval_shape``), so this checks ~800 cells without computing anything.
"""

import importlib.util
import json
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GOLDEN = os.path.join(ROOT, "tests", "golden", "config_cells.json")


def _generator():
  spec = importlib.util.spec_from_file_location(
    "make_config_cells", os.path.join(ROOT, "tools", "goldens", "make_config_cells.py")
  )
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  return mod


def _diff(a, b, path=""):
  """Paths where two JSON-like values differ (first few)."""
  if isinstance(a, dict) and isinstance(b, dict):
    out = [f"{path}/{k}: only in {'golden' if k in a else 'now'}" for k in sorted(set(a) ^ set(b))]
    for k in sorted(set(a) & set(b)):
      out += _diff(a[k], b[k], f"{path}/{k}")
    return out
  return [] if a == b else [f"{path}: golden {a!r} != now {b!r}"]


def test_every_config_cell_builds_the_recorded_method():
  with open(GOLDEN) as f:
    golden = json.load(f)
  now = json.loads(json.dumps(_generator().record_all()))  # same JSON normalisation
  assert len(golden) >= 794  # 404 first recorded + 390 families added
  assert sorted(now) == sorted(golden)
  bad = {cell: _diff(golden[cell], now[cell]) for cell in golden if golden[cell] != now[cell]}
  assert not bad, "\n".join(f"{cell}: {d[:5]}" for cell, d in list(bad.items())[:10])
