"""End to end (plumbing): the what-gets-distilled report (Ojha et al. 2023, methods.md §6) over
three stored Fashion-MNIST runs, the probe registry, and ``launch/analyze.py``.

The runs are not trained (training is tested elsewhere): each is a tiny_cnn with NumPy-drawn
convolutions whose linear head is fitted in closed form (ridge regression on its pooled features
of 1,000 training images) — to the labels for the teacher and the independent student, to the
teacher's logits for the "distilled" one — and saved as a kdjax model checkpoint. That gives
models with real, distinct predictions in a fraction of a second.
"""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

import kdjax.models
from kdjax import analysis
from kdjax import data as kdata
from kdjax.analysis import probes
from kdjax.analysis.probes import base as probes_base
from kdjax.errors import UserError
from kdjax.train.checkpoint import RunCheckpoints

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SECTIONS = (
  "## Agreement",
  "## CKA",
  "## Grad-CAM",
  "## Adversarial transfer",
  "## Invariance",
  "## Cues and domain shift",
  "## Calibration",
  "## Fairness",
  "## Direction vs paper",
)
PNGS = (
  "gradcam_overlays.png",
  "agreement.png",
  "cka.png",
  "adversarial_transfer.png",
  "consistency.png",
  "shifted_accuracy.png",
)


def _np_variables(model, x, seed):
  rng = np.random.default_rng(seed)
  shapes = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), x, train=False))

  def make(path, s):
    name = jax.tree_util.keystr(path)
    if "kernel" in name:
      return rng.standard_normal(s.shape).astype(np.float32) * np.sqrt(2.0 / np.prod(s.shape[:-1]))
    if "scale" in name or "var" in name:
      return np.ones(s.shape, np.float32)
    return np.zeros(s.shape, np.float32)

  return jax.tree_util.tree_map_with_path(make, shapes)


def _fit_head(model, variables, x, targets):
  """Ridge regression of ``targets`` on the pooled features: the Dense head in closed form."""
  pooled = np.asarray(
    jax.jit(lambda v, z: model.apply(v, z, train=False)[1]["pooled"])(variables, x), np.float64
  )
  mu = pooled.mean(0)
  f = pooled - mu
  w = np.linalg.solve(f.T @ f + 1e-3 * np.eye(f.shape[1]), f.T @ (targets - targets.mean(0)))
  fc = {"kernel": w.astype(np.float32), "bias": (targets.mean(0) - mu @ w).astype(np.float32)}
  return {**variables, "params": {**variables["params"], "fc": fc}}


def _save(workdir, variables, width):
  ck = RunCheckpoints(workdir, async_save=False)
  ck.save_model(
    "kept",
    1,
    variables,
    {
      "arch": "tiny_cnn",
      "num_classes": 10,
      "dataset": "fashion_mnist",
      "epoch": 1,
      "model_kwargs": {"width": width},
    },
  )
  ck.close()


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  from conftest import FMNIST_DIR

  if not os.path.isdir(FMNIST_DIR):
    pytest.fail(f"Fashion-MNIST IDX files missing at {FMNIST_DIR}")
  d = tmp_path_factory.mktemp("analysis_runs")
  info = kdata.info("fashion_mnist")
  train = kdata.load_arrays("fashion_mnist", "train", idx_dir=FMNIST_DIR)
  x = np.asarray(kdata.normalize(train.images[:1000], info.mean, info.std))
  onehot = np.eye(10)[train.labels[:1000]]
  paths = {k: str(d / k) for k in ("teacher", "kd", "independent")}
  t_model = kdjax.models.get("tiny_cnn", num_classes=10, width=16)
  t_vars = _fit_head(t_model, _np_variables(t_model, x[:2], 0), x, onehot)
  _save(paths["teacher"], t_vars, 16)
  t_logits = np.asarray(t_model.apply(t_vars, x, train=False)[0], np.float64)
  s_model = kdjax.models.get("tiny_cnn", num_classes=10, width=8)
  _save(paths["kd"], _fit_head(s_model, _np_variables(s_model, x[:2], 1), x, t_logits), 8)
  _save(paths["independent"], _fit_head(s_model, _np_variables(s_model, x[:2], 2), x, onehot), 8)
  return paths


