"""The ``reviewkd`` method (kdjax/methods/reviewkd.py) and configs/cifar100/reviewkd.py:

* the ABF connectors built from the pair's taps reproduce dvlab-research/ReviewKD's hand-written
  per-model tables (``CIFAR-100/model/reviewkd.py:build_review_kd``: in/out channels, SHAPES,
  OUT_SHAPES; mdistiller's defaults for resnet8x4) for every student family of the config;
* every config cell builds and binds, with the recipe of its docstring;
* one real jitted train step (``init_train_state`` + ``make_steps``) for resnet20 -> resnet8 on
  CIFAR-sized inputs: finite loss, every ABF parameter and BN statistic updated, and the reported
  term value equal to the warm-up-scaled HCL recomputed from the same connector parameters.
"""

import importlib.util
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from kdjax import losses, models
from kdjax.errors import UserError
from kdjax.methods import Outputs, build_method, preset
from kdjax.methods.reviewkd import as_map
from kdjax.train.state import init_train_state, tap_shapes
from kdjax.train.step import make_steps

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _config_module():
  spec = importlib.util.spec_from_file_location(
    "cfg_reviewkd", os.path.join(ROOT, "configs", "cifar100", "reviewkd.py")
  )
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  return mod


R = _config_module()
_SHAPES = {}


def _abstract_taps(name):
  if name not in _SHAPES:
    m = models.get(name, num_classes=100)
    x = jax.ShapeDtypeStruct((1, 32, 32, 3), jnp.float32)
    v = jax.eval_shape(lambda x: m.init(jax.random.PRNGKey(0), x, train=False), x)
    _SHAPES[name] = {
      k: tuple(a.shape)
      for k, a in jax.eval_shape(lambda v, x: m.apply(v, x, train=False), v, x)[1].items()
    }
  return _SHAPES[name]


def _bound(pair):
  cfg = R.get_config(pair)
  teacher = os.path.basename(cfg.teacher.workdir)[len("teacher_") :]
  ss, ts = _abstract_taps(cfg.model), _abstract_taps(teacher)
  method = build_method(cfg.method).bind(ss, ts)
  params = jax.eval_shape(lambda: method.init_connectors(ss, ts, jax.random.PRNGKey(0))[1])
  return cfg, method, ss, ts, params["reviewkd"]


# dvlab-research/ReviewKD build_review_kd: (in_channels, out_channels, shapes, out_shapes), with
# out_shapes = shapes where the table has none. One pair per student family of the config.
DVLAB = {
  "resnet32x4-resnet8x4": ([64, 128, 256, 256], [64, 128, 256, 256], [1, 8, 16, 32], None),
  "resnet56-resnet20": ([16, 32, 64, 64], [16, 32, 64, 64], [1, 8, 16, 32], None),
  "wrn_40_2-wrn_16_2": ([32, 64, 128, 128], [32, 64, 128, 128], [1, 8, 16, 32], None),
  "wrn_40_2-ShuffleV1": ([240, 480, 960, 960], [32, 64, 128, 128], [1, 4, 8, 16], [1, 8, 16, 32]),
  "resnet32x4-ShuffleV2": (
    [116, 232, 464, 1024],
    [64, 128, 256, 256],
    [1, 4, 8, 16],
    [1, 8, 16, 32],
  ),
  "vgg13-vgg8": ([128, 256, 512, 512, 512], [128, 256, 512, 512, 512], [1, 4, 4, 8, 16], None),
  "ResNet50-MobileNetV2": (
    [12, 16, 48, 160, 1280],
    [256, 512, 1024, 2048, 2048],
    [1, 2, 4, 8, 16],
    [1, 4, 8, 16, 32],
  ),
}


@pytest.mark.parametrize("pair", sorted(DVLAB))
def test_connectors_from_taps_reproduce_the_reference_tables(pair):
  in_c, out_c, shapes, out_shapes = DVLAB[pair]
  out_shapes = out_shapes or shapes
  _, method, ss, ts, p = _bound(pair)
  (term,) = method.terms
  n = len(in_c)
  assert len(p) == n and len(term.student_taps) == len(term.teacher_taps) == n
  assert term.student_taps[-1] == term.teacher_taps[-1] == "pooled"
  assert all(k.startswith("preact_stage") for k in term.teacher_taps[:-1])
  mid = min(512, in_c[-1])
  for i in range(n):
    assert p[f"abf{i}"]["conv1"]["kernel"].shape == (1, 1, in_c[i], mid), i
    assert p[f"abf{i}"]["conv2"]["kernel"].shape == (3, 3, mid, out_c[i]), i
    assert ("att_conv" in p[f"abf{i}"]) == (i < n - 1), i
  # SHAPES / OUT_SHAPES (reversed order: pooled first) are the student / teacher map sizes
  size = lambda shp, k: shp[k][1] if len(shp[k]) == 4 else 1
  assert [size(ss, k) for k in term.student_taps][::-1] == shapes
  assert [size(ts, k) for k in term.teacher_taps][::-1] == out_shapes


