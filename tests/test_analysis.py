"""Tests for kdjax.analysis (Ojha et al. 2023, methods.md §6): constructed cases with known answers."""

from __future__ import annotations

import colorsys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.special import log_softmax as np_log_softmax
from scipy.stats import spearmanr

import kdjax.models
from kdjax import analysis as A

NUM_CLASSES = 10


def _np_init(model, x, seed):
  """He-normal kernels, zero biases, BatchNorm defaults, drawn with NumPy: compiling ``model.init``
  (the JAX initialisers) takes ~15 s on this CPU, ``eval_shape`` + NumPy takes milliseconds."""
  rng = np.random.default_rng(seed)
  shapes = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), x, train=False))

  def make(path, s):
    name = jax.tree_util.keystr(path)
    if "kernel" in name:
      fan_in = int(np.prod(s.shape[:-1]))
      return jnp.asarray(rng.standard_normal(s.shape) * np.sqrt(2.0 / fan_in), s.dtype)
    if "scale" in name or "var" in name:
      return jnp.ones(s.shape, s.dtype)
    return jnp.zeros(s.shape, s.dtype)

  return jax.tree_util.tree_map_with_path(make, shapes)


@pytest.fixture(scope="module")
def tiny():
  """A randomly initialised tiny_cnn and a fixed batch of random 16x16 images (normalised)."""
  model = kdjax.models.get("tiny_cnn", num_classes=NUM_CLASSES)
  x = jax.random.normal(jax.random.PRNGKey(1), (48, 16, 16, 3))
  variables = _np_init(model, x[:2], seed=0)
  # Centre the head on this batch (bias = -mean(pooled) @ W) so that the random network does not
  # predict one class for every input (it does with a zero bias: pooled ReLU features are >= 0).
  pooled = jax.jit(lambda v, z: model.apply(v, z, train=False)[1]["pooled"])(variables, x)
  fc = variables["params"]["fc"]
  fc = {**fc, "bias": -jnp.mean(pooled, 0) @ fc["kernel"]}
  variables = {**variables, "params": {**variables["params"], "fc": fc}}
  logits, taps = jax.jit(lambda v, z: model.apply(v, z, train=False))(variables, x)
  return model, variables, x, logits, taps


# ------------------------------------------------------------------------------- agreement