def _config(runs, out, **over):
  c = analysis.base_config()
  c.teacher, c.independent, c.out_dir = runs["teacher"], runs["independent"], str(out)
  c.distilled = f"kd={runs['kd']}"
  c.num_examples, c.batch_size, c.progress = 64, 32, False
  for k, v in over.items():
    c[k] = v
  return c


def test_teacher_against_itself(runs, tmp_path):
  c = analysis.report.select_probes(
    _config(runs, tmp_path / "self", distilled=f"self={runs['teacher']}"),
    ["agreement", "cka", "gradcam", "calibration"],
  )
  rep = analysis.analyze(c)
  assert rep["setup"]["probes"] == ["agreement", "cka", "gradcam", "calibration"]
  s = rep["agreement"]["students"]["self"]
  assert s["agreement"] == 100.0 and s["kl"] == pytest.approx(0.0, abs=1e-6)
  assert rep["agreement"]["accuracy"]["teacher"] > 30.0  # the fitted head is not chance
  assert rep["cka"]["students"]["self"]["pooled"] == pytest.approx(1.0, abs=1e-4)
  assert rep["cka"]["students"]["self"]["last_stage"] == pytest.approx(1.0, abs=1e-4)
  assert rep["cka"]["students"]["self"]["num_batches"] == 2
  cam = rep["gradcam"]["students"]["self"]
  assert cam["spearman"] == pytest.approx(1.0, abs=1e-5)
  assert cam["iou_top"] == pytest.approx(1.0) and cam["cosine"] == pytest.approx(1.0, abs=1e-5)
  assert rep["calibration"]["models"]["self"]["ece_transfer"] == pytest.approx(0.0, abs=1e-7)
  # Against a different (independent) student the numbers are not the trivial ones.
  assert rep["cka"]["students"]["independent"]["pooled"] < 0.9999
  assert rep["agreement"]["students"]["independent"]["agreement"] < 100.0
  assert os.path.exists(tmp_path / "self" / "report.md")


def test_missing_external_data_is_a_clear_error(runs, tmp_path):
  from kdjax.data import DatasetNotFoundError

  c = analysis.report.select_probes(_config(runs, tmp_path / "f"), ["fairness"])
  c.probes.fairness.dataset = "fairface_not_here:validation"
  c.probes.fairness.data_dir = str(tmp_path)
  with pytest.raises(DatasetNotFoundError, match="fairness probe.*not on this machine"):
    analysis.analyze(c)


def test_config_errors_name_the_fix(runs, tmp_path):
  c = _config(runs, tmp_path / "e")
  c.probes.cka.type = "ckaa"
  with pytest.raises(UserError, match="unknown probe type 'ckaa'. Did you mean 'cka'"):
    analysis.analyze(c)
  c = _config(runs, tmp_path / "e")
  c.probes.adversarial.pgd_stpes = 3
  with pytest.raises(UserError, match=r"no setting\(s\) \['pgd_stpes'\].*pgd_steps"):
    analysis.analyze(c)
  with pytest.raises(UserError, match="unknown probes"):
    analysis.report.select_probes(_config(runs, tmp_path), ["agreement", "nope"])
  with pytest.raises(UserError, match="reserved"):
    analysis.analyze(_config(runs, tmp_path / "e", distilled=f"teacher={runs['kd']}"))


