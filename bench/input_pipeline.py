"""Input-pipeline throughput for ImageNet-sized JPEGs: decode + RandomResizedCrop(224) + flip.

Builds a fixture of natural-looking JPEGs (smooth colour fields, shapes, texture and noise;
500x375 or 375x500, PIL quality 90) in one ArrayRecord file (record = 4-byte label + JPEG bytes),
then measures

  * in this process, per image: reading the record (ArrayRecord, group_size 1, as TFDS writes
    it); JPEG decode alone; decode + RRC + flip (kdjax.data.stream's
    transform, the one GrainStream applies); the same with PIL's JPEG draft mode (DCT-domain
    downscaling before the resize: faster, slightly different pixels; not what kdjax uses);
  * the Grain pipeline (ArrayRecord source -> decode + RRC + flip -> batch 32) with 0, 1, 2
    worker processes: images/s of wall time; images per CPU-second of all processes (main +
    workers, start-up included); and the steady-state images per CPU-second of the decoding
    processes (from each process's CPU clock between its first and last image: the rate one
    free core sustains once the workers run).

The machine may be shared: wall rates fall with load, CPU-second rates much less; the load
average is printed. Usage:

  python bench/input_pipeline.py [--n 256] [--repeat 4] [--workers 0,1,2] [--dir /tmp/x]
"""

from __future__ import annotations

import argparse
import io
import os
import resource
import struct
import sys
import tempfile
import time

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
  sys.path.insert(0, ROOT)

# NVIDIA DeepLearningExamples, PyTorch/Classification/ConvNets/resnet50v1.5/README.md,
# "Training performance: NVIDIA DGX A100 (8x A100 80GB)": 1 GPU, mixed precision, pytorch-21.03
# NGC container: 2470 img/s (TF32: 938 img/s).
RESNET50_A100_AMP_IMG_S = 2470
RESNET50_A100_TF32_IMG_S = 938