def test_agreement_self_and_reference():
  rng = np.random.default_rng(0)
  a = rng.standard_normal((64, 7)) * 3
  b = rng.standard_normal((64, 7)) * 3
  labels = rng.integers(0, 5, 64)  # classes 5, 6 never occur as labels
  assert float(A.top1_agreement(a, a)) == 1.0
  np.testing.assert_allclose(A.kl_divergence(a, a), 0.0, atol=1e-6)
  np.testing.assert_allclose(A.js_divergence(a, a), 0.0, atol=1e-6)
  pca = np.asarray(A.per_class_agreement(a, a, labels, 7))
  np.testing.assert_array_equal(pca[:5], 1.0)
  assert np.isnan(pca[5:]).all()
  # against NumPy formulas
  assert float(A.top1_agreement(a, b)) == pytest.approx(np.mean(a.argmax(1) == b.argmax(1)))
  t = 2.0
  lp, lq = np_log_softmax(a / t, axis=1), np_log_softmax(b / t, axis=1)
  ref_kl = np.sum(np.exp(lp) * (lp - lq), axis=1)
  np.testing.assert_allclose(A.kl_divergence(a, b, temperature=t), ref_kl, rtol=1e-4, atol=1e-6)
  m = 0.5 * (np.exp(lp) + np.exp(lq))
  ref_js = 0.5 * np.sum(np.exp(lp) * (lp - np.log(m)), 1) + 0.5 * np.sum(
    np.exp(lq) * (lq - np.log(m)), 1
  )
  js = np.asarray(A.js_divergence(a, b, temperature=t))
  np.testing.assert_allclose(js, ref_js, rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(js, A.js_divergence(b, a, temperature=t), atol=1e-6)
  assert np.all(js <= np.log(2) + 1e-6)
  agree = a.argmax(1) == b.argmax(1)
  pca = np.asarray(A.per_class_agreement(a, b, labels, 7))
  np.testing.assert_allclose(pca[:5], [agree[labels == c].mean() for c in range(5)], atol=1e-6)


# ------------------------------------------------------------------------------- CKA


def _np_linear_cka(x, y):
  x = x - x.mean(0)
  y = y - y.mean(0)
  return np.linalg.norm(y.T @ x) ** 2 / (np.linalg.norm(x.T @ x) * np.linalg.norm(y.T @ y))


def test_cka_self_invariances_and_independent():
  rng = np.random.default_rng(1)
  x = rng.standard_normal((80, 12)).astype(np.float32)
  for unbiased in (False, True):
    assert float(A.linear_cka(x, x, unbiased=unbiased)) == pytest.approx(1.0, abs=1e-5)
  q, _ = np.linalg.qr(rng.standard_normal((12, 12)))
  y = (x @ q * 7.5).astype(np.float32)  # orthogonal transform + isotropic scaling
  for unbiased in (False, True):
    assert float(A.linear_cka(x, y, unbiased=unbiased)) == pytest.approx(1.0, abs=1e-4)
  z = rng.standard_normal((80, 12)).astype(np.float32)
  biased = float(A.linear_cka(x, z))
  assert biased == pytest.approx(_np_linear_cka(x.astype(float), z.astype(float)), rel=1e-4)
  assert biased < 0.5
  assert abs(float(A.linear_cka(x, z, unbiased=True))) < 0.1
  # related but not identical features sit in between
  mixed = x + 0.5 * z
  assert biased < float(A.linear_cka(x, mixed)) < 1.0
  # conv-shaped features are flattened per example, widths may differ
  conv = rng.standard_normal((80, 4, 4, 3)).astype(np.float32)
  assert float(A.linear_cka(conv, conv.reshape(80, -1) @ np.eye(48)[:, :48])) == pytest.approx(
    1.0, abs=1e-5
  )


def test_cka_accumulator():
  rng = np.random.default_rng(2)
  x = rng.standard_normal((96, 10)).astype(np.float32)
  z = rng.standard_normal((96, 6)).astype(np.float32)
  q, _ = np.linalg.qr(rng.standard_normal((10, 10)))
  y = (3.0 * x @ q).astype(np.float32)
  update = jax.jit(lambda acc, a, b: acc.update(a, b))
  acc_self, acc_rot, acc_ind = (A.CKAAccumulator.create() for _ in range(3))
  for i in range(0, 96, 24):
    acc_self = update(acc_self, x[i : i + 24], x[i : i + 24])
    acc_rot = update(acc_rot, x[i : i + 24], y[i : i + 24])
    acc_ind = update(acc_ind, x[i : i + 24], z[i : i + 24])
  assert int(acc_self.num_batches) == 4
  assert float(acc_self.result()) == pytest.approx(1.0, abs=1e-5)
  assert float(acc_rot.result()) == pytest.approx(1.0, abs=1e-4)
  assert abs(float(acc_ind.result())) < 0.15
  # a single batch equals the unbiased full-batch estimator
  one = A.CKAAccumulator.create().update(x, z)
  assert float(one.result()) == pytest.approx(float(A.linear_cka(x, z, unbiased=True)), abs=1e-5)
  with pytest.raises(ValueError):
    A.CKAAccumulator.create().update(x[:3], x[:3])


def test_cka_on_model_taps(tiny):
  _, _, _, _, taps = tiny
  assert float(A.linear_cka(taps["stage1"], taps["stage1"])) == pytest.approx(1.0, abs=1e-5)
  assert 0.0 < float(A.linear_cka(taps["stage1"], taps["stage2"])) < 1.0


# ------------------------------------------------------------------------------- Grad-CAM


def test_gradcam_self_and_known_answer(tiny):
  model, variables, x, logits, taps = tiny
  labels = jnp.argmax(logits, -1)
  cam = A.gradcam(model, variables, x, stage=2)
  cam2, lg = A.gradcam(model, variables, x, stage=2, class_idx=labels, return_logits=True)
  assert cam.shape == (48, 4, 4)
  np.testing.assert_allclose(lg, logits, atol=1e-5)
  np.testing.assert_array_equal(cam, cam2)  # class_idx=None means the predicted class
  assert float(cam.min()) >= 0.0 and float(cam.max()) <= 1.0
  # Last stage of tiny_cnn: head = global mean pool + dense W, so alpha_k = W[k, c] / HW and
  # Grad-CAM equals the CAM of Zhou et al. (2016): relu(sum_k A_k W[k, c]), min-max normalised.
  w = variables["params"]["fc"]["kernel"]
  ref = jax.nn.relu(jnp.einsum("bhwk,bk->bhw", taps["stage2"], w[:, labels].T))
  lo, hi = ref.min(axis=(1, 2), keepdims=True), ref.max(axis=(1, 2), keepdims=True)
  ref = jnp.where(hi > lo, (ref - lo) / jnp.where(hi > lo, hi - lo, 1), 0)
  np.testing.assert_allclose(cam, ref, atol=1e-5)
  # intermediate stage, same model twice -> identical maps and perfect agreement
  c1 = A.gradcam(model, variables, x, stage=1, class_idx=3)
  c1b = A.gradcam(model, variables, x, stage=1, class_idx=jnp.full((48,), 3))
  assert c1.shape == (48, 8, 8)
  np.testing.assert_array_equal(c1, c1b)
  agr = A.cam_agreement(c1, c1b)
  nonconst = np.asarray(c1.max(axis=(1, 2)) > 0)
  assert nonconst.sum() > 10
  np.testing.assert_allclose(np.asarray(agr["spearman"])[nonconst], 1.0, atol=1e-5)
  np.testing.assert_allclose(agr["iou_top"], 1.0)
  # different resolutions are resized to the larger one: stage-2 maps upsampled agree with themselves
  up = jax.image.resize(cam, (48, 8, 8), "bilinear")
  agr = A.cam_agreement(cam, up)
  ok = np.asarray(cam.max(axis=(1, 2)) > 0)
  np.testing.assert_allclose(np.asarray(agr["spearman"])[ok], 1.0, atol=1e-5)
  np.testing.assert_allclose(np.asarray(agr["cosine"])[ok], 1.0, atol=1e-5)
  assert float(A.cam_preference(cam, cam, 1.0 - cam)) > 0.5


def test_cam_agreement_hand_example():
  a = np.arange(10, dtype=np.float32).reshape(1, 2, 5)  # top-20 %: pixels 9, 8
  b = np.array([9, 8, 7, 6, 5, 4, 3, 2, 0, 1], np.float32).reshape(1, 2, 5)  # top: pixels 0, 1
  c = np.array([0, 1, 2, 3, 4, 5, 6, 7, 9, 1], np.float32).reshape(1, 2, 5)  # top: 8, 7; a tie
  out = A.cam_agreement(a, b)
  assert float(out["iou_top"][0]) == 0.0
  assert float(out["spearman"][0]) == pytest.approx(spearmanr(a.ravel(), b.ravel())[0], abs=1e-6)
  out = A.cam_agreement(a, c, top_frac=0.2)
  assert float(out["iou_top"][0]) == pytest.approx(1 / 3)  # {9, 8} vs {8, 7}
  assert float(out["spearman"][0]) == pytest.approx(spearmanr(a.ravel(), c.ravel())[0], abs=1e-6)


# ------------------------------------------------------------------------------- adversarial

STD = (0.2, 0.25, 0.3)
MEAN = (0.5, 0.4, 0.45)


def test_pgd_eps_zero_is_identity(tiny):
  model, variables, x, logits, _ = tiny
  y = jnp.argmax(logits, -1)
  np.testing.assert_array_equal(A.fgsm(model, variables, x, y, eps=0.0, pixel_std=STD), x)
  xa = A.pgd(
    model,
    variables,
    x,
    y,
    eps=0.0,
    steps=4,
    step_size=0.1,
    random_start=True,
    rng=jax.random.PRNGKey(3),
    pixel_std=STD,
    pixel_mean=MEAN,
  )
  lo, hi = [(v - np.asarray(MEAN, np.float32)) / np.asarray(STD, np.float32) for v in (0, 1)]
  np.testing.assert_allclose(xa, jnp.clip(x, lo, hi), atol=1e-6)  # only the pixel-box clip
  xa = A.pgd(model, variables, x[:24], y[:24], eps=0.0, steps=10, step_size=0.1)
  np.testing.assert_array_equal(xa, x[:24])


def test_fgsm_and_pgd_respect_pixel_bounds(tiny):
  model, variables, x, logits, _ = tiny
  y = jnp.argmax(logits, -1)
  eps = 8 / 255
  std = np.asarray(STD, np.float32)
  xa = A.fgsm(model, variables, x, y, eps=eps, pixel_std=STD)
  d = np.abs(np.asarray(xa - x)) * std  # back to [0, 1] pixel units
  assert d.max() <= eps + 1e-6
  assert np.isclose(d, eps, atol=1e-6).mean() > 0.99  # FGSM moves (almost) every pixel by eps
  # PGD with a random start and the valid-pixel box
  mean = np.asarray(MEAN, np.float32)
  x_box = (jnp.clip(x * std + mean, 0, 1) - mean) / std
  xp = A.pgd(
    model,
    variables,
    x_box,
    y,
    eps=eps,
    steps=4,
    step_size=eps / 2,
    random_start=True,
    rng=jax.random.PRNGKey(0),
    pixel_std=STD,
    pixel_mean=MEAN,
  )
  assert (np.abs(np.asarray(xp - x_box)) * std).max() <= eps + 1e-6
  pix = np.asarray(xp) * std + mean
  assert pix.min() >= -1e-6 and pix.max() <= 1 + 1e-6
  # model as a plain callable gives the same attack
  xc = A.fgsm(lambda z: model.apply(variables, z, train=False), None, x, y, eps=eps, pixel_std=STD)
  np.testing.assert_allclose(xc, xa, atol=1e-6)


def test_pgd_error_non_decreasing_in_eps_and_transfer(tiny):
  model, variables, x, logits, _ = tiny
  y = np.asarray(jnp.argmax(logits, -1))  # the model's own predictions: clean error 0
  eps_grid = [0.0, 0.01, 0.03, 0.1, 0.3]
  res = A.transfer_success(
    model, variables, model, variables, x, y, eps_grid, steps=10, step_size_frac=0.25, batch_size=24
  )
  err = res["source_error"]
  assert err[0] == 0.0 and res["source_clean_accuracy"] == 1.0
  assert all(b >= a for a, b in zip(err, err[1:])), err
  assert err[-1] > 0.5
  # source == target: the target fails exactly where the source does
  assert res["target_error"] == err
  assert res["source_fooling_rate"] == err
  assert all(np.isnan(r) or r == 1.0 for r in res["transfer_fooling_rate"])
  # a "student": the same network with perturbed weights; attacks transfer partially
  noise = np.random.default_rng(7)
  other = {
    **variables,
    "params": jax.tree_util.tree_map(
      lambda p: p + 0.05 * np.std(p) * noise.standard_normal(p.shape).astype(np.float32),
      variables["params"],
    ),
  }
  res2 = A.transfer_success(
    model, variables, model, other, x, y, [0.0, 0.3], steps=10, step_size_frac=0.25, batch_size=24
  )
  assert res2["target_error"][0] == pytest.approx(1 - res2["target_clean_accuracy"])
  assert res2["target_clean_accuracy"] > 0.3
  assert 0.0 <= res2["target_fooling_rate"][1] <= 1.0
  assert 0.0 <= res2["transfer_fooling_rate"][1] <= 1.0


def test_attack_sweep_equals_pgd_and_fgsm_per_eps(tiny):
  """The report's one-kernel sweep (shared first gradient, no gradient at eps = 0) makes the same
  images as pgd() / fgsm() called at each radius."""
  model, variables, x, logits, _ = tiny
  y = jnp.argmax(logits, -1)
  mean, std = np.asarray(MEAN, np.float32), np.asarray(STD, np.float32)
  x_box = (jnp.clip(x * std + mean, 0, 1) - mean) / std
  eps_list = (0.0, 2 / 255, 8 / 255, 0.1)
  xp, xf = A.attack_sweep(
    model,
    variables,
    x_box,
    y,
    eps_list=eps_list,
    steps=4,
    step_size_frac=0.3,
    pixel_std=STD,
    pixel_mean=MEAN,
  )
  assert xp.shape == xf.shape == (4,) + x.shape
  for i, eps in enumerate(eps_list):
    ref_p = A.pgd(
      model,
      variables,
      x_box,
      y,
      eps=eps,
      steps=4,
      step_size=eps * 0.3,
      pixel_std=STD,
      pixel_mean=MEAN,
    )
    ref_f = A.fgsm(model, variables, x_box, y, eps=eps, pixel_std=STD, pixel_mean=MEAN)
    # Same float32 arithmetic; 1e-6 (normalised units) allows a last-bit difference from
    # XLA fusing the kernel differently, while a flipped gradient sign moves a pixel by
    # 2 * step >= 2e-3 and fails.
    np.testing.assert_allclose(xp[i], ref_p, atol=1e-6, rtol=0)
    np.testing.assert_allclose(xf[i], ref_f, atol=1e-6, rtol=0)
  assert float(jnp.max(jnp.abs(xp[3] - x_box))) > 0.1  # the attack moved the images
  # Without the pixel box, and PGD only.
  xp, xf = A.attack_sweep(
    model, variables, x, y, eps_list=(0.05,), steps=2, step_size_frac=0.5, fgsm=False, pixel_std=STD
  )
  assert xf is None
  np.testing.assert_allclose(
    xp[0],
    A.pgd(model, variables, x, y, eps=0.05, steps=2, step_size=0.025, pixel_std=STD),
    atol=1e-6,
    rtol=0,
  )


# ------------------------------------------------------------------------------- invariance


def _images01(shape=(6, 8, 8, 3), seed=0):
  return jax.random.uniform(jax.random.PRNGKey(seed), shape)


def test_color_jitter_identity_and_determinism():
  x = _images01()
  key = jax.random.PRNGKey(0)
  np.testing.assert_array_equal(A.color_jitter(x, key), x)
  np.testing.assert_array_equal(
    A.color_jitter(x, key, brightness=0, contrast=0, saturation=0, hue=0), x
  )
  xu = (np.asarray(x) * 255).round().astype(np.uint8)
  np.testing.assert_array_equal(A.color_jitter(xu, key), xu)
  mags = dict(brightness=0.4, contrast=0.4, saturation=0.4, hue=0.2)
  a = A.color_jitter(x, key, **mags)
  np.testing.assert_array_equal(a, A.color_jitter(x, key, **mags))
  assert not np.allclose(a, A.color_jitter(x, jax.random.PRNGKey(1), **mags))
  assert a.shape == x.shape and float(a.min()) >= 0 and float(a.max()) <= 1
  au = A.color_jitter(xu, key, **mags)
  assert au.dtype == np.uint8
  af = A.color_jitter(jnp.asarray(xu, jnp.float32) / 255.0, key, **mags)
  assert np.abs(au.astype(int) - np.asarray(af * 255).round().astype(int)).max() <= 1


def test_color_ops_known_answers():
  x = _images01()
  np.testing.assert_allclose(A.adjust_hue(x, 0.0), x, atol=1e-5)
  g = np.asarray(A.adjust_saturation(x, 0.0))
  gray = 0.2989 * x[..., 0] + 0.587 * x[..., 1] + 0.114 * x[..., 2]
  for ch in range(3):
    np.testing.assert_allclose(g[..., ch], gray, atol=1e-6)
  # x in [0, 1): 0.5 * x <= 0.5 has ulp <= 6e-8, so atol 1e-7 allows one rounding of a rescaled form
  np.testing.assert_allclose(A.adjust_brightness(x, 0.5), 0.5 * x, atol=1e-7)
  np.testing.assert_allclose(
    A.adjust_contrast(x, 0.0),
    np.broadcast_to(gray.mean(axis=(1, 2))[:, None, None, None], x.shape),
    atol=1e-6,
  )
  red = jnp.zeros((1, 1, 1, 3)).at[..., 0].set(1.0)
  np.testing.assert_allclose(A.adjust_hue(red, 1 / 3), [[[[0, 1, 0]]]], atol=1e-5)
  # hue shift against Python's colorsys
  px = np.asarray(x[0]).reshape(-1, 3)
  h = 0.13
  ref = np.array(
    [
      colorsys.hsv_to_rgb((hh + h) % 1.0, s, v)
      for hh, s, v in (colorsys.rgb_to_hsv(*p) for p in px)
    ]
  )
  np.testing.assert_allclose(np.asarray(A.adjust_hue(x[0], h)).reshape(-1, 3), ref, atol=1e-5)


def test_color_jitter_grayscale_only_brightness_contrast():
  x = _images01((4, 8, 8, 1))
  key = jax.random.PRNGKey(0)
  np.testing.assert_array_equal(A.color_jitter(x, key, saturation=0.8, hue=0.5), x)
  y = A.color_jitter(x, key, brightness=0.5, contrast=0.5)
  assert y.shape == x.shape and not np.allclose(y, x)


def test_prediction_consistency(tiny):
  model, variables, _, _, _ = tiny
  apply_fn = lambda z: model.apply(variables, z, train=False)  # noqa: E731
  x01 = _images01((32, 16, 16, 3), seed=5)
  mean, std = np.asarray(MEAN), np.asarray(STD)
  normalize = lambda z: (z - mean) / std  # noqa: E731
  key = jax.random.PRNGKey(0)
  assert A.prediction_consistency(apply_fn, x01, key, magnitudes={}, normalize_fn=normalize) == 1.0
  mags = {"brightness": 0.4, "contrast": 0.4, "saturation": 0.4, "hue": 0.2}
  s1 = A.prediction_consistency(
    apply_fn, x01, key, magnitudes=mags, normalize_fn=normalize, n_views=2, batch_size=16
  )
  s2 = A.prediction_consistency(
    apply_fn, x01, key, magnitudes=mags, normalize_fn=normalize, n_views=2, batch_size=16
  )
  s_all = A.prediction_consistency(
    apply_fn,
    x01,
    key,
    magnitudes=mags,
    normalize_fn=normalize,
    n_views=2,
    batch_size=16,
    require_all=True,
  )
  assert s1 == s2 and 0.0 <= s_all <= s1 <= 1.0
  with pytest.raises(ValueError):
    A.prediction_consistency(apply_fn, x01, key, magnitudes={"hue": 0.7})


# ------------------------------------------------------------------------------- fairness


def test_per_group_accuracy_hand_example():
  preds = np.array([0, 1, 1, 0, 2, 2, 1, 0])
  labels = np.array([0, 1, 0, 0, 2, 1, 1, 1])
  groups = np.array(["a", "a", "a", "b", "b", "b", "c", "c"])
  acc = A.per_group_accuracy(preds, labels, groups)
  assert acc == pytest.approx({"a": 2 / 3, "b": 2 / 3, "c": 1 / 2})
  assert A.worst_group_accuracy(preds, labels, groups) == pytest.approx(0.5)
  assert A.accuracy_gap(preds, labels, groups) == pytest.approx(2 / 3 - 1 / 2)
  rep = A.group_fairness_report(np.eye(3)[preds], labels, groups)  # logits-style input
  assert rep["worst_group"] == "c" and rep["counts"] == {"a": 3, "b": 3, "c": 2}
  assert rep["overall_accuracy"] == pytest.approx(5 / 8)
  assert rep["gap"] == pytest.approx(1 / 6)


def test_calibration_reexport():
  from kdjax.calibration import ece

  assert A.ece is ece