def test_a_new_probe_is_one_registered_class(runs, tmp_path, monkeypatch):
  """The registry path end to end: a probe defined here (one class) is configured by ``type=``,
  computes from the shared context (clean logits, ``Context.predict``), and gets its section."""
  monkeypatch.setattr(probes_base, "_REGISTRY", dict(probes_base._REGISTRY))

  @probes.register("flip_agreement", order=99)
  class FlipAgreement(probes.Probe):
    title = "Horizontal-flip agreement"

    @classmethod
    def defaults(cls):
      return {"axis": 2}

    def compute(self, ctx):
      flipped = np.flip(ctx.images, axis=int(self.settings["axis"]))
      return {
        "same": {
          r.name: 100.0
          * float(np.mean(ctx.predict(r, flipped).argmax(-1) == ctx.logits[r.name].argmax(-1)))
          for r in ctx.runs
        }
      }

    def markdown(self, ctx, result):
      return [probes_base.table(["model", "same (%)"], list(result["same"].items()), nd=1)]

  assert (
    "flip_agreement" in probes.names() and analysis.base_config().probes.flip_agreement.axis == 2
  )
  c = analysis.report.select_probes(_config(runs, tmp_path / "new"), ["agreement"])
  c.probes.hflip = dict(type="flip_agreement", axis=2)
  rep = analysis.analyze(c)
  assert rep["setup"]["probes"] == ["agreement", "hflip"]
  assert set(rep["hflip"]["same"]) == {"teacher", "kd", "independent"}
  assert all(0.0 <= v <= 100.0 for v in rep["hflip"]["same"].values())
  md = (tmp_path / "new" / "report.md").read_text()
  assert "## Horizontal-flip agreement (hflip)" in md


def test_analyze_script_end_to_end(runs, tmp_path):
  out = tmp_path / "report"
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  env.pop("KDJAX_TRACEBACK", None)
  r = subprocess.run(
    [
      sys.executable,
      "-m",
      "launch.analyze",
      "--teacher",
      runs["teacher"],
      "--distilled",
      f"kd={runs['kd']}",
      "--independent",
      runs["independent"],
      "--out",
      str(out),
      "--config",
      "configs/analysis.py:fmnist",
      "--num_examples",
      "48",
      "--config.batch_size=24",
      "--config.probes.adversarial.eps_list=(0.0,0.01568627,0.03137255)",
      "--config.probes.adversarial.pgd_steps=3",
      "--noprogress",
    ],
    cwd=ROOT,
    env=env,
    capture_output=True,
    text=True,
    timeout=600,
  )
  assert r.returncode == 0, r.stderr[-4000:]
  assert "paper direction holds in" in r.stdout
  md = (out / "report.md").read_text()
  for sec in SECTIONS:
    assert sec in md, sec
  assert (
    md.index("## Agreement")
    < md.index("## CKA")
    < md.index("## Grad-CAM")
    < md.index("## Adversarial transfer")
    < md.index("## Fairness")
  )
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
  assert rep["setup"]["config"]["probes"]["adversarial"]["pgd_steps"] == 3
  assert {"inverted", "noise", "blur", "edge", "cue_conflict"} <= set(rep["cues"]["sets"])
  assert rep["directions"] and all(d["holds"] in (True, False, None) for d in rep["directions"])
  assert 0.0 <= rep["gradcam"]["preference"]["kd"] <= 100.0
  assert np.isfinite(rep["calibration"]["models"]["kd"]["ece"])


def test_cli_missing_run_is_one_line_error(runs, tmp_path):
  r = subprocess.run(
    [
      sys.executable,
      "-m",
      "launch.analyze",
      "--teacher",
      runs["teacher"],
      "--distilled",
      f"kd={tmp_path / 'nope'}",
      "--independent",
      runs["independent"],
      "--out",
      str(tmp_path / "o"),
    ],
    cwd=ROOT,
    env=dict(os.environ, JAX_PLATFORMS="cpu"),
    capture_output=True,
    text=True,
    timeout=300,
  )
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
  rgb, skipped = cues.build_shifted_sets(
    x, y, num_classes=3, accepts_rgb=True, names=("color_biased",)
  )
  assert rgb["color_biased"].images.shape == (12, 8, 8, 3) and not skipped
