"""Online distillation (DML, KDCL): losses against NumPy formulas, the joint jitted step against
separate per-peer updates, stop-gradient, end-to-end runs with loadable peers and resume, and
2 fake devices against 1 (this file doubles as the subprocess script: ``python test_online.py
--multidevice`` with XLA_FLAGS set)."""

import importlib.util
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
if HERE not in sys.path:
  sys.path.insert(0, HERE)

from conftest import tiny_run_config  # noqa: E402
from kdjax import models  # noqa: E402
from kdjax.train.online import validate_online  # noqa: E402
from kdjax.data import augment  # noqa: E402
from kdjax.losses import online as L  # noqa: E402
from kdjax.train import kept_checkpoints, load_model  # noqa: E402
from kdjax.train import online as T  # noqa: E402
from kdjax.train.loop import train_online  # noqa: E402
from kdjax.train.optim import make_optimizer  # noqa: E402


# ------------------------------------------------------------------------------------------------
# NumPy reference formulas (float64)
# ------------------------------------------------------------------------------------------------


def _np_log_softmax(z):
  z = z - z.max(-1, keepdims=True)
  return z - np.log(np.exp(z).sum(-1, keepdims=True))


def _np_ce(z, y):
  return -_np_log_softmax(z)[np.arange(len(y)), y]


def _np_kl(target_logits, logits, t):
  lp, lq = _np_log_softmax(target_logits / t), _np_log_softmax(logits / t)
  return t * t * np.sum(np.exp(lp) * (lp - lq), -1)


def _np_dml(zs, y, t=1.0, w=1.0):
  k = len(zs)
  return np.stack(
    [
      _np_ce(zs[i], y) + w * sum(_np_kl(zs[j], zs[i], t) for j in range(k) if j != i) / (k - 1)
      for i in range(k)
    ]
  )


def _np_minlogit(zs, y):
  b, c = zs[0].shape
  out = np.empty((b, c))
  for n in range(b):
    for cls in range(c):
      out[n, cls] = min(z[n, cls] - z[n, y[n]] for z in zs)
  return out


def _np_kdcl(zs, y, z_ens, t=3.0, w=1.0):
  return np.stack([_np_ce(z, y) + w * _np_kl(z_ens, z, t) for z in zs])


def _logits(k=3, b=5, c=7, seed=0, scale=3.0):
  rs = np.random.RandomState(seed)
  return [rs.randn(b, c) * scale for _ in range(k)], rs.randint(0, c, (b,))


