"""PyTorch import: numerical parity with the PyTorch references, errors, teacher checkpoints.

Fixtures ``tests/golden/parity/<arch>.npz`` come from ``tools/parity/make_fixtures.py`` (run with
torch): the PyTorch reference of every CIFAR model (RepDistiller) and of the four ImageNet models
(torchvision, mdistiller), random weights and BN affine parameters, calibrated BN statistics,
eval-mode outputs on a fixed input computed in float64 by the PyTorch module (so the tolerance
measures kdjax's own float32 error; PyTorch's float32 error, stored as ``torch_float32_rel_err``,
is of the same size: up to ~6e-5 for the deepest models). The weights are stored as a
deterministic recipe (``tests/golden/parity/recipe.py``); each test rebuilds the state dict, writes
it as a ``.npz`` state dict, imports it through ``load_torch_state_dict`` + ``convert`` and
compares logits and every tap.

RepDistiller's feature list maps to kdjax taps as (anchors §4.1): ``feats[0]`` -> ``stem``,
``feats[i]`` -> ``stage{i}`` (i = 1..N), ``feats[-1]`` -> ``pooled``; the ``preact=True`` list's
``feats[i]`` -> ``preact_stage{i}`` (MobileNetV2 ignores ``preact``: its preact taps equal the
stage taps). No torch needed.
"""

import functools
import glob
import importlib.util
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from kdjax import models
from kdjax.models import import_torch as it
from kdjax.teachers import import_torch as imported

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURES = os.path.join(ROOT, "tests", "golden", "parity")
CIFAR = [
  "resnet8",
  "resnet14",
  "resnet20",
  "resnet32",
  "resnet44",
  "resnet56",
  "resnet110",
  "resnet8x4",
  "resnet32x4",
  "ResNet50",
  "wrn_16_1",
  "wrn_16_2",
  "wrn_40_1",
  "wrn_40_2",
  "vgg8",
  "vgg11",
  "vgg13",
  "vgg16",
  "vgg19",
  "MobileNetV2",
  "ShuffleV1",
  "ShuffleV2",
]
IMAGENET = ["resnet18_imagenet", "resnet34_imagenet", "resnet50_imagenet", "mobilenetv1_imagenet"]
RTOL = 1e-4  # max |kdjax - torch| / max |torch|, per tensor

_spec = importlib.util.spec_from_file_location("parity_recipe", os.path.join(FIXTURES, "recipe.py"))
recipe = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(recipe)


@functools.lru_cache(maxsize=None)
def _fixture(arch):
  with np.load(os.path.join(FIXTURES, f"{arch}.npz")) as f:
    return {k: f[k] for k in f.files}


def _write_state_dict(arch, directory, transform=lambda sd: sd):
  path = os.path.join(str(directory), f"{arch}_state_dict.npz")
  np.savez(path, **transform(recipe.state_dict(_fixture(arch))))
  return path


def _rel_err(got, want):
  got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
  assert got.shape == want.shape, (got.shape, want.shape)
  return float(np.max(np.abs(got - want)) / max(np.max(np.abs(want)), 1e-30))


def _nhwc(a):
  return np.transpose(a, (0, 2, 3, 1)) if a.ndim == 4 else a


def test_every_zoo_model_has_a_fixture():
  have = {os.path.basename(p)[:-4] for p in glob.glob(os.path.join(FIXTURES, "*.npz"))}
  assert set(CIFAR + IMAGENET) <= have
  assert set(CIFAR + IMAGENET) <= set(models.names())
  total = sum(os.path.getsize(p) for p in glob.glob(os.path.join(FIXTURES, "*.npz")))
  assert total < 40 * 2**20, f"fixtures take {total / 2**20:.1f} MiB"


@pytest.mark.parametrize("arch", CIFAR + IMAGENET)
def test_parity_with_pytorch(arch, tmp_path):
  fx = _fixture(arch)
  sd = it.load_torch_state_dict(_write_state_dict(arch, tmp_path))
  variables, report = it.convert(arch, sd)  # num_classes inferred from the fc
  num_classes = int(fx["num_classes"])
  assert report["num_classes"] == num_classes
  assert report["ignored"] and all(k.endswith("num_batches_tracked") for k in report["ignored"])
  model = models.get(arch, num_classes=num_classes)
  logits, taps = jax.jit(lambda v, x: model.apply(v, x, train=False))(variables, _nhwc(fx["input"]))
  errors = {"logits": _rel_err(logits, fx["logits"])}
  n = model.num_stages
  feats = [fx[f"feat_{i}"] for i in range(n + 2)]
  assert f"feat_{n + 2}" not in fx
  want = {"stem": feats[0], "pooled": feats[-1]}
  for i in range(1, n + 1):
    want[f"stage{i}"] = feats[i]
    want[f"preact_stage{i}"] = fx[f"preact_feat_{i}"] if bool(fx["preact_supported"]) else feats[i]
  assert set(taps) == set(want)
  for k, v in want.items():
    errors[k] = _rel_err(taps[k], _nhwc(v))
  bad = {k: e for k, e in errors.items() if not e <= RTOL}
  assert not bad, (
    f"{arch}: relative errors above {RTOL}: {bad} (PyTorch's own float32 error: "
    f"{float(fx['torch_float32_rel_err']):.1e})"
  )


