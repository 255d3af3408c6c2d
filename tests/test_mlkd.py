"""MLKD (kdjax/losses/mlkd.py, kdjax/methods/mlkd.py, configs/cifar100/mlkd.py):

* the losses against our torch transcription of Jin-Ying/Multi-Level-Logit-Distillation
  ``KD_ours.forward_train`` (tools/goldens/make_mlkd_goldens.py, tests/golden/mlkd.npz): the four
  returned losses (CE on both views, instance, class, batch level, weights 0.1 / 0.9), their sum,
  and the gradients w.r.t. the weak and strong student logits, in float64 at 1e-5 relative to the
  largest entry (the values are O(0.01)-O(100) sums of five temperatures; float64 rounding is
  ~1e-15 relative, so 1e-5 only leaves room for summation order), both through the loss
  functions and through the method's terms on interleaved (weak, strong) rows;
* the confidence fractions (odd batch / class counts, ties), the zero-loss and view-routing
  properties, bad hyper-parameters -> UserError;
* the strong view's RandAugment ops against Pillow (the reference applies them with PIL);
* every config cell builds with its yaml's recipe;
* one real jitted train step (``init_train_state`` + ``make_steps``) through the ``mlkd`` preset
  on tiny CNNs (16x16 images): the logged terms equal the losses recomputed on the same views.
"""

import importlib.util
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from PIL import Image, ImageEnhance, ImageOps

from kdjax import models
from kdjax.errors import UserError
from kdjax.losses import cross_entropy, kd
from kdjax.losses import mlkd as L
from kdjax.methods import Batch, Outputs, build_method, preset
from kdjax.methods import mlkd as M
from kdjax.train.state import init_train_state
from kdjax.train.step import make_steps

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GOLDEN = os.path.join(ROOT, "tests", "golden", "mlkd.npz")
CASES = ("small", "cifar", "odd")
NAMES = ("ce", "kd", "cc", "bc", "total")


def _g():
  with np.load(GOLDEN) as f:
    return {k: f[k] for k in f.files}


def _max_rel(got, want):
  got = np.asarray(got, np.float64)
  return np.max(np.abs(got - want)) / max(np.max(np.abs(want)), 1e-30)


def _config_module():
  spec = importlib.util.spec_from_file_location(
    "cfg_mlkd", os.path.join(ROOT, "configs", "cifar100", "mlkd.py")
  )
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  return mod


def _reference_losses(zw, zs, vw, vs, y, temps, ce_w, kd_w):
  """The reference's losses dict from kdjax's loss functions (batch means)."""
  out = {
    "ce": ce_w * (cross_entropy(zw, y).mean() + cross_entropy(zs, y).mean()),
    "kd": kd_w * L.mlkd_instance(zw, vw, zs, vs, temperatures=temps).mean(),
    "cc": kd_w * L.mlkd_class(zw, vw, temperatures=temps).mean(),
    "bc": kd_w * L.mlkd_batch(zw, vw, temperatures=temps).mean(),
  }
  out["total"] = sum(out.values())
  return out


def _interleave(w, s):
  return jnp.stack([w, s], axis=1).reshape((-1, w.shape[-1]))


@pytest.mark.parametrize("tag", CASES)
def test_losses_match_reference_values_and_gradients(tag):
  g = _g()
  temps = tuple(float(t) for t in g["temperatures"])
  ce_w, kd_w = (float(v) for v in g["weights"])
  with jax.enable_x64(True):
    a = {k: jnp.asarray(g[f"{tag}/{k}"], jnp.float64) for k in ("student_weak", "student_strong")}
    vw = jnp.asarray(g[f"{tag}/teacher_weak"], jnp.float64)
    vs = jnp.asarray(g[f"{tag}/teacher_strong"], jnp.float64)
    y = jnp.asarray(g[f"{tag}/labels"], jnp.int32)

    def losses_of(zw, zs):
      return _reference_losses(zw, zs, vw, vs, y, temps, ce_w, kd_w)

    def run(zw, zs):
      out = {}
      for name in NAMES:
        val, (gw, gs) = jax.value_and_grad(lambda p, q: losses_of(p, q)[name], argnums=(0, 1))(
          zw, zs
        )
        out[name], out[name + "/gw"], out[name + "/gs"] = val, gw, gs
      out["fractions"] = jnp.stack(L.confidence_fractions(vw))
      return out

    got = jax.device_get(jax.jit(run)(a["student_weak"], a["student_strong"]))

    # The same through the method's terms on (weak, strong) interleaved rows.
    method = build_method(preset("mlkd"))

    def method_total(zw, zs):
      s = Outputs(_interleave(zw, zs), {})
      t = Outputs(_interleave(vw, vs), {})
      per_ex, _ = method.bind({}, {}).loss(s, t, Batch(y, jnp.arange(y.shape[0]), 1))
      return per_ex.mean()

    m_val, (m_gw, m_gs) = jax.jit(jax.value_and_grad(method_total, argnums=(0, 1)))(
      a["student_weak"], a["student_strong"]
    )
  np.testing.assert_allclose(got["fractions"], g[f"{tag}/mask_fractions"], rtol=1e-12)
  for name in NAMES:
    assert got[name].dtype == np.float64
    np.testing.assert_allclose(float(got[name]), g[f"{tag}/{name}"], rtol=1e-5, err_msg=name)
    assert _max_rel(got[name + "/gw"], g[f"{tag}/{name}/grad_student_weak"]) <= 1e-5, name
    want_gs = g[f"{tag}/{name}/grad_student_strong"]
    if np.any(want_gs):
      assert _max_rel(got[name + "/gs"], want_gs) <= 1e-5, name
    else:  # class / batch level: the weak view only
      np.testing.assert_array_equal(got[name + "/gs"], 0.0)
  np.testing.assert_allclose(float(m_val), g[f"{tag}/total"], rtol=1e-5)
  assert _max_rel(m_gw, g[f"{tag}/total/grad_student_weak"]) <= 1e-5
  assert _max_rel(m_gs, g[f"{tag}/total/grad_student_strong"]) <= 1e-5