# ------------------------------------------------------------------------------------------------
# losses
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("k,t,w", [(2, 1.0, 1.0), (3, 1.0, 1.0), (3, 2.0, 0.5)])
def test_dml_golden_values(k, t, w):
  with jax.enable_x64(True):
    zs, y = _logits(k=k)
    got, parts = L.dml(
      [jnp.asarray(z) for z in zs], jnp.asarray(y), temperature=t, weight=w, return_parts=True
    )
    assert got.shape == (k, 5) and got.dtype == jnp.float64
    np.testing.assert_allclose(got, _np_dml(zs, y, t, w), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(parts["ce"], np.stack([_np_ce(z, y) for z in zs]), rtol=1e-12)
    # the stacked (K, B, C) input gives the same values
    np.testing.assert_allclose(
      L.dml(jnp.asarray(np.stack(zs)), jnp.asarray(y), temperature=t, weight=w), got, rtol=1e-12
    )


def test_dml_two_peers_is_ce_plus_kl_of_the_other_peer():
  """AberHu train_dml.py: L_1 = CE(z1) + KL(softmax(z2) || softmax(z1)), batchmean."""
  zs, y = _logits(k=2, seed=3)
  got = np.asarray(L.dml(zs, y))
  np.testing.assert_allclose(got[0], _np_ce(zs[0], y) + _np_kl(zs[1], zs[0], 1.0), rtol=1e-5)
  np.testing.assert_allclose(got[1], _np_ce(zs[1], y) + _np_kl(zs[0], zs[1], 1.0), rtol=1e-5)


@pytest.mark.parametrize("ensemble", ["minlogit", "naive"])
def test_kdcl_golden_values(ensemble):
  with jax.enable_x64(True):
    zs, y = _logits(k=3, seed=1)
    z_ens = _np_minlogit(zs, y) if ensemble == "minlogit" else np.mean(zs, 0)
    np.testing.assert_allclose(L.kdcl_ensemble(zs, y, ensemble), z_ens, rtol=1e-12, atol=1e-12)
    got, parts = L.kdcl(zs, jnp.asarray(y), ensemble=ensemble, return_parts=True)  # T 3, λ 1
    np.testing.assert_allclose(got, _np_kdcl(zs, y, z_ens, 3.0, 1.0), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(parts["ensemble"], z_ens, rtol=1e-12, atol=1e-12)
    got2 = L.kdcl(zs, jnp.asarray(y), ensemble=ensemble, temperature=2.0, weight=0.3)
    np.testing.assert_allclose(got2, _np_kdcl(zs, y, z_ens, 2.0, 0.3), rtol=1e-12, atol=1e-12)


def test_minlogit_ground_truth_entry_is_zero_and_lowest_margin():
  zs, y = _logits(k=4, seed=2)
  z = np.asarray(L.ensemble_minlogit(zs, y))
  np.testing.assert_allclose(z[np.arange(5), y], 0.0, atol=1e-6)
  # its CE is no larger than any peer's (every wrong class gets the smallest margin)
  assert np.all(_np_ce(z, y) <= np.min([_np_ce(zz, y) for zz in zs], 0) + 1e-5)


def test_linear_ensemble_weights_are_convex_and_fit_the_batch():
  rs = np.random.RandomState(0)
  y = rs.randint(0, 10, (64,))
  good = np.eye(10)[y] * 6.0 + rs.randn(64, 10) * 0.5  # a peer that is nearly always right
  bad = rs.randn(64, 10) * 3.0  # a peer that guesses
  w = np.asarray(L.linear_ensemble_weights([bad, good], y, steps=200))
  assert w.shape == (2,) and np.all(w >= 0) and abs(w.sum() - 1) < 1e-5
  assert w[1] > 0.8, w
  z_lin = np.asarray(L.ensemble_linear([bad, good], y, steps=200))
  assert _np_ce(z_lin, y).mean() < _np_ce((bad + good) / 2, y).mean()
  got = L.kdcl([bad, good], y, ensemble="linear")
  assert got.shape == (2, 64) and np.all(np.isfinite(got))


def test_losses_reject_bad_input():
  zs, y = _logits(k=2)
  with pytest.raises(ValueError, match="at least 2 peers"):
    L.dml(zs[:1], y)
  with pytest.raises(ValueError, match="temperature"):
    L.dml(zs, y, temperature=0.0)
  with pytest.raises(ValueError, match="weight"):
    L.kdcl(zs, y, weight=-1.0)
  with pytest.raises(ValueError, match="ensemble"):
    L.kdcl(zs, y, ensemble="general")
  with pytest.raises(ValueError, match="same"):
    L.dml([zs[0], zs[1][:, :3]], y)


def test_loss_gradients_only_flow_into_each_peers_own_logits():
  zs, y = _logits(k=3, seed=4)
  z = jnp.asarray(np.stack(zs), jnp.float32)
  for fn in (L.dml, L.kdcl):
    for i in range(3):
      g = np.asarray(jax.grad(lambda z: fn(z, y)[i].mean())(z))
      assert np.abs(g[i]).max() > 0
      np.testing.assert_array_equal(np.delete(g, i, axis=0), 0.0)


# ------------------------------------------------------------------------------------------------
# the joint step
# ------------------------------------------------------------------------------------------------


def _flip_tf(im, rng):
  return augment.random_flip(im.astype(jnp.float32) / 255.0, rng)


def _setup(mode, seed=0):
  peers = [models.get("tiny_cnn", num_classes=10), models.get("tiny_cnn", num_classes=10, width=12)]
  x = jnp.zeros((1, 16, 16, 3))
  params, stats = {}, {}
  for i, m in enumerate(peers):
    v = m.init(jax.random.PRNGKey(seed + i), x)
    params[T.peer_key(i)], stats[T.peer_key(i)] = v["params"], v["batch_stats"]
  cfg = tiny_run_config().optim
  cfg.weight_decay = 5e-4
  tx, _ = make_optimizer(cfg, steps_per_epoch=10)
  t = 1.0 if mode == "dml" else 3.0
  steps = T.make_online_steps(
    peers=peers,
    mode=mode,
    temperature=t,
    weight=0.7,
    ensemble="minlogit",
    tx=tx,
    train_transform=_flip_tf,
  )
  state = T.create_state(params, stats, tx, jax.random.PRNGKey(7))
  rs = np.random.RandomState(0)
  images = rs.randint(0, 255, (32, 16, 16, 3)).astype(np.uint8)
  labels = rs.randint(0, 10, (32,)).astype(np.int32)
  return peers, steps, state, tx, images, labels, t


def _separate_updates(mode, peers, params, stats, opt_states, tx, xs, y, t, w=0.7):
  """Each peer updated alone with its own optimizer; the other peers' logits are constants."""
  keys = [T.peer_key(i) for i in range(len(peers))]
  frozen = []
  for key, m, x in zip(keys, peers, xs):
    (z, _), _ = m.apply(
      {"params": params[key], "batch_stats": stats[key]}, x, train=True, mutable=["batch_stats"]
    )
    frozen.append(z)
  z_ens = L.ensemble_minlogit(frozen, y)
  new_p, new_s, new_o = {}, {}, {}
  for i, (key, m, x) in enumerate(zip(keys, peers, xs)):

    def loss_i(p):
      (z, _), upd = m.apply(
        {"params": p, "batch_stats": stats[key]}, x, train=True, mutable=["batch_stats"]
      )
      logq = jax.nn.log_softmax(z / t)
      ce = -jnp.take_along_axis(jax.nn.log_softmax(z), y[:, None], 1)[:, 0]
      targets = [frozen[j] for j in range(len(peers)) if j != i] if mode == "dml" else [z_ens]
      kl = sum(
        t * t * jnp.sum(jax.nn.softmax(zt / t) * (jax.nn.log_softmax(zt / t) - logq), -1)
        for zt in targets
      ) / len(targets)
      return jnp.mean(ce + w * kl), upd["batch_stats"]

    g, new_s[key] = jax.grad(loss_i, has_aux=True)(params[key])
    upd, new_o[key] = tx.update(g, opt_states[key], params[key])
    new_p[key] = jax.tree_util.tree_map(lambda a, b: a + b, params[key], upd)
  return new_p, new_s, new_o


@pytest.mark.parametrize("mode", ["dml", "kdcl"])
def test_joint_step_equals_separate_per_peer_updates(mode):
  peers, steps, state, tx, images, labels, t = _setup(mode)
  params = jax.tree_util.tree_map(np.array, state.params)
  stats = jax.tree_util.tree_map(np.array, state.batch_stats)
  opts = {k: tx.init(v) for k, v in params.items()}
  rng0 = jnp.asarray(np.array(state.rng))  # the state is donated
  ds_index = np.arange(32, dtype=np.int32)
  for s in range(2):  # two steps: momentum and decay included
    idx = np.arange(8) + 8 * s
    xs = T.peer_views(mode, 2, _flip_tf, images[idx], jax.random.fold_in(rng0, s))
    params, stats, opts = _separate_updates(
      mode, peers, params, stats, opts, tx, xs, jnp.asarray(labels[idx]), t
    )
    state, metrics = steps.train_indexed(state, images, labels, ds_index, jnp.asarray(idx), None)
    assert np.isfinite(float(metrics["loss"]))
    assert set(metrics) >= {"peer0/loss", "peer1/kl", "peer1/accuracy", "ensemble_accuracy"}
  for a, b in zip(
    jax.tree_util.tree_leaves((params, stats)),
    jax.tree_util.tree_leaves((state.params, state.batch_stats)),
  ):
    np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-5, atol=1e-6)
  assert int(state.step) == 2


@pytest.mark.parametrize("mode", ["dml", "kdcl"])
def test_peer_gradients_do_not_depend_on_other_peers_parameters(mode):
  peers, steps, state, _, images, labels, _ = _setup(mode)
  xs = T.peer_views(mode, 2, _flip_tf, images[:8], jax.random.PRNGKey(3))
  y = jnp.asarray(labels[:8])
  for i, other in ((0, "peer1"), (1, "peer0")):
    f = lambda p: steps.peer_losses(p, state.batch_stats, xs, y)[0][i].mean()
    g = jax.grad(f)(state.params)
    assert all(np.all(np.asarray(x) == 0) for x in jax.tree_util.tree_leaves(g[other]))
    assert any(np.any(np.asarray(x) != 0) for x in jax.tree_util.tree_leaves(g[f"peer{i}"]))
  # peer 0's gradient w.r.t. its own parameters is the same whatever the path through peer 1's
  # logits: the total-loss gradient for peer 0 equals the gradient of L_0 alone.
  tot = jax.grad(lambda p: steps.peer_losses(p, state.batch_stats, xs, y)[0].mean(1).sum())(
    state.params
  )
  own = jax.grad(lambda p: steps.peer_losses(p, state.batch_stats, xs, y)[0][0].mean())(
    state.params
  )
  for a, b in zip(jax.tree_util.tree_leaves(tot["peer0"]), jax.tree_util.tree_leaves(own["peer0"])):
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-8)


