"""End to end: the what-gets-distilled analysis suite (Ojha et al. 2023, methods.md §6) on three
tiny real Fashion-MNIST runs (teacher, KD student, independent student)."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import tiny_run_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SECTIONS = ("## Agreement", "## CKA", "## Grad-CAM", "## Adversarial transfer", "## Invariance",
            "## Cues and domain shift", "## Calibration", "## Fairness", "## Direction vs paper")
PNGS = ("gradcam_overlays.png", "agreement.png", "adversarial_transfer.png", "consistency.png",
        "shifted_accuracy.png")


def _cfg(idx_dir, **over):
  c = tiny_run_config(**{
      "dataset.name": "fashion_mnist", "dataset.train_limit": 512, "dataset.eval_limit": 128,
      "dataset.crop_pad": 2, "batch_size": 32, "optim.reference_batch_size": 32,
      "eval_batch_size": 128, "num_epochs": 1, "optim.lr": 0.05, "optim.weight_decay": 0.0,
      "optim.milestones": (),
      "tensorboard": False, "log_every_steps": 8, **over})
  c.dataset.idx_dir = idx_dir
  return c


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  from conftest import FMNIST_DIR
  if not os.path.isdir(FMNIST_DIR):
    pytest.fail(f"Fashion-MNIST IDX files missing at {FMNIST_DIR}")
  from kdjax.train.loop import train_and_evaluate
  d = tmp_path_factory.mktemp("analysis_runs")
  paths = {k: str(d / k) for k in ("teacher", "kd", "independent")}
  t = _cfg(FMNIST_DIR, seed=1)
  t.model_kwargs = dict(width=16)
  train_and_evaluate(t, paths["teacher"])
  kd = _cfg(FMNIST_DIR)
  kd.teacher.workdir = paths["teacher"]
  kd.method.name = "kd"
  kd.method.ce_weight = 0.1
  kd.method.terms.kd = dict(weight=0.9, temperature=4.0)
  train_and_evaluate(kd, paths["kd"])
  train_and_evaluate(_cfg(FMNIST_DIR), paths["independent"])
  return paths


def test_teacher_against_itself(runs, tmp_path):
  from kdjax.analysis import analyze
  rep = analyze(runs["teacher"], {"self": runs["teacher"]}, runs["independent"],
                str(tmp_path / "self"), probes=("agreement", "cka", "gradcam", "calibration"),
                num_examples=64, batch_size=32, progress=False)
  s = rep["agreement"]["students"]["self"]
  assert s["agreement"] == 100.0 and s["kl"] == pytest.approx(0.0, abs=1e-6)
  assert rep["cka"]["students"]["self"]["pooled"] == pytest.approx(1.0, abs=1e-4)
  assert rep["cka"]["students"]["self"]["last_stage"] == pytest.approx(1.0, abs=1e-4)
  cam = rep["gradcam"]["students"]["self"]
  assert cam["spearman"] == pytest.approx(1.0, abs=1e-5)
  assert cam["iou_top"] == pytest.approx(1.0) and cam["cosine"] == pytest.approx(1.0, abs=1e-5)
  assert rep["calibration"]["models"]["self"]["ece_transfer"] == pytest.approx(0.0, abs=1e-7)
  # Against a different (independent) student the numbers are not the trivial ones.
  assert rep["cka"]["students"]["independent"]["pooled"] < 0.9999
  assert os.path.exists(tmp_path / "self" / "report.md")


def test_missing_external_data_is_a_clear_error(runs, tmp_path):
  from kdjax.analysis import analyze
  from kdjax.data import DatasetNotFoundError
  with pytest.raises(DatasetNotFoundError, match="fairness probe.*not on this machine"):
    analyze(runs["teacher"], {"kd": runs["kd"]}, runs["independent"], str(tmp_path / "f"),
            probes=("fairness",), num_examples=16, batch_size=16, progress=False,
            fairness_dataset="fairface_not_here:validation", fairness_data_dir=str(tmp_path))


def test_analyze_script_end_to_end(runs, tmp_path):
  out = tmp_path / "report"
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  env.pop("KDJAX_TRACEBACK", None)
  r = subprocess.run(
      [sys.executable, "-m", "launch.analyze", "--teacher", runs["teacher"],
       "--distilled", f"kd={runs['kd']}", "--independent", runs["independent"],
       "--out", str(out), "--config", "configs/analysis.py:fmnist", "--num_examples", "48",
       "--config.batch_size=24", "--config.eps_list=(0.0,0.01568627,0.03137255)",
       "--config.pgd_steps=3"],
      cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
  assert r.returncode == 0, r.stderr[-4000:]
  md = (out / "report.md").read_text()
  for sec in SECTIONS:
    assert sec in md, sec
  assert "only brightness and contrast apply" in md
  assert "class label is used as the group" in md
  assert "color_biased" in md and "skipped" in md
  for png in PNGS:
    p = out / png
    assert p.exists() and p.stat().st_size > 1000, png
  rep = json.loads((out / "report.json").read_text())
  assert set(rep["agreement"]["students"]) == {"kd", "independent"}
  assert len(rep["adversarial"]["attacks"]["pgd"]["transfer_rate"]["kd"]) == 3
  assert rep["adversarial"]["attacks"]["pgd"]["teacher_fooling_rate"][0] == 0.0
  assert {"inverted", "noise", "blur", "edge", "cue_conflict"} <= set(rep["cues"]["sets"])
  assert rep["directions"] and all(d["holds"] in (True, False, None) for d in rep["directions"])
  assert 0.0 <= rep["gradcam"]["preference"]["kd"] <= 100.0
  assert np.isfinite(rep["calibration"]["models"]["kd"]["ece"])


def test_cli_missing_run_is_one_line_error(runs, tmp_path):
  r = subprocess.run(
      [sys.executable, "-m", "launch.analyze", "--teacher", runs["teacher"],
       "--distilled", f"kd={tmp_path / 'nope'}", "--independent", runs["independent"],
       "--out", str(tmp_path / "o")],
      cwd=ROOT, env=dict(os.environ, JAX_PLATFORMS="cpu"), capture_output=True, text=True,
      timeout=300)
  assert r.returncode == 2 and "kdjax: error:" in r.stderr and "Traceback" not in r.stderr


def test_cue_sets_are_deterministic_and_well_formed():
  from kdjax.analysis import cues
  rng = np.random.default_rng(0)
  x = rng.integers(0, 256, (12, 8, 8, 1), dtype=np.uint8)
  y = np.arange(12) % 3
  sets, skipped = cues.build_shifted_sets(x, y, num_classes=3, seed=1)
  assert set(skipped) == {"color_biased", "grayscale"}
  for s in sets.values():
    assert s.images.dtype == np.uint8 and s.images.shape == x.shape
  np.testing.assert_array_equal(sets["inverted"].images, 255 - x)
  cc = sets["cue_conflict"]
  assert np.all(cc.texture_labels != cc.labels)
  again, _ = cues.build_shifted_sets(x, y, num_classes=3, seed=1)
  np.testing.assert_array_equal(again["noise"].images, sets["noise"].images)
  rgb, skipped = cues.build_shifted_sets(x, y, num_classes=3, accepts_rgb=True,
                                         names=("color_biased",))
  assert rgb["color_biased"].images.shape == (12, 8, 8, 3) and not skipped