# ------------------------------------------------------------------------------------- errors
def test_wrong_architecture_is_one_clear_error():
  sd = recipe.state_dict(_fixture("resnet8"))
  with pytest.raises(ValueError) as e:
    it.convert("resnet14", sd)
  msg = str(e.value)
  assert "'resnet14'" in msg and "matches 'resnet8' exactly" in msg
  assert "model variables missing from the checkpoint" in msg
  assert "params/layer1_1/conv1/kernel" in msg
  # The other way round: checkpoint keys the model does not have.
  with pytest.raises(
    ValueError,
    match=r"checkpoint keys with no model variable \(\d+\):"
    r"\n    layer1\.1\.conv1\.weight",
  ):
    it.convert("resnet8", recipe.state_dict(_fixture("resnet14")), guess=False)


def test_shape_mismatch_and_other_family():
  with pytest.raises(ValueError) as e:
    it.convert("resnet8", recipe.state_dict(_fixture("resnet8x4")), guess=False)
  msg = str(e.value)
  assert "looks like another architecture" in msg
  assert "conv1.weight: checkpoint (32, 3, 3, 3), model expects (16, 3, 3, 3)" in msg
  with pytest.raises(ValueError) as e:
    it.convert("resnet8", recipe.state_dict(_fixture("wrn_16_1")), guess=False)
  msg = str(e.value)
  assert "block1.layer.0.bn1.weight" in msg and "params/layer1_0/bn1/scale" in msg


def test_num_classes_and_unknown_arch():
  sd = recipe.state_dict(_fixture("resnet8"))
  with pytest.raises(
    ValueError,
    match=r"fc.weight: checkpoint \(100, 64\), model expects "
    r"\(10, 64\)",
  ):
    it.convert("resnet8", sd, num_classes=10, guess=False)
  with pytest.raises(ValueError, match="Did you mean"):
    it.convert("resnet9", sd)
  with pytest.raises(ValueError, match="one Linear weight"):
    it.infer_num_classes({"conv1.weight": np.zeros((4, 3, 3, 3))})


def test_unwrapping_and_prefixes(tmp_path):
  sd = recipe.state_dict(_fixture("resnet8"))
  # mdistiller distiller checkpoint: student and teacher under module.; keep the student.
  both = {
    **{f"module.student.{k}": v for k, v in sd.items()},
    **{f"module.teacher.{k}": np.zeros_like(v) for k, v in sd.items()},
  }
  for wrapped in (
    both,
    {f"module.{k}": v for k, v in sd.items()},
    {f"student.{k}": v for k, v in sd.items()},
    sd,
  ):
    path = os.path.join(str(tmp_path), "sd.npz")
    np.savez(path, **wrapped)
    got = it.load_torch_state_dict(path)
    assert set(got) == set(sd)
    for k in sd:
      np.testing.assert_array_equal(got[k], sd[k])
  # RepDistiller {'model': sd, 'epoch': ...}, mdistiller {'state_dict': sd} (what torch.load gives).
  assert it._unwrap({"model": sd, "epoch": 240, "optimizer": {}}, "x") is sd
  assert it._unwrap({"state_dict": sd, "epoch": 3}, "x") is sd
  with pytest.raises(ValueError, match="does not hold a state dict"):
    it._unwrap({"epoch": 3}, "x")
  # convert() strips the prefixes too
  variables, _ = it.convert("resnet8", {f"module.{k}": v for k, v in sd.items()})
  np.testing.assert_array_equal(variables["params"]["fc"]["kernel"], sd["fc.weight"].T)


def test_grouped_conv_layout():
  sd = recipe.state_dict(_fixture("ShuffleV1"))
  variables, _ = it.convert("ShuffleV1", sd)
  w = sd["layer1.1.conv1.weight"]  # grouped 1x1 (groups 3): (O, I/g, 1, 1)
  np.testing.assert_array_equal(
    variables["params"]["layer1_1"]["conv1"]["kernel"], w.transpose(2, 3, 1, 0)
  )
  assert variables["params"]["layer1_1"]["conv2"]["kernel"].shape[2] == 1  # depthwise


