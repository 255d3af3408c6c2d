"""ImageNet models under the bfloat16 policy (kdjax.precision): float32 master weights and
BatchNorm statistics, bf16 compute end to end, logits close to float32.

Every ImageNet architecture is built with ``precision.build_model(name, policy='bfloat16')``
and applied to the *same* float32 variables as its float32 twin, on a random 2x64x64x3 input
(32x32 for ResNet-152, to keep CPU time low). Variables are drawn like a trained network's
(convs ``kaiming_normal(fan_out)`` as torchvision, BN scale and running variance in [0.5, 1.5],
biases and running means N(0, 0.1)), so every BatchNorm does real work.

Tolerance. bfloat16 has an 8-bit significand: unit roundoff u = 2^-8 ~ 3.9e-3 per rounded value.
In eval mode (fixed BN statistics) the network is an ordinary feed-forward map; each of its L
rounded layer outputs adds an independent relative error <= u, and the errors add roughly in
quadrature, so the logits' relative error (Frobenius) is O(u) to O(u sqrt(L)). Observed: 0.9 u
(MobileNetV1), 1.5-2.1 u (ResNet-18/34/50/152), 2.8 u (ResNet-101). The bound is 8 u = 3.1e-2.
A layer left in float32 is caught separately: every tap must come back bfloat16.

Train mode (batch statistics) is not compared at the logits: BatchNorm networks at
initialisation amplify small perturbations with depth (Yang et al., "A Mean Field Theory of
Batch Normalization", ICLR 2019). Measured on MobileNetV1 at batch 4: perturbing the float32
input by a relative u moves the float32 logits by 24 %, as much as bf16 does (22 %); ResNet-18:
1.6 % vs 2.0 %. So in train mode the test checks that bf16 deviates no more than 3x as much as
that u-sized float32 perturbation does (ResNet-18), that the first BatchNorm's batch statistics
(a reduction over B*H*W values) match float32 to a few u, and that every updated statistic is
float32. Finally one training step of an ImageNet recipe runs with
``config.precision.student = 'bfloat16'`` on TFDS mock data.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kdjax import precision

U = 2.0**-8  # bfloat16 unit roundoff
K = 10
ARCHS = [
  "resnet18_imagenet",
  "resnet34_imagenet",
  "resnet50_imagenet",
  "resnet101_imagenet",
  "resnet152_imagenet",
  "mobilenetv1_imagenet",
]
F32 = jnp.dtype(jnp.float32)


def _hw(name):
  return 32 if name == "resnet152_imagenet" else 64


def _trained_like_variables(model, x, seed=0):
  rng = np.random.default_rng(seed)

  def fill(path, leaf):
    key, s = getattr(path[-1], "key", None), leaf.shape
    if key == "kernel" and len(s) == 4:  # HWIO conv kernel, kaiming_normal(fan_out)
      return jnp.asarray(rng.normal(0.0, np.sqrt(2.0 / (s[0] * s[1] * s[3])), s), jnp.float32)
    if key == "kernel":  # Linear: torch default U(-1/sqrt(in), 1/sqrt(in))
      b = 1.0 / np.sqrt(s[0])
      return jnp.asarray(rng.uniform(-b, b, s), jnp.float32)
    if key in ("scale", "var"):
      return jnp.asarray(rng.uniform(0.5, 1.5, s), jnp.float32)
    return jnp.asarray(rng.normal(0.0, 0.1, s), jnp.float32)

  return jax.tree_util.tree_map_with_path(fill, jax.eval_shape(model.init, jax.random.key(0), x))


def _rel(got, want):
  got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
  return float(np.linalg.norm(got - want) / np.linalg.norm(want))


def _shapes(tree):
  return jax.tree_util.tree_map(lambda a: (a.shape, a.dtype), tree)


@pytest.mark.parametrize("name", ARCHS)
def test_bf16_logits_close_to_f32_and_params_stay_f32(name):
  hw = _hw(name)
  x = jax.random.normal(jax.random.key(1), (2, hw, hw, 3))
  m32 = precision.build_model(name, num_classes=K, policy="float32")
  m16 = precision.build_model(name, num_classes=K, policy="bfloat16")
  assert m16.dtype == jnp.bfloat16 and m32.dtype == jnp.float32
  # Same variable tree (names, shapes) under both policies, all float32.
  v16_shapes = jax.eval_shape(m16.init, jax.random.key(0), x)
  v = _trained_like_variables(m32, x)
  assert _shapes(v16_shapes) == _shapes(v)
  assert {a.dtype for a in jax.tree_util.tree_leaves(v16_shapes)} == {F32}

  l32, (l16, taps) = jax.jit(lambda v, x: (m32.apply(v, x)[0], m16.apply(v, x)))(v, x)
  assert l32.dtype == F32 and l16.dtype == jnp.bfloat16
  assert {str(t.dtype) for t in taps.values()} == {"bfloat16"}, {
    k: t.dtype for k, t in taps.items()
  }
  err = _rel(l16.astype(jnp.float32), l32)
  assert err < 8 * U, (name, err, err / U)
  assert err > 0  # the bf16 path really rounded


def test_bf16_train_mode_statistics_are_f32_and_within_the_f32_sensitivity():
  name = "resnet18_imagenet"
  x = jax.random.normal(jax.random.key(1), (4, 64, 64, 3))
  xp = x * (1 + U * jax.random.normal(jax.random.key(2), x.shape))  # a u-sized perturbation
  m32 = precision.build_model(name, num_classes=K)
  m16 = precision.build_model(name, num_classes=K, policy="bfloat16")
  v = _trained_like_variables(m32, x)

  def train(m, v, x):
    (logits, _), upd = m.apply(v, x, train=True, mutable=["batch_stats"])
    return logits.astype(jnp.float32), upd["batch_stats"]

  (l32, s32), (lp, _), (l16, s16) = jax.jit(
    lambda v, x, xp: (train(m32, v, x), train(m32, v, xp), train(m16, v, x))
  )(v, x, xp)
  assert {a.dtype for a in jax.tree_util.tree_leaves(s16)} == {F32}
  assert _shapes(s16) == _shapes(s32)
  sensitivity = _rel(lp, l32)
  assert _rel(l16, l32) < 3 * sensitivity, (_rel(l16, l32), sensitivity)
  # bn1's running statistics move by 0.1 x the batch statistics of conv1(x): recover those
  # (B*H*W = 4096 values per channel) and compare; bf16's per-value rounding errors average out.
  old = v["batch_stats"]["bn1"]
  batch = lambda s, k: (np.asarray(s["bn1"][k], np.float64) - 0.9 * np.asarray(old[k])) / 0.1  # noqa: E731
  var32, var16 = batch(s32, "var"), batch(s16, "var")
  np.testing.assert_allclose(var16, var32, rtol=2 * U)
  mean32, mean16 = batch(s32, "mean"), batch(s16, "mean")
  assert np.max(np.abs(mean16 - mean32) / np.sqrt(var32)) < 2 * U  # in units of the channel's std


def test_one_bf16_step_of_an_imagenet_config_on_mock_data(tmp_path):
  """``config.precision.student = 'bfloat16'`` on an ImageNet recipe (Ojha's independent
  ResNet-18: no teacher, the cheapest cell) trains one step through ``train_and_evaluate`` on
  TFDS mock ImageNet (32x32 crops, batch 2): master weights and BN statistics stay float32."""
  import importlib.util
  import os

  import tensorflow_datasets as tfds
  from kdjax.train.loop import train_and_evaluate

  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  spec = importlib.util.spec_from_file_location(
    "cfg_imagenet_ojha_bf16", os.path.join(root, "configs", "imagenet", "ojha.py")
  )
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  c = mod.get_config("independent:resnet50-resnet18")
  assert c.model == "resnet18_imagenet"
  c.precision.student = "bfloat16"
  d = c.dataset
  d.image_size, d.train_limit, d.eval_limit, d.stream_threads = 32, 4, 2, 0
  c.batch_size = c.eval_batch_size = c.optim.reference_batch_size = 2
  c.max_steps = 1
  c.progress = c.tensorboard = c.async_checkpoint = False
  c.checkpoint_every_steps = c.keep_every_epochs = 0
  c.log_every_steps = 1
  with tfds.testing.mock_data(num_examples=8):
    s = train_and_evaluate(c, str(tmp_path / "run"))
  state = s["state"]
  assert s["step"] == 1 and int(state.step) == 1
  leaves = jax.tree_util.tree_leaves(state.params) + jax.tree_util.tree_leaves(state.batch_stats)
  assert {a.dtype for a in leaves} == {F32}
  assert all(bool(jnp.all(jnp.isfinite(a))) for a in leaves)
