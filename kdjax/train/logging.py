"""Metrics to JSONL (always) and TensorBoard event files (tensorboardX, no TensorFlow needed)."""
from __future__ import annotations

import json
import math
import os
import time


class MetricWriter:

  def __init__(self, workdir: str, tensorboard: bool = True):
    os.makedirs(workdir, exist_ok=True)
    self._f = open(os.path.join(workdir, "metrics.jsonl"), "a")
    self._tb = None
    if tensorboard:
      try:
        from tensorboardX import SummaryWriter
        self._tb = SummaryWriter(os.path.join(workdir, "tb"))
      except ImportError:  # pragma: no cover - declared dependency
        self._tb = None

  def write(self, step: int, metrics: dict, prefix: str = ""):
    rec = {"step": int(step), "time": time.time()}
    for k, v in metrics.items():
      v = float(v) if not isinstance(v, (str, int)) else v
      rec[prefix + k] = v
      if self._tb is not None and isinstance(v, (float, int)) and math.isfinite(float(v)):
        self._tb.add_scalar(prefix + k, v, step)
    self._f.write(json.dumps(rec) + "\n")
    self._f.flush()

  def close(self):
    self._f.close()
    if self._tb is not None:
      self._tb.close()


def read_jsonl(path: str):
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]
