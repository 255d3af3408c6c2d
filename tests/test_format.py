"""The whole tree is formatted by the one configured formatter (ruff format, pyproject.toml)."""

import os
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _ruff():
  exe = os.path.join(os.path.dirname(sys.executable), "ruff")
  return exe if os.path.exists(exe) else shutil.which("ruff")


def test_tree_is_formatted():
  ruff = _ruff()
  if ruff is None:
    pytest.fail("ruff is not installed: pip install -e '.[test]' (it is in the test extra)")
  r = subprocess.run([ruff, "format", "--check", "."], cwd=ROOT, capture_output=True, text=True)
  assert r.returncode == 0, (
    "files not formatted; run `.venv/bin/ruff format .`:\n" + r.stdout[-3000:] + r.stderr[-2000:]
  )