def natural_image(rng: np.random.Generator, w: int, h: int) -> np.ndarray:
  """uint8 (h, w, 3): a low-frequency colour field + random shapes + mid texture + noise."""
  low = rng.normal(0, 1, (6, 8, 3))
  low = (low - low.min()) / (np.ptp(low) + 1e-6) * 200 + 20
  img = Image.fromarray(low.astype(np.uint8)).resize((w, h), Image.Resampling.BICUBIC)
  draw = ImageDraw.Draw(img)
  for _ in range(int(rng.integers(15, 40))):
    x0, y0 = int(rng.integers(0, w)), int(rng.integers(0, h))
    x1, y1 = x0 + int(rng.integers(20, w // 2)), y0 + int(rng.integers(20, h // 2))
    col = tuple(int(c) for c in rng.integers(0, 256, 3))
    (draw.ellipse if rng.random() < 0.5 else draw.rectangle)([x0, y0, x1, y1], fill=col)
    draw.line(
      [int(v) for v in rng.integers(0, max(w, h), 4)], fill=col[::-1], width=int(rng.integers(1, 4))
    )
  img = img.filter(ImageFilter.GaussianBlur(radius=float(rng.uniform(0.5, 1.2))))
  a = np.asarray(img).astype(np.float32)
  mid = rng.normal(0, 1, (h // 3, w // 3, 3)).astype(np.float32)
  mid = (
    np.asarray(
      Image.fromarray(((mid + 4) * 32).clip(0, 255).astype(np.uint8)).resize(
        (w, h), Image.Resampling.BILINEAR
      )
    ).astype(np.float32)
    - 128
  )
  a = a + 0.5 * mid + rng.normal(0, 13, a.shape)
  return a.clip(0, 255).astype(np.uint8)


def build_fixture(path: str, n: int, seed: int = 0) -> dict:
  from array_record.python.array_record_module import ArrayRecordWriter  # pylint: disable=g-import-not-at-top

  rng = np.random.default_rng(seed)
  writer = ArrayRecordWriter(path, "group_size:1")
  sizes, pixels = [], []
  for i in range(n):
    w, h = (500, 375) if rng.random() < 0.75 else (375, 500)
    buf = io.BytesIO()
    Image.fromarray(natural_image(rng, w, h)).save(buf, format="JPEG", quality=90)
    data = buf.getvalue()
    writer.write(struct.pack("<i", i % 1000) + data)
    sizes.append(len(data))
    pixels.append(w * h)
  writer.close()
  return {"n": n, "mean_kb": float(np.mean(sizes)) / 1024, "mean_px": float(np.mean(pixels))}


def decode(record: bytes) -> tuple[np.ndarray, int]:
  label = struct.unpack("<i", record[:4])[0]
  with Image.open(io.BytesIO(record[4:])) as im:
    return np.asarray(im.convert("RGB")), label


def decode_draft_rrc(record: bytes, rng: np.random.Generator, size: int = 224) -> np.ndarray:
  """Draft-mode variant: the RRC box is drawn on the full size, then the JPEG is decoded at the
  smallest DCT scale (1/2, 1/4, 1/8) that keeps the box at least `size` pixels wide and high."""
  from kdjax.data import stream  # pylint: disable=g-import-not-at-top

  with Image.open(io.BytesIO(record[4:])) as im:
    W, H = im.size
    top, left, h, w = stream.random_resized_crop_box(H, W, rng)
    scale = max(1, min(w // size, h // size))
    if scale > 1:
      im.draft("RGB", (W // scale, H // scale))
    im = im.convert("RGB")
    sx, sy = im.size[0] / W, im.size[1] / H
    out = im.resize(
      (size, size),
      Image.Resampling.BILINEAR,
      box=(left * sx, top * sy, (left + w) * sx, (top + h) * sy),
    )
  out = np.asarray(out)
  return out[:, ::-1] if rng.random() < 0.5 else out


class DecodeRRC:
  """Grain map: record -> {image uint8 (224, 224, 3), label}; rng from the record's label/slot
  (a benchmark: the feed's real keying is kdjax.data.grain_feed)."""

  def __init__(self):
    self.count = 0

  def __call__(self, record):
    from kdjax.data import stream  # pylint: disable=g-import-not-at-top

    img, label = decode(record)
    self.count += 1
    rng = np.random.default_rng([label, self.count])
    out = stream.train_image_transform(img, rng)
    # Every 16th image, the process's CPU clock (a costly call under load, so not every image):
    # two stamps of one process measure its steady-state cost per image (map + batching +
    # hand-off to the main process), without its start-up.
    cpu = time.process_time() if self.count % 16 == 0 else np.nan
    return {
      "image": out,
      "label": np.int32(label),
      "pid": np.int64(os.getpid()),
      "n": np.int64(self.count),
      "cpu": np.float64(cpu),
    }


def _children_cpu() -> float:
  r = resource.getrusage(resource.RUSAGE_CHILDREN)
  return r.ru_utime + r.ru_stime


def _self_cpu() -> float:
  r = resource.getrusage(resource.RUSAGE_SELF)
  return r.ru_utime + r.ru_stime


def bench_in_process(records, repeat: int, source=None) -> dict:
  from kdjax.data import stream  # pylint: disable=g-import-not-at-top

  out = {}

  def run(name, fn):
    best = None
    for _ in range(repeat):
      t0, c0 = time.perf_counter(), time.process_time()
      for i, r in enumerate(records):
        fn(i, r)
      wall, cpu = time.perf_counter() - t0, time.process_time() - c0
      best = (wall, cpu) if best is None or cpu < best[1] else best
    out[name] = {
      "img_s_wall": len(records) / best[0],
      "img_per_cpu_s": len(records) / best[1],
      "ms_per_img_cpu": 1000 * best[1] / len(records),
    }

  if source is not None:  # TFDS's layout: ArrayRecord, group_size 1, one record per read
    run("read (ArrayRecord)", lambda i, r: source[i])
  run("decode", lambda i, r: decode(r))
  run(
    "decode+rrc+flip",
    lambda i, r: stream.train_image_transform(decode(r)[0], np.random.default_rng([0, i])),
  )
  run("decode(draft)+rrc+flip", lambda i, r: decode_draft_rrc(r, np.random.default_rng([0, i])))
  return out


def bench_grain(path: str, n: int, workers: int, repeat: int, batch: int = 32) -> dict:
  import grain  # pylint: disable=g-import-not-at-top
  from absl import flags  # pylint: disable=g-import-not-at-top

  if not flags.FLAGS.is_parsed():
    flags.FLAGS.mark_as_parsed()
  src = grain.sources.ArrayRecordDataSource([path])
  ds = (
    grain.MapDataset.source(src).repeat(repeat).map(DecodeRRC()).batch(batch, drop_remainder=True)
  )
  ds = ds.to_iter_dataset()
  if workers:
    ds = ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=workers, per_worker_buffer_size=2))
  c_self0, c_child0 = _self_cpu(), _children_cpu()
  t0 = time.perf_counter()
  it = iter(ds)
  first = next(it)
  t_first = time.perf_counter() - t0
  count = len(first["label"])
  stamps = {}
  t1 = time.perf_counter()
  for b in it:
    count += len(b["label"])
    for pid, k, cpu in zip(b["pid"].tolist(), b["n"].tolist(), b["cpu"].tolist()):
      if cpu == cpu:  # not NaN
        stamps.setdefault(pid, []).append((k, cpu))
  t_end = time.perf_counter()
  if hasattr(it, "close"):
    it.close()
  time.sleep(0.5)  # let the workers exit and be reaped (their CPU time lands in CHILDREN)
  steady = count - len(first["label"])
  cpu_total = (_self_cpu() - c_self0) + (_children_cpu() - c_child0)
  steady_imgs = sum(max(v)[0] - min(v)[0] for v in stamps.values())
  steady_cpu = sum(max(v)[1] - min(v)[1] for v in stamps.values())
  return {
    "workers": workers,
    "images": count,
    "first_batch_s": t_first,
    "img_per_cpu_s_steady": steady_imgs / steady_cpu if steady_cpu > 0 else float("nan"),
    "img_s_wall": steady / (t_end - t1),
    "img_per_cpu_s": count / cpu_total if cpu_total > 0 else float("nan"),
    "main_cpu_s": _self_cpu() - c_self0,
    "worker_cpu_s": _children_cpu() - c_child0,
  }


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--n", type=int, default=256)
  p.add_argument("--repeat", type=int, default=4, help="passes over the fixture per measurement")
  p.add_argument("--workers", default="0,1,2")
  p.add_argument("--dir", default=None)
  a = p.parse_args(argv)
  d = a.dir or tempfile.mkdtemp(prefix="kdjax_input_bench_")
  os.makedirs(d, exist_ok=True)
  path = os.path.join(d, f"jpegs_{a.n}.array_record")
  t0 = time.perf_counter()
  fx = build_fixture(path, a.n)  # deterministic (seed 0): rebuilt each run, ~0.1 s per image
  print(
    f"fixture: {fx['n']} JPEGs (q90), mean {fx['mean_kb']:.0f} KiB, mean "
    f"{fx['mean_px'] / 1e3:.0f} kpixel, built in {time.perf_counter() - t0:.1f}s -> {path}"
  )
  from array_record.python.array_record_data_source import ArrayRecordDataSource  # pylint: disable=g-import-not-at-top

  src = ArrayRecordDataSource([path])
  records = [src[i] for i in range(len(src))]
  print(f"cores: {os.cpu_count()}, load average {os.getloadavg()[0]:.1f}")
  rows = bench_in_process(records, repeat=2, source=src)
  print("\nin-process, one image at a time (best of 2 passes):")
  print(f"{'stage':26s} {'img/s wall':>11s} {'img/CPU-s':>10s} {'ms CPU/img':>11s}")
  for k, v in rows.items():
    print(f"{k:26s} {v['img_s_wall']:11.0f} {v['img_per_cpu_s']:10.0f} {v['ms_per_img_cpu']:11.2f}")
  print(
    f"\nGrain pipeline, ArrayRecord -> decode + RRC + flip -> batch 32, {a.repeat} passes "
    f"({a.repeat * a.n} images):"
  )
  print(
    f"{'workers':>7s} {'img/s wall':>11s} {'img/CPU-s':>10s} {'steady img/CPU-s':>17s} "
    f"{'first batch s':>14s} {'main CPU s':>11s} {'workers CPU s':>14s}"
  )
  grain_rows = []
  for w in [int(x) for x in a.workers.split(",") if x != ""]:
    r = bench_grain(path, a.n, w, a.repeat)
    grain_rows.append(r)
    print(
      f"{w:7d} {r['img_s_wall']:11.0f} {r['img_per_cpu_s']:10.0f} "
      f"{r['img_per_cpu_s_steady']:17.0f} {r['first_batch_s']:14.2f}"
      f" {r['main_cpu_s']:11.1f} {r['worker_cpu_s']:14.1f}"
    )
  per_core = rows["decode+rrc+flip"]["img_per_cpu_s"]
  per_core_draft = rows["decode(draft)+rrc+flip"]["img_per_cpu_s"]
  with_workers = [r["img_per_cpu_s_steady"] for r in grain_rows if r["workers"] > 0]
  per_core_grain = min(with_workers) if with_workers else None
  print(f"\nload average now {os.getloadavg()[0]:.1f}")
  for name, rate in [
    ("A100 mixed precision", RESNET50_A100_AMP_IMG_S),
    ("A100 TF32", RESNET50_A100_TF32_IMG_S),
  ]:
    line = (
      f"ResNet-50 at {rate} img/s ({name}, NVIDIA DeepLearningExamples): "
      f"{rate / per_core:.1f} cores at the bare transform's {per_core:.0f} img/core-s"
    )
    if per_core_grain:
      line += (
        f", {rate / per_core_grain:.1f} cores at the Grain workers' {per_core_grain:.0f} img/core-s"
      )
    line += f", {rate / per_core_draft:.1f} with draft decoding"
    print(line)
  return rows, grain_rows


if __name__ == "__main__":
  main()