@pytest.mark.skipif(
  importlib.util.find_spec("torch") is not None,
  reason="torch is installed: the missing-torch message cannot be triggered",
)
def test_pth_needs_torch(tmp_path):
  path = os.path.join(str(tmp_path), "ckpt.pth")
  open(path, "wb").close()
  with pytest.raises(ImportError, match=r"pip install kdjax\[torch\]"):
    it.load_torch_state_dict(path)
  with pytest.raises(FileNotFoundError):
    it.load_torch_state_dict(path + ".missing")


def test_pth_round_trip(tmp_path):
  torch = pytest.importorskip("torch")
  sd = recipe.state_dict(_fixture("resnet8"))
  tsd = {k: torch.from_numpy(v) for k, v in sd.items()}
  for obj in (
    {"model": tsd, "epoch": 240},
    {"state_dict": {f"module.{k}": v for k, v in tsd.items()}},
    tsd,
  ):
    path = os.path.join(str(tmp_path), "ckpt.pth")
    torch.save(obj, path)
    got = it.load_torch_state_dict(path)
    assert set(got) == set(sd)


# ------------------------------------------------------------------------------------- saving
def test_save_teacher_round_trip(tmp_path):
  from kdjax.config import base_config
  from kdjax.train.checkpoint import load_model

  try:
    from kdjax.train.teacher import load_teacher
  except ImportError:
    from kdjax.train.loop import load_teacher
  fx = _fixture("resnet8")
  variables, report = it.convert("resnet8", recipe.state_dict(fx))
  workdir = os.path.join(str(tmp_path), "teacher")
  meta = imported.save_teacher(
    variables, "resnet8", report["num_classes"], "cifar100", workdir, source="x.pth"
  )
  back, back_meta = load_model(workdir)
  assert {k: back_meta[k] for k in meta} == meta
  assert meta == {
    "arch": "resnet8",
    "num_classes": 100,
    "dataset": "cifar100",
    "model_kwargs": {},
    "epoch": 0,
    "step": 0,
    "seed": None,
    "source": "x.pth",
  }
  jax.tree_util.tree_map(np.testing.assert_array_equal, back, variables)
  # The distillation loop accepts it as a teacher, and it computes the PyTorch logits.
  tcfg = base_config().teacher
  tcfg.workdir = workdir
  teacher = load_teacher(tcfg, 100)
  logits, _ = jax.jit(lambda v, x: teacher.module.apply(v, x, train=False))(
    teacher.variables, _nhwc(fx["input"])
  )
  assert _rel_err(logits, fx["logits"]) <= RTOL
  with pytest.raises(ValueError, match="already holds model checkpoints"):
    imported.save_teacher(variables, "resnet8", 100, "cifar100", workdir)


def _launch(*args):
  return subprocess.run(
    [sys.executable, "-m", "launch.import_teacher", *args],
    cwd=ROOT,
    capture_output=True,
    text=True,
    timeout=300,
    env=dict(os.environ, JAX_PLATFORMS="cpu"),
  )


def test_launch_import_teacher(tmp_path):
  from kdjax.train.checkpoint import load_model

  pth = _write_state_dict("resnet8", tmp_path)
  workdir = os.path.join(str(tmp_path), "t")
  r = _launch("--arch", "resnet8", "--pth", pth, "--workdir", workdir, "--dataset", "cifar100")
  assert r.returncode == 0, r.stderr[-3000:]
  assert "imported resnet8 (83,892 params, 100 classes" in r.stdout
  variables, meta = load_model(workdir)
  assert (meta["arch"], meta["num_classes"], meta["dataset"]) == ("resnet8", 100, "cifar100")
  assert meta["source"] == os.path.abspath(pth)
  # A user error is one line on stderr, exit status 2, no traceback.
  r = _launch("--arch", "wrn_16_1", "--pth", pth, "--workdir", os.path.join(str(tmp_path), "u"))
  assert r.returncode == 2, r.stderr[-3000:]
  assert r.stderr.startswith(
    "kdjax: error: Cannot load this checkpoint into 'wrn_16_1' "
    "(num_classes=100). The checkpoint matches 'resnet8' exactly"
  )
  assert "Traceback" not in r.stderr
  r = _launch(
    "--arch",
    "resnet8",
    "--pth",
    pth,
    "--workdir",
    os.path.join(str(tmp_path), "v"),
    "--dataset",
    "cifar10",
  )
  assert r.returncode == 2 and "checkpoint has 100 classes but dataset 'cifar10' has 10" in r.stderr
