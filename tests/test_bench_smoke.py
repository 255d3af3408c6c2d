"""Smoke test of bench/vs_torch.py's kdjax half (tiny models, no timing assertions): the script
runs end to end, times every kdjax variant (step, the bfloat16 step, the BN-folded step, the
epoch loop and its bare step) and writes its JSON record."""

import glob
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_vs_torch_quick_kdjax_half(tmp_path):
  cmd = [
    sys.executable,
    os.path.join(ROOT, "bench", "vs_torch.py"),
    "--quick",
    "--pairs",
    "tiny:4",
    "--torch_python",
    "none",
    "--kdjax",
    "step,step_bf16,loop,loop_bare",
    "--fold_bn",
    "--out",
    str(tmp_path),
  ]
  p = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=600)
  assert p.returncode == 0, p.stderr[-3000:]
  (path,) = glob.glob(str(tmp_path / "vs_torch_*_quick.json"))
  with open(path) as f:
    res = json.load(f)
  (cfg,) = res["configs"]
  assert (cfg["pair"], cfg["batch"]) == ("tiny", 4)
  names = {r["variant"] for r in cfg["rows"]}
  assert names == {
    "kdjax:step",
    "kdjax:step_bf16",
    "kdjax:loop",
    "kdjax:loop_bare",
    "kdjax:step+fold_bn",
  }
  for r in cfg["rows"]:
    assert r["step_ms"] > 0 and r["n"] == 1
  assert "| kdjax:step |" in p.stdout