def test_confidence_fractions_and_zero_loss():
  rs = np.random.RandomState(0)
  v = jnp.asarray(3.0 * rs.randn(9, 12), jnp.float32)
  m_b, m_c = L.confidence_fractions(v)
  np.testing.assert_allclose([float(m_b), float(m_c)], [5 / 9, 6 / 12], rtol=1e-6)
  # ties: identical rows -> every confidence equals the median -> m_B = 1
  same = jnp.tile(v[:1], (6, 1))
  assert float(L.confidence_fractions(same)[0]) == 1.0
  # the student equal to the teacher on both views: every alignment term is 0 ...
  vs = jnp.asarray(rs.randn(9, 12), jnp.float32)
  np.testing.assert_allclose(L.mlkd_instance(v, v, vs, vs), 0.0, atol=1e-5)
  np.testing.assert_allclose(L.mlkd_batch(v, v), 0.0, atol=1e-7)
  np.testing.assert_allclose(L.mlkd_class(v, v), 0.0, atol=1e-7)
  # ... and a different student is not (the checks can fail)
  z = jnp.asarray(rs.randn(9, 12), jnp.float32)
  for val in (L.mlkd_instance(z, v, z, vs), L.mlkd_batch(z, v), L.mlkd_class(z, v)):
    assert val.shape == (9,) and float(val.min()) > 1e-4
  # without the mask the weak parts are 1/m larger
  np.testing.assert_allclose(
    L.mlkd_batch(z, v, confidence_mask=False) * m_b, L.mlkd_batch(z, v), rtol=1e-6
  )
  np.testing.assert_allclose(
    L.mlkd_class(z, v, confidence_mask=False) * m_c, L.mlkd_class(z, v), rtol=1e-6
  )


def test_strong_on_weak_routes_the_released_temperatures_to_the_weak_view():
  rs = np.random.RandomState(1)
  zw, zs, vw, vs = (jnp.asarray(rs.randn(6, 10), jnp.float32) for _ in range(4))

  def grad_strong(on_weak):
    return jax.grad(
      lambda q: L.mlkd_instance(
        zw, vw, q, vs, temperatures=(4.0, 2.0), strong_on_weak=on_weak
      ).sum()
    )(zs)

  # all on the weak view: the strong logits get no gradient; none: they do
  np.testing.assert_array_equal(grad_strong((4.0, 2.0)), 0.0)
  assert float(jnp.abs(grad_strong(())).max()) > 1e-3
  # the released sum equals the weak KD at T 2 counted twice plus the strong KD at T 4
  got = L.mlkd_instance(zw, vw, zs, vs, temperatures=(4.0, 2.0), strong_on_weak=(2.0,))
  m_b = L.confidence_fractions(vw)[0]
  k = lambda a, b, t: kd(a, b, temperature=t)  # noqa: E731
  want = m_b * (k(zw, vw, 4.0) + k(zw, vw, 2.0)) + k(zs, vs, 4.0) + k(zw, vw, 2.0)
  np.testing.assert_allclose(got, want, rtol=1e-5)