def test_kdcl_peers_get_different_views_dml_the_same():
  images = np.random.RandomState(0).randint(0, 255, (16, 8, 8, 3)).astype(np.uint8)
  tf = lambda im, r: augment.random_crop_flip(im, r, pad=2)
  k = jax.random.PRNGKey(0)
  a, b = T.peer_views("kdcl", 2, tf, images, k)
  assert not np.array_equal(a, b)
  c, d = T.peer_views("dml", 2, tf, images, k)
  np.testing.assert_array_equal(c, d)
  np.testing.assert_array_equal(a, c)  # peer 0's view is the same in both modes


# ------------------------------------------------------------------------------------------------
# config
# ------------------------------------------------------------------------------------------------


def _online_cfg(mode="dml", peers=("tiny_cnn", "tiny_cnn"), **over):
  c = tiny_run_config(**over)
  c.online.mode = mode
  c.online.peers = peers
  return c


def test_online_config_validation():
  on = validate_online(_online_cfg())
  assert on["temperature"] == 1.0 and on["weight"] == 1.0 and on["peers"] == ("tiny_cnn",) * 2
  assert validate_online(_online_cfg("kdcl"))["temperature"] == 3.0
  bad = [
    (dict(mode="mutual"), "online.mode"),
    (dict(peers=("tiny_cnn",)), "at least 2"),
    (dict(peers=()), "at least 2"),
    (dict(peers=("tiny_cnn", "resnet9")), "resnet9"),
    (dict(temperature=0.0), "temperature"),
    (dict(temperature=-1.0), "temperature"),
    (dict(weight=-0.5), "weight"),
    (dict(ensemble="general"), "ensemble"),
  ]
  for fields, msg in bad:
    c = _online_cfg()
    for key, v in fields.items():
      c.online[key] = v
    with pytest.raises(ValueError, match=msg):
      validate_online(c)