def test_every_config_cell_builds_with_its_recipe():
  assert len(R.PAIRS) == 10
  for pair, (teacher, student, weight, published) in R.PAIRS.items():
    cfg = R.get_config(pair)
    assert cfg.model == student and cfg.teacher.workdir.endswith(f"teacher_{teacher}")
    assert cfg.method.ce_weight == 1.0
    assert dict(cfg.method.terms.reviewkd) == dict(weight=weight, warmup_epochs=20)
    assert cfg.optim.lr == (0.01 if student in R.LOW_LR else 0.05)
    assert tuple(cfg.optim.milestones) == (150, 180, 210) and cfg.num_epochs == 240
    assert published is None or 69 < published < 78
  _bound("resnet110-resnet32")  # a cell not covered by the table test binds too
  assert preset("reviewkd")["terms"]["reviewkd"]["weight"] == R.PAIRS["resnet32x4-resnet8x4"][2]
  with pytest.raises(ValueError, match="Unknown pair"):
    R.get_config("resnet8-resnet8")


def test_models_without_stage_taps_or_bad_hparams_fail_at_build_time():
  m = build_method(dict(terms=dict(reviewkd=dict(weight=1.0))))
  with pytest.raises(UserError, match="stage1"):
    m.bind({"pooled": (1, 8)}, {"pooled": (1, 8)})
  m = build_method(dict(terms=dict(reviewkd=dict(weight=1.0, student_preact="yes"))))
  with pytest.raises(UserError, match="student_preact"):
    m.bind(_abstract_taps("resnet8"), _abstract_taps("resnet20"))


def test_jitted_train_step_updates_abf_connectors_by_the_hcl_gradient():
  student = models.get("resnet8", num_classes=100)
  teacher = models.get("resnet20", num_classes=100)
  x0 = jnp.zeros((1, 32, 32, 3))
  tv = teacher.init(jax.random.PRNGKey(1), x0, train=False)
  method = build_method(
    dict(name="reviewkd", ce_weight=1.0, terms=dict(reviewkd=dict(weight=5.0, warmup_epochs=20)))
  )
  tx = optax.sgd(0.05, momentum=0.9)
  init = init_train_state(student, (teacher, tv), method, x0, jax.random.PRNGKey(0), tx=tx)
  state = init.state
  assert set(init.connectors) == {"reviewkd"}
  before = jax.device_get((state.params, state.batch_stats))
  steps = make_steps(
    student=student,
    method=init.method,
    tx=tx,
    train_transform=lambda im, r: im.astype(jnp.float32) / 255.0 - 0.5,
    eval_transform=lambda im: im.astype(jnp.float32) / 255.0 - 0.5,
    teacher=teacher,
    connectors=init.connectors,
    emit_norms=False,
  )
  rs = np.random.RandomState(0)
  batch = dict(
    image=rs.randint(0, 255, (8, 32, 32, 3)).astype(np.uint8),
    label=rs.randint(0, 100, (8,)).astype(np.int32),
    index=np.arange(8, dtype=np.int32),
  )
  new_state, metrics = steps.train_batch(state, batch, tv)
  assert np.isfinite(float(metrics["loss"]))
  p0, bs0 = before
  moved = jax.tree_util.tree_map(
    lambda a, b: not np.allclose(a, b),
    p0["connectors"]["reviewkd"],
    jax.device_get(new_state.params["connectors"]["reviewkd"]),
  )
  assert all(jax.tree_util.tree_leaves(moved)), moved
  stats_moved = jax.tree_util.tree_map(
    lambda a, b: not np.allclose(a, b),
    bs0["connectors"]["reviewkd"],
    jax.device_get(new_state.batch_stats["connectors"]["reviewkd"]),
  )
  assert all(jax.tree_util.tree_leaves(stats_moved)), stats_moved
  # the logged term is 5 · (1/20) · HCL of this batch, recomputed outside the step
  x = batch["image"].astype(np.float32) / 255.0 - 0.5
  _, s_taps = student.apply(
    {"params": p0["student"], "batch_stats": bs0["student"]}, x, train=True, mutable=["batch_stats"]
  )[0]
  _, t_taps = teacher.apply(tv, x, train=False)
  (term,) = init.method.terms
  s_feats = tuple(s_taps[k] for k in term.student_taps)
  t_feats = tuple(as_map(t_taps[k]) for k in term.teacher_taps)
  outs = init.connectors["reviewkd"].apply(
    {"params": p0["connectors"]["reviewkd"], "batch_stats": bs0["connectors"]["reviewkd"]},
    s_feats,
    t_feats,
    train=True,
    mutable=["batch_stats"],
  )[0]
  want = float(losses.hcl(outs, t_feats).mean()) / 20.0
  np.testing.assert_allclose(float(metrics["reviewkd"]), want, rtol=1e-4)