@pytest.mark.parametrize(
  "kw",
  [
    dict(temperatures=()),
    dict(temperatures=(4.0, 0.0)),
    dict(temperatures=(-1.0,)),
    dict(temperatures=(float("nan"),)),
    dict(temperatures=(True,)),
    dict(temperatures="abc"),
    dict(strong_on_weak=(7.0,)),
  ],
)
def test_bad_hyperparameters_raise_user_error(kw):
  z = jnp.zeros((4, 5))
  with pytest.raises(UserError):
    L.mlkd_instance(z, z, z, z, **kw)
  # and at config time: building the method dry-runs its terms
  with pytest.raises(UserError, match="mlkd_instance"):
    build_method(dict(ce_weight=0.1, terms=dict(mlkd_instance=dict(weight=0.9, **kw))))


def test_shape_errors():
  with pytest.raises(ValueError, match=r"\(B, C\)"):
    L.mlkd_batch(jnp.zeros((4, 5)), jnp.zeros((4, 6)))
  with pytest.raises(ValueError, match="2·B rows"):
    M.mlkd_class_term(Outputs(jnp.zeros((5, 3)), {}), Outputs(jnp.zeros((5, 3)), {}), None)


def _pil_op(pil, name, v):
  aff = lambda m: pil.transform(pil.size, Image.AFFINE, m)  # noqa: E731
  w, h = pil.size
  return {
    "AutoContrast": lambda: ImageOps.autocontrast(pil),
    "Brightness": lambda: ImageEnhance.Brightness(pil).enhance(v),
    "Color": lambda: ImageEnhance.Color(pil).enhance(v),
    "Contrast": lambda: ImageEnhance.Contrast(pil).enhance(v),
    "Equalize": lambda: ImageOps.equalize(pil),
    "Identity": lambda: pil,
    "Posterize": lambda: ImageOps.posterize(pil, max(1, int(v))),
    "Rotate": lambda: pil.rotate(v),
    "Sharpness": lambda: ImageEnhance.Sharpness(pil).enhance(v),
    "ShearX": lambda: aff((1, v, 0, 0, 1, 0)),
    "ShearY": lambda: aff((1, 0, 0, v, 1, 0)),
    "Solarize": lambda: ImageOps.solarize(pil, v),
    "TranslateX": lambda: aff((1, 0, v * w, 0, 1, 0)),
    "TranslateY": lambda: aff((1, 0, 0, 0, 1, v * h)),
  }[name]()


def test_rand_augment_ops_match_pillow():
  """Each FixMatch op (the reference's PIL implementation) at three magnitudes on two images:
  on CPU every pixel is equal; the check allows one grey level on 1% of the pixels, for a
  backend whose float32 rounding (FMA) moves a blend across an integer before truncation."""
  rs = np.random.RandomState(2)
  noise = rs.randint(0, 256, (32, 32, 3)).astype(np.uint8)
  ramp = np.broadcast_to(np.linspace(20, 200, 32)[None, :, None], (32, 32, 3))
  smooth = np.clip(ramp + rs.randint(-10, 10, (32, 32, 3)), 0, 255).astype(np.uint8)
  op = jax.jit(M._apply_op)
  for img in (noise, smooth):
    pil = Image.fromarray(img)
    for i, (name, lo, hi) in enumerate(M.RA_OPS):
      for u in (0.1, 0.45, 0.9):
        # the magnitude as the op computes it (float32), so that PIL's float32 blend sees it
        v = float(np.float32(lo) + (np.float32(hi) - np.float32(lo)) * np.float32(u))
        want = np.asarray(_pil_op(pil, name, v), np.float64)
        got = np.asarray(op(jnp.asarray(img, jnp.float32), i, jnp.float32(u)), np.float64)
        diff = np.abs(got - want)
        assert diff.max() <= 1 and np.mean(diff == 0) >= 0.99, (name, u, diff.max())


def test_weak_strong_views_layout():
  rs = np.random.RandomState(3)
  images = rs.randint(0, 256, (4, 32, 32, 3)).astype(np.uint8)
  x = jax.jit(lambda im, k: M.weak_strong_views(im, k, lambda a, r: a))(
    images, jax.random.PRNGKey(0)
  )
  assert x.shape == (8, 32, 32, 3) and x.dtype == jnp.float32
  x = np.asarray(x)
  for b in range(4):  # row 2b: the image or its mirror; row 2b + 1: augmented, in 0..255
    assert np.array_equal(x[2 * b], images[b]) or np.array_equal(x[2 * b], images[b, :, ::-1])
    assert 0.0 <= x[2 * b + 1].min() and x[2 * b + 1].max() <= 255.0
  assert not np.array_equal(x[1::2], x[0::2])  # the strong view is augmented
  # Cutout paints its grey square somewhere in the strong views (side U(0, 16) px)
  grey = np.all(x[1::2] == np.asarray(M.CUTOUT_FILL), axis=-1)
  assert grey.any()