def test_train_online_rejects_bad_config_before_building(tmp_path):
  c = _online_cfg(peers=("tiny_cnn", "resnet9"))
  with pytest.raises(ValueError, match="Unknown model 'resnet9'"):
    train_online(c, str(tmp_path / "x"))
  c = _online_cfg()
  c.online.temprature = 2.0
  with pytest.raises(ValueError, match="online.temperature"):
    train_online(c, str(tmp_path / "x"))


def _load_config_file():
  spec = importlib.util.spec_from_file_location(
    "cfg_online", os.path.join(ROOT, "configs", "online.py")
  )
  mod = importlib.util.module_from_spec(spec)
  if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
  spec.loader.exec_module(mod)
  return mod


def test_configs_online_file():
  from kdjax.config import validate

  mod = _load_config_file()
  for arg, mode, peers in [
    ("dml_fmnist", "dml", ("resnet8", "resnet8")),
    ("kdcl_fmnist,quick", "kdcl", ("resnet8", "resnet8")),
    ("dml_cifar100:resnet110-resnet20", "dml", ("resnet110", "resnet20")),
    ("kdcl_cifar100", "kdcl", ("resnet32", "resnet32")),
    ("dml_cifar100:resnet8-resnet8-wrn_16_2", "dml", ("resnet8", "resnet8", "wrn_16_2")),
  ]:
    c = mod.get_config(arg)
    validate(c)
    on = validate_online(c)
    assert (on["mode"], on["peers"]) == (mode, peers), arg
  assert mod.get_config("dml_cifar100").optim.nesterov
  assert "dml_cifar100:resnet110-resnet20" in mod.PUBLISHED
  for arg in ("dkd_fmnist", "dml_cifar10", "dml_fmnist:resnet8-resnet8", "dml_fmnist,huge"):
    with pytest.raises(ValueError):
      mod.get_config(arg)


