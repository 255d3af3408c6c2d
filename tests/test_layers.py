"""Layers point one way (issue 11, item 6): a module may import its own layer or lower ones only.

  0  data, models, losses, errors, checks, eval, config, distributed     (the bottom)
  1  methods, precision
  2  train
  3  teachers, calibration, analysis
  4  experiments, tables, cli, the kdjax package itself      (and launch/, outside the package)

Every ``import kdjax...`` / ``from kdjax... import ...`` of every module is read with ``ast``,
including imports inside functions, so a lazy import cannot hide an upward arrow.
"""

import ast
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PKG = os.path.join(ROOT, "kdjax")

LAYERS = {
  "data": 0,
  "models": 0,
  "losses": 0,
  "errors": 0,
  "checks": 0,
  "eval": 0,
  "config": 0,
  "distributed": 0,
  "methods": 1,
  "precision": 1,
  "train": 2,
  "teachers": 3,
  "calibration": 3,
  "analysis": 3,
  "experiments": 4,
  "tables": 4,
  "cli": 4,
  "__init__": 4,
}

# Upward imports still present in code owned elsewhere (to be removed by its owners). The test
# fails if a new one appears, and also once a listed one is gone (so the list only shrinks).
KNOWN = set()


def _component(path: str) -> str:
  rel = os.path.relpath(path, PKG)
  first = rel.split(os.sep)[0]
  return first[:-3] if first.endswith(".py") else first


def _targets(tree: ast.AST, module_pkg: str):
  """(lineno, first component under kdjax) of every kdjax import in ``tree``."""
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      for a in node.names:
        parts = a.name.split(".")
        if parts[0] == "kdjax" and len(parts) > 1:
          yield node.lineno, parts[1]
    elif isinstance(node, ast.ImportFrom):
      if node.level:  # relative import: resolve against the module's package
        base = module_pkg.split(".")[: len(module_pkg.split(".")) - node.level + 1]
        mod = ".".join(base + ([node.module] if node.module else []))
      else:
        mod = node.module or ""
      parts = mod.split(".")
      if parts[0] != "kdjax":
        continue
      if len(parts) > 1:
        yield node.lineno, parts[1]
      else:  # from kdjax import models, data
        for a in node.names:
          yield node.lineno, a.name


def upward_imports():
  out = set()
  for root, _, files in os.walk(PKG):
    for f in files:
      if not f.endswith(".py"):
        continue
      path = os.path.join(root, f)
      src = _component(path)
      rel = os.path.relpath(path, ROOT)
      pkg = ".".join(os.path.relpath(root, ROOT).split(os.sep))
      with open(path) as fh:
        tree = ast.parse(fh.read(), path)
      for line, tgt in _targets(tree, pkg):
        if tgt not in LAYERS:
          continue
        if LAYERS[tgt] > LAYERS[src]:
          out.add(f"{rel} -> kdjax.{tgt}")
  return out


def test_every_package_has_a_layer():
  comps = {
    _component(os.path.join(PKG, e))
    for e in os.listdir(PKG)
    if e.endswith(".py") or os.path.isdir(os.path.join(PKG, e, ""))
    if not e.startswith("__pycache__")
  }
  assert comps <= set(LAYERS), sorted(comps - set(LAYERS))


def test_no_import_goes_upward():
  found = upward_imports()
  new = sorted(found - KNOWN)
  assert not new, "upward imports (see the layer rule in this file's docstring):\n" + "\n".join(new)
  gone = sorted(KNOWN - found)
  assert not gone, "fixed, remove from KNOWN: " + ", ".join(gone)


def test_the_checker_sees_an_upward_import(tmp_path):
  tree = ast.parse("def f():\n  from kdjax.train import loop\nfrom kdjax import teachers\n")
  assert sorted(t for _, t in _targets(tree, "kdjax.models")) == ["teachers", "train"]
