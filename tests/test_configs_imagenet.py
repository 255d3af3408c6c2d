"""ImageNet (and Tiny-ImageNet) configs: every cell validates and its method binds to the pair,
and one representative cell trains one step on TFDS mock ImageNet through the streamed path.

* Every cell of configs/imagenet/{ttm,mdistiller_dkd,ojha,sftn}.py: ``validate`` + ``build_method``
  + ``Method.bind`` against the real 224x224 tap shapes of its student and teacher (traced with
  ``jax.eval_shape``, once per architecture) + connector init on those shapes (ReviewKD's ABF
  chain, FitNet's ConvReg, CRD's embeddings) + term states (CRD's memory banks, on a small index
  space). So a tap a cell needs but a model lacks, or a connector that cannot bridge the pair at
  224 px, fails here.
* ``wttm:resnet34-resnet18`` (the TTM headline cell) runs one training step through
  ``train_and_evaluate`` on ``tfds.testing.mock_data`` (HostStream decoding, 32x32 crops, batch
  2; the teacher a random-weight checkpoint). One step of a ResNet-34 -> ResNet-18 pair takes
  ~15 CPU-s to compile, so the other cells are only bound (above), not stepped.
* The published numbers in ``CELLS`` appear in each module's docstring next to the cell.
"""

import importlib.util
import os
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kdjax import models
from kdjax.config import validate
from kdjax.errors import UserError
from kdjax.methods import build_method
from kdjax.methods.registry import BuildContext

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_MODULES = {}


def _load(rel):
  if rel not in _MODULES:
    spec = importlib.util.spec_from_file_location(
      "cfg_" + rel.replace("/", "_")[:-3], os.path.join(ROOT, "configs", rel)
    )
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    _MODULES[rel] = mod
  return _MODULES[rel]


IMAGENET = ["imagenet/ttm.py", "imagenet/mdistiller_dkd.py", "imagenet/ojha.py", "imagenet/sftn.py"]


def _cells():
  return [(rel, f"{m}:{p}") for rel in IMAGENET for (m, p) in _load(rel).CELLS]


@pytest.fixture(scope="module")
def shapes():
  """arch -> tap shapes at 224x224 (1000 classes), traced once per architecture."""
  cache = {}

  def get(arch, **kwargs):
    key = (arch, tuple(sorted(kwargs.items())))
    if key not in cache:
      m = models.get(arch, num_classes=1000, **kwargs)
      x = jax.ShapeDtypeStruct((1, 224, 224, 3), jnp.float32)
      (_, taps) = jax.eval_shape(lambda x: m.init_with_output(jax.random.key(0), x)[0], x)
      cache[key] = {k: tuple(v.shape) for k, v in taps.items()}
    return cache[key]

  return get


def test_cell_tables():
  ttm = _load("imagenet/ttm.py")
  assert len(ttm.CELLS) == 21
  table5 = {k for k, v in ttm.CELLS.items() if "table5" in v}
  assert {m for m, _ in table5} == {"kd", "crd", "reviewkd", "dkd", "dist", "wttm"}
  assert {p for _, p in table5} == {"resnet34-resnet18", "resnet50-mobilenetv1"}
  table7 = {k for k, v in ttm.CELLS.items() if "table7" in v}
  assert {p for _, p in table7} == {f"resnet{d}-resnet18" for d in (34, 50, 101, 152)}
  assert {m for m, _ in table7} == {"kd", "dist", "wttm"}
  assert set(_load("imagenet/mdistiller_dkd.py").CELLS) == {
    (m, p) for m in ("kd", "dkd") for p in ("resnet34-resnet18", "resnet50-mobilenetv1")
  }
  assert set(_load("imagenet/ojha.py").CELLS) == {
    (m, "resnet50-resnet18") for m in ("independent", "kl", "hint", "crd")
  }
  with pytest.raises(ValueError, match="unknown cell"):
    ttm.get_config("crd:resnet101-resnet18")  # not in the paper


