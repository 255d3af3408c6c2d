"""PyTorch side of bench/vs_torch.py: a persistent worker (run with a Python that has torch) that
the driver asks, over stdin/stdout JSON lines, to build and time the same KD step as kdjax's.

Step: teacher (eval mode, ``no_grad``) + student (train mode) forward, ``0.1 CE + 0.9 T^2
KL(T=4)`` (``kl_div(log_softmax(s/T), softmax(t/T), 'batchmean') * T^2``), backward,
``SGD(0.05, momentum 0.9, weight_decay 5e-4)``; a fixed random batch already in memory. The models
are tools/parity/torch_models.py's transcriptions of RepDistiller's CIFAR ResNets (the same
definitions kdjax's parity tests import from).

Variants: ``eager`` (NCHW float32), ``channels_last`` (float32), ``compile`` (``torch.compile`` of
both models, float32 NCHW), ``compile_cl`` (compile + channels_last), ``bf16_cl`` (bf16 autocast
+ channels_last).

Protocol (one JSON object per line):
  -> {"cmd": "setup", "key": K, "pair": P, "batch": B, "variant": V}
  <- {"ok": true, "setup_s": ..., "first_step_s": ..., "compile_s": ..., "cold_s": ...}
  -> {"cmd": "time", "key": K, "steps": N}      <- {"ok": true, "step_s": ...}
  -> {"cmd": "quit"}
``cold_s`` is the cold start of that variant as a fresh process would see it: the worker's import
time (interpreter start to torch + models imported) + model build + the first step (compile
included). ``{"cmd": "reset"}`` drops the built steps.
"""

import time

T_START = time.perf_counter()

import json  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402

import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tools", "parity"))
import torch_models  # noqa: E402  pylint: disable=wrong-import-position

T_IMPORTED = time.perf_counter()

PAIRS = {
  "r32x4_r8x4": dict(teacher="resnet32x4", student="resnet8x4", hw=32, c=3, classes=100),
  "r20_r8": dict(teacher="resnet20", student="resnet8", hw=28, c=1, classes=10),
  "r56_r20": dict(teacher="resnet56", student="resnet20", hw=32, c=3, classes=100),
  "tiny": dict(teacher="resnet8", student="resnet8", hw=8, c=1, classes=10),  # smoke only
}
VARIANTS = ("eager", "channels_last", "compile", "compile_cl", "bf16_cl")


def _model(name, classes, c):
  m = torch_models.CIFAR[name](classes)
  if c != 3:  # the transcription's stem takes 3 channels
    m.conv1 = nn.Conv2d(c, m.conv1.out_channels, 3, 1, 1, bias=False)
  return m


def build(pair, batch, variant):
  if variant not in VARIANTS:
    raise ValueError(f"unknown variant {variant!r}; one of {VARIANTS}")
  p = PAIRS[pair]
  torch.manual_seed(0)
  teacher = _model(p["teacher"], p["classes"], p["c"]).eval()
  student = _model(p["student"], p["classes"], p["c"]).train()
  with torch.no_grad():  # non-trivial running statistics, as on the kdjax side
    for mod in teacher.modules():
      if isinstance(mod, nn.BatchNorm2d):
        mod.running_mean.normal_(0, 0.1)
        mod.running_var.uniform_(0.5, 1.5)
  cl = variant in ("channels_last", "compile_cl", "bf16_cl")
  fmt = torch.channels_last if cl else torch.contiguous_format
  teacher, student = teacher.to(memory_format=fmt), student.to(memory_format=fmt)
  for prm in teacher.parameters():
    prm.requires_grad_(False)
  opt = torch.optim.SGD(student.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
  x = torch.randn(batch, p["c"], p["hw"], p["hw"]).to(memory_format=fmt)
  y = torch.randint(0, p["classes"], (batch,))
  t_fwd, s_fwd = teacher, student
  if variant.startswith("compile"):
    t_fwd, s_fwd = torch.compile(teacher), torch.compile(student)
  amp = variant == "bf16_cl"

  def step():
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
      with torch.no_grad():
        t = t_fwd(x)
      s = s_fwd(x)
      s32, t32 = s.float(), t.float()
      kl = F.kl_div(F.log_softmax(s32 / 4, 1), F.softmax(t32 / 4, 1), reduction="batchmean") * 16
      loss = 0.1 * F.cross_entropy(s32, y) + 0.9 * kl
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return loss

  return step


def main():
  steps = {}
  for line in sys.stdin:
    msg = json.loads(line)
    try:
      if msg["cmd"] == "quit":
        break
      if msg["cmd"] == "setup":
        t0 = time.perf_counter()
        fn = build(msg["pair"], msg["batch"], msg["variant"])
        t1 = time.perf_counter()
        loss = fn()
        t2 = time.perf_counter()
        fn()  # second step: torch.compile may recompile once (e.g. for the optimiser state)
        t3 = time.perf_counter()
        steps[msg["key"]] = fn
        out = {
          "ok": True,
          "setup_s": t1 - t0,
          "first_step_s": t2 - t1,
          "second_step_s": t3 - t2,
          "loss": float(loss),
          "threads": torch.get_num_threads(),
          "framework": f"torch {torch.__version__}",
          "import_s": T_IMPORTED - T_START,
        }
        out["cold_s"] = (T_IMPORTED - T_START) + (t2 - t0)
        if msg["variant"].startswith("compile"):
          out["compile_s"] = (t2 - t1) + (t3 - t2)
      elif msg["cmd"] == "reset":
        steps.clear()
        out = {"ok": True}
      elif msg["cmd"] == "time":
        fn = steps[msg["key"]]
        n = int(msg["steps"])
        t0 = time.perf_counter()
        for _ in range(n):
          fn()
        out = {"ok": True, "step_s": (time.perf_counter() - t0) / n}
      else:
        out = {"ok": False, "error": f"unknown cmd {msg['cmd']!r}"}
    except Exception as e:  # pylint: disable=broad-except
      out = {"ok": False, "error": f"{type(e).__name__}: {e}"[-2000:]}
    sys.stdout.write(json.dumps(out) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
  main()
