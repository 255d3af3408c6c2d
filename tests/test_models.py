"""CIFAR model zoo: parameter counts, tap shapes and the block-by-block protocol.

Expected numbers are RepDistiller's (docs anchors §3 and §4.3), num_classes=100, 32x32 input.
Counts and shapes are only traced (``jax.eval_shape``); real computation runs on one small model
per family at batch 2 (ResNet50 at 8x8), with random variables instead of the initialisers.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kdjax import models

# anchors §3: exact parameter counts with num_classes=100 (BN running statistics excluded).
PARAM_COUNTS = {
  "resnet8": 83_892,
  "resnet14": 181_108,
  "resnet20": 278_324,
  "resnet32": 472_756,
  "resnet44": 667_188,
  "resnet56": 861_620,
  "resnet110": 1_736_564,
  "resnet8x4": 1_233_540,
  "resnet32x4": 7_433_860,
  "wrn_16_1": 180_916,
  "wrn_16_2": 703_284,
  "wrn_40_1": 569_780,
  "wrn_40_2": 2_255_156,
  "vgg8": 3_965_028,
  "vgg11": 9_277_284,
  "vgg13": 9_462_180,
  "vgg16": 14_774_436,
  "vgg19": 20_086_692,
  "MobileNetV2": 812_836,
  "ShuffleV1": 949_258,
  "ShuffleV2": 1_355_528,
  "ResNet50": 23_705_252,
}

# anchors §4.3 as (C, H) per tap, f0..fN then pooled (C only); NHWC in kdjax.
_R = [(16, 32), (16, 32), (32, 16), (64, 8), 64]
_R4 = [(32, 32), (64, 32), (128, 16), (256, 8), 256]
_W2 = [(16, 32), (32, 32), (64, 16), (128, 8), 128]
_VGG = [(64, 32), (128, 16), (256, 8), (512, 4), (512, 4), 512]
TAP_SHAPES = {
  **{
    n: _R
    for n in ["resnet8", "resnet14", "resnet20", "resnet32", "resnet44", "resnet56", "resnet110"]
  },
  "resnet8x4": _R4,
  "resnet32x4": _R4,
  "wrn_16_1": _R,
  "wrn_40_1": _R,
  "wrn_16_2": _W2,
  "wrn_40_2": _W2,
  **{n: _VGG for n in ["vgg8", "vgg11", "vgg13", "vgg16", "vgg19"]},
  "MobileNetV2": [(16, 16), (12, 16), (16, 8), (48, 4), (160, 2), 1280],
  "ShuffleV1": [(24, 32), (240, 16), (480, 8), (960, 4), 960],
  "ShuffleV2": [(24, 32), (116, 16), (232, 8), (464, 4), 1024],
  "ResNet50": [(64, 32), (256, 32), (512, 16), (1024, 8), (2048, 4), 2048],
}

# Real computation (eval-mode block-by-block equality): one small model per family, input side.
BLOCKWISE = {
  "resnet8": 32,
  "wrn_16_1": 32,
  "vgg8": 32,
  "MobileNetV2": 32,
  "ShuffleV1": 32,
  "ShuffleV2": 32,
  "ResNet50": 8,
}

B = 2


def _shuffled_relu(p):
  from kdjax.models.cifar.common import channel_shuffle

  return channel_shuffle(jax.nn.relu(p), 2)


# stage{i} as a function of preact_stage{i} (WRN is checked separately: its preact is a BN).
POST_FROM_PREACT = {
  "resnet8": jax.nn.relu,
  "vgg8": jax.nn.relu,
  "ShuffleV1": jax.nn.relu,
  "ResNet50": jax.nn.relu,
  "ShuffleV2": _shuffled_relu,  # post taps are shuffled, preact taps are not
  "MobileNetV2": lambda p: p,  # RepDistiller ignores preact here
}


@functools.lru_cache(maxsize=None)
def _traced(name):
  """(model, abstract variables, abstract (logits, taps)) at 32x32x3, num_classes=100."""
  model = models.get(name, num_classes=100)
  out, variables = jax.eval_shape(
    model.init_with_output, jax.random.key(0), jnp.zeros((B, 32, 32, 3), jnp.float32)
  )
  return model, variables, out


def _variables(model, x, seed=0):
  """Random variables of the right structure without running the (slow to compile) initialisers.

  Params ~ N(0, 0.1^2); BN running means ~ N(0, 0.1^2), running variances ~ U(0.5, 1.5), so that
  eval-mode BN is not the identity.
  """
  rng = np.random.default_rng(seed)

  def fill(path, leaf):
    if getattr(path[-1], "key", None) == "var":
      return jnp.asarray(rng.uniform(0.5, 1.5, leaf.shape), leaf.dtype)
    return jnp.asarray(rng.normal(0.0, 0.1, leaf.shape), leaf.dtype)

  abstract = jax.eval_shape(model.init, jax.random.key(0), x)
  return jax.tree_util.tree_map_with_path(fill, abstract)


def _expected_taps(name):
  spec = TAP_SHAPES[name]
  n = len(spec) - 2
  exp = {"stem": (B, spec[0][1], spec[0][1], spec[0][0]), "pooled": (B, spec[-1])}
  for i in range(1, n + 1):
    c, h = spec[i]
    exp[f"stage{i}"] = exp[f"preact_stage{i}"] = (B, h, h, c)
  return exp


def test_zoo_is_registered():
  # Other (non-zoo) models may be registered too.
  assert set(PARAM_COUNTS) <= set(models.names())


@pytest.mark.parametrize("name", sorted(PARAM_COUNTS))
def test_param_count(name):
  _, variables, _ = _traced(name)
  assert models.count_params(variables["params"]) == PARAM_COUNTS[name]
  assert set(variables) == {"params", "batch_stats"}


@pytest.mark.parametrize("name", sorted(TAP_SHAPES))
def test_tap_shapes(name):
  model, _, (logits, taps) = _traced(name)
  assert logits.shape == (B, 100)
  assert {k: v.shape for k, v in taps.items()} == _expected_taps(name)
  assert type(model).num_stages == len(TAP_SHAPES[name]) - 2


def _blockwise(model, variables, x, train=False):
  h, taps = model.apply(variables, x, train, method="apply_stem")
  taps = dict(taps)
  for i in range(1, model.num_stages + 1):
    h, t = model.apply(variables, h, i, train, method="apply_stage")
    assert not set(t) & set(taps), f"stage {i} re-emits {set(t) & set(taps)}"
    taps.update(t)
  logits, t = model.apply(variables, h, train, method="apply_head")
  taps.update(t)
  return logits, taps


@pytest.mark.parametrize("name", sorted(BLOCKWISE))
def test_blockwise_equals_call(name):
  model = models.get(name, num_classes=10)
  side = BLOCKWISE[name]
  x = jax.random.normal(jax.random.key(1), (B, side, side, 3))
  variables = _variables(model, x)
  # One jit for both paths: a single XLA compile instead of hundreds of eager op compiles.
  both = jax.jit(lambda v, x: (model.apply(v, x), _blockwise(model, v, x)))
  (logits, taps), (logits_b, taps_b) = both(variables, x)
  assert logits.shape == (B, 10)
  np.testing.assert_array_equal(np.asarray(logits_b), np.asarray(logits))
  assert set(taps_b) == set(taps)
  for k in taps:
    np.testing.assert_array_equal(np.asarray(taps_b[k]), np.asarray(taps[k]), err_msg=k)
  # Family-specific relation between the post and pre-activation stage taps.
  if name in POST_FROM_PREACT:
    for i in range(1, model.num_stages + 1):
      np.testing.assert_array_equal(
        np.asarray(taps[f"stage{i}"]),
        np.asarray(POST_FROM_PREACT[name](taps[f"preact_stage{i}"])),
        err_msg=f"stage{i}",
      )


def test_preact_semantics_resnet8():
  model = models.get("resnet8", num_classes=10)
  x = jax.random.normal(jax.random.key(1), (B, 32, 32, 3))
  variables = _variables(model, x)
  _, taps = model.apply(variables, x)
  for i in (1, 2, 3):
    assert float(jnp.min(taps[f"preact_stage{i}"])) < 0.0
  np.testing.assert_allclose(taps["pooled"], taps["stage3"].mean(axis=(1, 2)), rtol=1e-6)


def test_preact_semantics_wrn():
  model = models.get("wrn_16_1", num_classes=10)
  x = jax.random.normal(jax.random.key(1), (B, 32, 32, 3))
  variables = _variables(model, x)
  _, taps = model.apply(variables, x)
  # preact_stage{i} = the next eval-mode BN applied to stage{i}, no ReLU.
  bns = [("block2_0", "bn1"), ("block3_0", "bn1"), (None, "bn1")]
  for i, (blk, bn) in enumerate(bns, start=1):
    p = variables["params"][blk][bn] if blk else variables["params"][bn]
    s = variables["batch_stats"][blk][bn] if blk else variables["batch_stats"][bn]
    want = (taps[f"stage{i}"] - s["mean"]) / np.sqrt(s["var"] + 1e-5) * p["scale"] + p["bias"]
    np.testing.assert_allclose(taps[f"preact_stage{i}"], want, rtol=1e-5, atol=1e-5)
    assert float(jnp.min(taps[f"preact_stage{i}"])) < 0.0
  # stem is the raw conv1 output (no BN/ReLU); pooled = mean(relu(preact_stage3)).
  stem = jax.lax.conv_general_dilated(
    x,
    variables["params"]["conv1"]["kernel"],
    (1, 1),
    ((1, 1), (1, 1)),
    dimension_numbers=("NHWC", "HWIO", "NHWC"),
  )
  np.testing.assert_allclose(taps["stem"], stem, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(
    taps["pooled"], jax.nn.relu(taps["preact_stage3"]).mean(axis=(1, 2)), rtol=1e-5, atol=1e-6
  )


def test_channel_shuffle_matches_torch_order():
  from kdjax.models.cifar.common import channel_shuffle

  x = jnp.arange(6.0).reshape(1, 1, 1, 6)
  # torch: view(N, g=2, 3, H, W).permute(0, 2, 1, 3, 4) -> channels 0, 3, 1, 4, 2, 5.
  np.testing.assert_array_equal(channel_shuffle(x, 2).ravel(), [0, 3, 1, 4, 2, 5])
  np.testing.assert_array_equal(channel_shuffle(x, 3).ravel(), [0, 2, 4, 1, 3, 5])


def test_vgg_pool3_only_at_64():
  model = models.get("vgg8", num_classes=10)
  for side, (h3, h4) in [(32, (4, 4)), (64, (8, 4)), (28, (3, 3))]:
    _, taps = jax.eval_shape(
      model.init_with_output, jax.random.key(0), jnp.zeros((1, side, side, 3))
    )[0]
    assert (taps["stage3"].shape[1], taps["stage4"].shape[1]) == (h3, h4), side


@pytest.mark.parametrize("name", ["vgg8", "MobileNetV2", "ShuffleV1", "ShuffleV2", "ResNet50"])
def test_fashion_mnist_input_traced(name):
  model = models.get(name, num_classes=10)
  logits, _ = jax.eval_shape(model.init_with_output, jax.random.key(0), jnp.zeros((B, 28, 28, 1)))[
    0
  ]
  assert logits.shape == (B, 10)


@pytest.mark.parametrize("name", ["resnet8", "wrn_16_1"])
def test_fashion_mnist_input(name):
  model = models.get(name, num_classes=10)
  x = jax.random.normal(jax.random.key(1), (B, 28, 28, 1))
  variables = _variables(model, x)
  logits, taps = model.apply(variables, x)
  assert logits.shape == (B, 10)
  assert taps["stage3"].shape[1:3] == (7, 7)


def test_unknown_name():
  with pytest.raises(ValueError, match="resnet8"):
    models.get("resnet9", num_classes=10)


def test_bad_stage_index():
  model = models.get("resnet8", num_classes=10)
  x = jnp.zeros((1, 32, 32, 3))
  variables = jax.eval_shape(model.init, jax.random.key(0), x)
  with pytest.raises(ValueError, match="stages 1..3"):
    jax.eval_shape(lambda v: model.apply(v, x, 4, False, method="apply_stage"), variables)


def test_train_updates_batch_stats():
  model = models.get("resnet8", num_classes=10)
  x = jax.random.normal(jax.random.key(1), (B, 32, 32, 3))
  variables = _variables(model, x)
  (logits, taps), updates = model.apply(variables, x, train=True, mutable=["batch_stats"])
  assert logits.shape == (B, 10)
  old = jax.tree_util.tree_leaves(variables["batch_stats"])
  new = jax.tree_util.tree_leaves(updates["batch_stats"])
  assert len(old) == len(new) > 0
  assert all(a.shape == b.shape for a, b in zip(old, new))
  assert any(not np.allclose(a, b) for a, b in zip(old, new))
  # bn1 running mean moves 10% towards the batch mean of conv1's output (momentum 0.9).
  conv_out = jax.lax.conv_general_dilated(
    x,
    variables["params"]["conv1"]["kernel"],
    (1, 1),
    ((1, 1), (1, 1)),
    dimension_numbers=("NHWC", "HWIO", "NHWC"),
  )
  np.testing.assert_allclose(
    updates["batch_stats"]["bn1"]["mean"],
    0.9 * variables["batch_stats"]["bn1"]["mean"] + 0.1 * conv_out.mean(axis=(0, 1, 2)),
    rtol=1e-4,
    atol=1e-6,
  )
  # Training mode normalises with batch statistics, eval mode with the running ones.
  logits_eval, _ = model.apply(variables, x)
  assert not np.allclose(logits, logits_eval)


def test_kaiming_fan_out_init():
  from kdjax.models.cifar import common

  w = common.kaiming_fan_out(jax.random.key(0), (3, 3, 64, 64))
  np.testing.assert_allclose(float(jnp.std(w)), np.sqrt(2.0 / (9 * 64)), rtol=0.03)