@pytest.mark.parametrize("rel", IMAGENET)
def test_published_numbers_are_in_the_docstring(rel):
  mod = _load(rel)
  doc = mod.__doc__
  for (m, p), pub in mod.CELLS.items():
    nums = list(pub.values()) if isinstance(pub, dict) else [pub]
    line = [l for l in doc.splitlines() if re.match(rf"\s*{m}:{p}\s", l)]
    if any(n is not None for n in nums):
      assert len(line) == 1, (rel, m, p)
      for n in nums:
        assert f"{n:.2f}" in line[0], (rel, m, p, n)
        assert 60 < n < 80


# Settings each config must carry (sources in the config docstrings).
def _check_settings(rel, cell, c):
  method, pair = cell.split(":")
  teacher, student = pair.split("-")
  terms = {k: dict(v) for k, v in c.method.terms.items()}
  assert c.dataset.name == "imagenet2012" and c.optim.weight_decay == 1e-4
  assert c.optim.reference_batch_size == c.batch_size
  if rel == "imagenet/ttm.py" and method == "wttm":
    want = (0.7, 3.5) if student == "mobilenetv1" else (0.8, 1.6)  # Table 10
    assert (terms["wttm"]["gamma"], terms["wttm"]["weight"]) == want
    assert c.method.ce_weight == 1.0 and (c.batch_size, c.optim.lr) == (256, 0.1)
  if method == "dkd":
    assert terms["dkd"]["beta"] == {"resnet18": 0.5, "mobilenetv1": 2.0}[student]
    assert (terms["dkd"]["temperature"], terms["dkd"]["warmup_epochs"]) == (1.0, 1)
    assert (c.batch_size, c.optim.lr) == (512, 0.2)
  if method == "reviewkd":
    assert terms["reviewkd"]["student_preact"] is True
    assert (terms["reviewkd"]["weight"], terms["reviewkd"]["max_mid_channels"]) == {
      "resnet18": (1.0, 512),
      "mobilenetv1": (8.0, 256),
    }[student]
  if rel == "imagenet/sftn.py" and method == "teacher":
    assert terms["sftn"]["kl_weight"] == 1.0 and terms["sftn"]["temperature"] == 1.0
    assert (c.optim.lr, c.optim.schedule, c.optim.step_epochs) == (0.1, "step", 30)
  if rel == "imagenet/ojha.py":
    assert c.num_epochs == (90 if method == "independent" else 100)
    if method == "kl":
      assert (
        c.method.ce_weight,
        terms["kl"]["weight"],
        terms["kl"]["teacher_temperature"],
        terms["kl"]["form"],
      ) == (0.5, 0.5, 4.0, "cross_entropy")
    if method == "hint":
      assert (c.method.ce_weight, terms["fitnet"]["weight"]) == (1.0, 5.0)


@pytest.mark.parametrize("rel,cell", _cells())
def test_cell_validates_and_binds_to_its_pair(rel, cell, shapes):
  c = _load(rel).get_config(cell)
  validate(c)
  _check_settings(rel, cell, c)
  method = build_method(c.method)
  kwargs = dict(c.model_kwargs)
  s_shapes = shapes(c.model, **kwargs)
  if method.needs_teacher:
    t_arch = cell.split(":")[1].split("-")[0]
    assert c.teacher.workdir.startswith("runs/imagenet/") and t_arch in c.teacher.workdir
    t_shapes = shapes(_load("imagenet/common.py").arch(t_arch))
    assert s_shapes["pooled"][0] == 1
  else:
    assert method.name in ("supervised", "sftn")
    t_shapes = None
  bound = method.bind(s_shapes, t_shapes)
  # Connector init and term states traced abstractly: shapes are checked, nothing is computed.
  params = jax.eval_shape(
    lambda k: bound.init_connectors(s_shapes, t_shapes, k)[1], jax.random.key(0)
  )
  ctx = BuildContext(
    num_examples=64, teacher_variables=None, student_shapes=s_shapes, teacher_shapes=t_shapes or {}
  )
  jax.eval_shape(lambda k: bound.init_states(ctx, k), jax.random.key(1))
  names = [t.key for t in bound.terms]
  if "reviewkd" in names:  # mdistiller IN/OUT_CHANNELS: 5 ABF levels, teacher widths out
    abf = params["reviewkd"].get("params", params["reviewkd"])
    assert sorted(abf) == [f"abf{i}" for i in range(5)]
    outs = [abf[f"abf{i}"]["conv2"]["kernel"].shape[-1] for i in range(5)]
    assert (
      outs
      == {"resnet18": [64, 128, 256, 512, 512], "mobilenetv1": [256, 512, 1024, 2048, 2048]}[
        cell.split("-")[-1]
      ]
    )
  if "fitnet" in names:  # Ojha: after stage 2, 28x28 (ResNet-18 128 -> ResNet-50 512 ch)
    assert s_shapes["stage2"] == (1, 28, 28, 128) and t_shapes["stage2"] == (1, 28, 28, 512)