def test_every_config_cell_builds_with_its_recipe():
  C = _config_module()
  assert len(C.PAIRS) == 11 and set(C.UNVERIFIED) <= set(C.PAIRS)
  for pair, (teacher, student, epochs, lr, published) in C.PAIRS.items():
    c = C.get_config(pair)
    m = build_method(c.method)
    assert m.ce_weight == 0.1 and m.views is M.WEAK_STRONG_VIEWS
    terms = {t.key: (t.weight, dict(t.hparams)) for t in m.terms}
    temps = (4.0, 3.0, 5.0, 2.0, 6.0)
    for k in ("mlkd_instance", "mlkd_batch", "mlkd_class"):
      assert terms[k] == (0.9, dict(temperatures=temps))
    assert terms["mlkd_strong_ce"] == (0.1, {})
    assert c.model == student and c.teacher.workdir.endswith(f"teacher_{teacher}")
    assert (c.optim.lr, c.num_epochs, tuple(c.optim.milestones)) == (lr, epochs, (150, 180, 210))
    assert c.optim.weight_decay == 5e-4 and c.batch_size == 64
    assert lr == (0.01 if student in ("MobileNetV2", "ShuffleV1", "ShuffleV2") else 0.025)
    assert 70 < published < 79
  with pytest.raises(ValueError):
    C.get_config("resnet8-resnet8")


def test_jitted_train_step_with_mlkd():
  student = models.get("tiny_cnn", num_classes=10, width=4)
  teacher = models.get("tiny_cnn", num_classes=10, width=8)
  x0 = jnp.zeros((1, 16, 16, 3))
  tv = teacher.init(jax.random.PRNGKey(1), x0, train=False)
  method = build_method(preset("mlkd"))
  tx = optax.sgd(0.05, momentum=0.9)
  init = init_train_state(student, (teacher, tv), method, x0, jax.random.PRNGKey(0), tx=tx)
  p0 = jax.device_get(init.state.params)
  bs0 = jax.device_get(init.state.batch_stats)
  tf = lambda im, r: im.astype(jnp.float32) / 255.0 - 0.5  # noqa: E731
  steps = make_steps(
    student=student,
    method=init.method,
    tx=tx,
    train_transform=tf,
    eval_transform=tf,
    teacher=teacher,
    connectors=init.connectors,
    emit_norms=False,
  )
  rs = np.random.RandomState(0)
  batch = dict(
    image=rs.randint(0, 255, (6, 16, 16, 3)).astype(np.uint8),
    label=rs.randint(0, 10, (6,)).astype(np.int32),
    index=np.arange(6, dtype=np.int32),
  )
  rng = jax.random.fold_in(init.state.rng, init.state.step)
  new_state, metrics = steps.train_batch(init.state, batch, tv)
  assert np.isfinite(float(metrics["loss"]))

  # the same views as the step made, and the losses on that forward pass
  @jax.jit
  def forward(images, key):
    x = M.WEAK_STRONG_VIEWS.make(images, key, tf)
    svars = {"params": p0["student"], "batch_stats": bs0["student"]}
    z = student.apply(svars, x, train=True, mutable=["batch_stats"])[0][0]
    return x, z, teacher.apply(tv, x, train=False)[0]

  x, z, v = forward(batch["image"], rng)
  assert x.shape == (12, 16, 16, 3)
  y = batch["label"]
  zw, zs, vw, vs = z[0::2], z[1::2], v[0::2], v[1::2]
  want = {
    "ce": cross_entropy(zw, y).mean(),
    "mlkd_strong_ce": cross_entropy(zs, y).mean(),
    "mlkd_instance": L.mlkd_instance(zw, vw, zs, vs).mean(),
    "mlkd_batch": L.mlkd_batch(zw, vw).mean(),
    "mlkd_class": L.mlkd_class(zw, vw).mean(),
  }
  for k, w in want.items():
    np.testing.assert_allclose(float(metrics[k]), float(w), rtol=1e-4, atol=1e-7, err_msg=k)
  total = 0.1 * (want["ce"] + want["mlkd_strong_ce"]) + 0.9 * (
    want["mlkd_instance"] + want["mlkd_batch"] + want["mlkd_class"]
  )
  np.testing.assert_allclose(float(metrics["loss"]), float(total), rtol=1e-4)
  np.testing.assert_allclose(
    float(metrics["accuracy"]), float(jnp.mean(jnp.argmax(zw, -1) == y)), atol=1e-6
  )
  moved = jax.tree_util.tree_map(
    lambda a, b: not np.allclose(a, b), p0["student"], jax.device_get(new_state.params["student"])
  )
  assert all(jax.tree_util.tree_leaves(moved))