# ------------------------------------------------------------------------------------------------
# end to end (mock CIFAR-100: 40 examples, batch 8 -> 5 steps per epoch)
# ------------------------------------------------------------------------------------------------


def _tree_allclose(a, b, **kw):
  la, lb = jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)
  assert len(la) == len(lb)
  for x, y in zip(la, lb):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), **kw)


def test_dml_run_writes_loadable_peers_resumes_and_peers_teach(tmp_path, mock_cifar100):
  from kdjax.experiments import evaluate_run
  from kdjax.train.loop import train_and_evaluate

  cfg = _online_cfg(num_epochs=2, checkpoint_every_steps=3)
  wd = str(tmp_path / "full")
  full = train_online(cfg, wd)
  assert full["finished"] and full["step"] == 10 and full["mode"] == "dml"
  assert len(full["peer_last_top1"]) == 2 and full["ensemble_last_top1"] is not None
  assert all(v is not None for v in full["peer_best_top1"])
  with open(os.path.join(wd, "summary.json")) as fh:
    assert json.load(fh)["ensemble_last_top1"] == pytest.approx(full["ensemble_last_top1"])
  for i in range(2):
    pd = os.path.join(wd, f"peer{i}")
    variables, meta = load_model(pd, "final")
    assert meta["arch"] == "tiny_cnn" and meta["epoch"] == 2 and meta["num_classes"] == 100
    assert meta["test_top1"] == pytest.approx(full["peer_last_top1"][i])
    _tree_allclose(variables["params"], full["state"].params[f"peer{i}"], rtol=0, atol=0)
    _tree_allclose(variables["batch_stats"], full["state"].batch_stats[f"peer{i}"], rtol=0, atol=0)
    load_model(pd, "best")
    assert [k["epoch"] for k in kept_checkpoints(pd)] == [2]
    with open(os.path.join(pd, "config.json")) as fh:
      assert json.load(fh)["model"] == "tiny_cnn"
    with open(os.path.join(pd, "summary.json")) as fh:
      assert json.load(fh)["last_top1"] == pytest.approx(full["peer_last_top1"][i])
  assert not os.path.exists(os.path.join(wd, "kept"))  # no empty manager dirs left
  assert not os.path.exists(os.path.join(wd, "peer0", "checkpoints"))
  recs = [json.loads(l) for l in open(os.path.join(wd, "metrics.jsonl"))]
  assert any("test/ensemble/top1" in r for r in recs) and any("train/peer1/kl" in r for r in recs)

  # interrupted mid-epoch 2 (after the step-6 checkpoint) and resumed == uninterrupted
  class Killed(Exception):
    pass

  def kill_at(step):
    if step == 7:
      raise Killed()

  wd2 = str(tmp_path / "interrupted")
  with pytest.raises(Killed):
    train_online(cfg, wd2, _step_hook=kill_at)
  resumed = train_online(cfg, wd2)
  assert int(resumed["state"].step) == 10
  _tree_allclose(full["state"].params, resumed["state"].params, rtol=1e-6, atol=1e-7)
  _tree_allclose(full["state"].batch_stats, resumed["state"].batch_stats, rtol=1e-6, atol=1e-7)
  assert resumed["peer_last_top1"] == pytest.approx(full["peer_last_top1"])

  # a peer is a plain model: evaluate it, and distil a student from it
  ev = evaluate_run(os.path.join(wd, "peer1"))
  assert ev["top1"] == pytest.approx(full["peer_last_top1"][1])
  kd = tiny_run_config(num_epochs=1)
  kd.teacher.workdir = os.path.join(wd, "peer0")
  kd.method.name = "kd"
  kd.method.terms.kd = dict(weight=0.9, temperature=4.0)
  s = train_and_evaluate(kd, str(tmp_path / "kd"))
  assert s["teacher_top1"] == pytest.approx(full["peer_last_top1"][0])