def test_tiny_imagenet_kd_config():
  mod = _load("tiny_imagenet/kd.py")
  c = mod.get_config("ResNet50-ShuffleV2")
  validate(c)
  assert c.dataset.name == "tiny_imagenet" and c.method.ce_weight == 0.1
  assert dict(c.method.terms.kd)["temperature"] == 4.0
  assert (c.batch_size, c.optim.lr, tuple(c.optim.milestones)) == (256, 0.2, (60, 120, 160))
  assert build_method(c.method).needs_teacher
  validate(mod.get_config("teacher:ResNet50"))
  with pytest.raises(UserError, match="not a registered kdjax model"):
    mod.get_config("ResNet18-ShuffleV2")
  assert "62.26" in [l for l in mod.__doc__.splitlines() if "ResNet18-ShuffleV2" in l][-1]


def _random_variables(model, x, seed=0):
  rng = np.random.default_rng(seed)

  def fill(path, leaf):
    if getattr(path[-1], "key", None) == "var":
      return np.asarray(rng.uniform(0.5, 1.5, leaf.shape), leaf.dtype)
    return np.asarray(rng.normal(0.0, 0.05, leaf.shape), leaf.dtype)

  return jax.tree_util.tree_map_with_path(fill, jax.eval_shape(model.init, jax.random.key(0), x))


def test_one_step_on_mock_imagenet(tmp_path):
  import tensorflow_datasets as tfds
  from kdjax.teachers.import_torch import save_teacher
  from kdjax.train.loop import train_and_evaluate

  c = _load("imagenet/ttm.py").get_config("wttm:resnet34-resnet18")
  teacher = models.get("resnet34_imagenet", num_classes=1000)
  twd = str(tmp_path / "teacher_resnet34")
  save_teacher(
    _random_variables(teacher, jnp.zeros((1, 32, 32, 3))),
    "resnet34_imagenet",
    1000,
    "imagenet2012",
    twd,
  )
  c.teacher.workdir = twd
  d = c.dataset
  d.image_size, d.train_limit, d.eval_limit, d.stream_threads = 32, 4, 2, 0
  c.batch_size = c.eval_batch_size = c.optim.reference_batch_size = 2
  c.max_steps = 1  # 2 steps per epoch: stops mid-epoch (no student evaluation)
  c.progress = c.tensorboard = c.async_checkpoint = False
  c.checkpoint_every_steps = c.keep_every_epochs = 0
  c.log_every_steps = 1
  with tfds.testing.mock_data(num_examples=8):
    s = train_and_evaluate(c, str(tmp_path / "run"))
  assert s["step"] == 1 and not s["finished"] and s["total_steps"] == 200
  assert s["method"] == "wttm" and s["teacher"]["arch"] == "resnet34_imagenet"
  state = s["state"]
  assert int(state.step) == 1
  leaves = jax.tree_util.tree_leaves(state.params["student"])
  assert all(bool(jnp.all(jnp.isfinite(x))) for x in leaves)
