"""Metrics to JSONL (always) and TensorBoard event files (tensorboardX, no TensorFlow needed);
console lines and progress bars. Under ``jax.distributed`` only process 0 writes any of them
(the metrics every process computes are the same replicated values)."""

from __future__ import annotations

import json
import math
import os
import time

from kdjax import distributed


def main_print(*args, **kwargs) -> None:
  """``print`` on process 0 only (every process of a multi-process run would print the same)."""
  if distributed.is_main_process():
    print(*args, **kwargs)


def progress_bar(**tqdm_kwargs):
  """A ``tqdm`` bar on process 0; None on the other processes (callers skip a None bar)."""
  if not distributed.is_main_process():
    return None
  from tqdm.auto import tqdm  # pylint: disable=g-import-not-at-top

  return tqdm(**tqdm_kwargs)


class MetricWriter:
  def __init__(self, workdir: str, tensorboard: bool = True, resume_step: int = 0):
    """``resume_step``: the step the run (re)starts from. Lines of later steps (written before
    an interruption, replayed now) and any torn last line are dropped; a run starting at step 0
    starts an empty file. So ``metrics.jsonl`` never holds a step twice after a resume.

    On processes other than 0 of a multi-process run the writer writes nothing (and touches no
    file), so every process can call it unconditionally."""
    self._f = self._tb = None
    self.active = distributed.is_main_process()
    if not self.active:
      return
    os.makedirs(workdir, exist_ok=True)
    path = os.path.join(workdir, "metrics.jsonl")
    keep = []
    if resume_step > 0 and os.path.exists(path):
      with open(path) as f:
        for line in f:
          try:
            rec = json.loads(line)
          except ValueError:
            continue
          if line.endswith("\n") and int(rec.get("step", 0)) <= resume_step:
            keep.append(line)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
      f.writelines(keep)
    os.replace(tmp, path)
    self._f = open(path, "a")
    self._tb = None
    if tensorboard:
      try:
        from tensorboardX import SummaryWriter

        self._tb = SummaryWriter(os.path.join(workdir, "tb"))
      except ImportError:  # pragma: no cover - declared dependency
        self._tb = None

  def write(self, step: int, metrics: dict, prefix: str = ""):
    if not self.active:
      return
    rec = {"step": int(step), "time": time.time()}
    for k, v in metrics.items():
      v = float(v) if not isinstance(v, (str, int)) else v
      rec[prefix + k] = v
      if self._tb is not None and isinstance(v, (float, int)) and math.isfinite(float(v)):
        self._tb.add_scalar(prefix + k, v, step)
    self._f.write(json.dumps(rec) + "\n")
    self._f.flush()

  def close(self):
    if not self.active:
      return
    self._f.close()
    if self._tb is not None:
      self._tb.close()