def test_kdcl_run_and_relaunch_keeps_summary(tmp_path, mock_cifar100):
  cfg = _online_cfg("kdcl", num_epochs=1)
  cfg.online.ensemble = "naive"
  wd = str(tmp_path / "kdcl")
  first = train_online(cfg, wd)
  assert first["finished"] and first["ensemble"] == "naive" and first["temperature"] == 3.0
  again = train_online(cfg, wd)
  assert again["peer_last_top1"] == pytest.approx(first["peer_last_top1"])
  assert again["ensemble_last_top1"] == pytest.approx(first["ensemble_last_top1"])


# ------------------------------------------------------------------------------------------------
# 2 fake devices == 1 device (subprocess: XLA_FLAGS must be set before jax is imported)
# ------------------------------------------------------------------------------------------------


@pytest.mark.multidevice
def test_2_fake_devices_match_one_device():
  env = dict(
    os.environ,
    XLA_FLAGS="--xla_force_host_platform_device_count=2",
    PYTHONPATH=ROOT,
    TFDS_DISABLE_GCS="1",
  )
  r = subprocess.run(
    [sys.executable, os.path.abspath(__file__), "--multidevice"],
    env=env,
    capture_output=True,
    text=True,
    timeout=600,
  )
  assert r.returncode == 0 and "ONLINE MULTIDEVICE OK" in r.stdout, (
    r.stdout[-3000:] + r.stderr[-3000:]
  )


def _multidevice_main():
  import tempfile
  import tensorflow_datasets as tfds
  from kdjax.train import parallel

  assert jax.device_count() == 2, jax.devices()
  worst = 0.0
  with tempfile.TemporaryDirectory() as tmp, tfds.testing.mock_data(num_examples=40):
    for mode in ("kdcl",):  # per-peer views + the ensemble; DML's step is a subset of it
      runs = {}
      for n in (2, 1):
        cfg = _online_cfg(mode, num_epochs=1)
        cfg.tensorboard = False
        runs[n] = train_online(
          cfg, os.path.join(tmp, f"{mode}{n}"), mesh=parallel.make_mesh(jax.devices()[:n])
        )
      leaf = jax.tree_util.tree_leaves(runs[2]["state"].params)[0]
      assert len(leaf.sharding.device_set) == 2, leaf.sharding
      a, b = jax.device_get(runs[2]["state"]), jax.device_get(runs[1]["state"])
      for x, y in zip(
        jax.tree_util.tree_leaves((a.params, a.batch_stats)),
        jax.tree_util.tree_leaves((b.params, b.batch_stats)),
      ):
        np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6)
        worst = max(worst, float(np.max(np.abs(x - y))))
      assert runs[2]["peer_last_top1"] == pytest.approx(runs[1]["peer_last_top1"])
      assert runs[2]["num_devices"] == 2 and runs[1]["num_devices"] == 1
  print(f"ONLINE MULTIDEVICE OK max|diff|={worst:.2e}")


if __name__ == "__main__" and "--multidevice" in sys.argv:
  _multidevice_main()
