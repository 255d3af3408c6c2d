"""SFTN (student-friendly teachers, methods.md §4): the 'sftn' model, the 'sftn' term, export."""

import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from conftest import ROOT, tiny_run_config
from configs import sftn as sftn_configs
from kdjax import cli, models
from kdjax.config import validate
from kdjax.methods import Batch, Outputs, build_method
from kdjax.methods.sftn import sftn_term
from kdjax.teachers import sftn
from kdjax.train import load_model
from kdjax.train.loop import train_and_evaluate

X32 = jax.ShapeDtypeStruct((2, 32, 32, 3), jnp.float32)
KERNEL = {"down": ("conv", 3), "same": ("conv", 1), "up": ("deconv", 4)}


def _abstract(model, x=X32):
  (logits, taps), variables = jax.eval_shape(
    lambda x: model.init_with_output(jax.random.PRNGKey(0), x, train=False), x
  )
  return logits, taps, variables


def _check_bridges(model, variables, plan):
  for i, p in plan.items():
    layer, k = KERNEL[p["mode"]]
    bridge = variables["params"][f"bridge_{i}"]
    assert set(bridge) == {layer, "bn"}
    assert bridge[layer]["kernel"].shape == (k, k, p["teacher"][-1], p["student"][-1])
    assert bridge["bn"]["scale"].shape == (p["student"][-1],)  # BN(s_C)


@pytest.mark.parametrize("pair", sorted(sftn_configs.PAIRS))
def test_branch_shapes_and_bridges_for_every_pair(pair):
  t_arch, s_arch = sftn_configs.PAIRS[pair]
  model = models.get("sftn", num_classes=100, teacher=t_arch, student=s_arch)
  n = type(models.get(t_arch, num_classes=100)).num_stages
  assert type(model).num_stages == n and model.branch_points == tuple(range(1, n))
  logits, taps, variables = _abstract(model)
  assert logits.shape == (2, 100)
  assert taps["branch_logits"].shape == (n - 1, 2, 100)
  assert {f"stage{i}" for i in range(1, n + 1)} | {"pooled"} <= set(taps)
  plan = sftn.bridge_plan(model, (32, 32, 3))
  for i, p in plan.items():
    assert p["teacher"] == taps[f"stage{i}"].shape[1:]
    th, sh = p["teacher"][0], p["student"][0]
    assert p["mode"] == ("down" if sh < th else "up" if sh > th else "same")
  _check_bridges(model, variables, plan)
  assert sorted(variables["params"]) == sorted(
    ["teacher"] + [f"bridge_{i}" for i in plan] + [f"branch_{i}" for i in plan]
  )
  # The teacher subtree is exactly a standalone teacher (what export_teacher relies on).
  _, _, alone = _abstract(models.get(t_arch, num_classes=100))
  assert jax.tree_util.tree_structure(
    variables["params"]["teacher"]
  ) == jax.tree_util.tree_structure(alone["params"])
  if pair == "resnet32x4-ShuffleV1":  # 32x32x64 -> 16x16x240: stride-2 3x3 conv
    assert plan[1] == {"mode": "down", "teacher": (32, 32, 64), "student": (16, 16, 240)}
  if pair == "resnet32x4-resnet8x4":  # equal maps: 1x1 conv
    assert [p["mode"] for p in plan.values()] == ["same", "same"]


def test_upsampling_bridge_shared_blocks_and_branch_subset():
  # ShuffleV1 (16x16 after stage 1) -> resnet8 (32x32): ConvTranspose 4x4 stride 2 pad 1.
  model = models.get(
    "sftn",
    num_classes=10,
    teacher="ShuffleV1",
    student="resnet8",
    share_student_blocks=True,
    branch_points=[2, 1],
  )
  assert model.branch_points == (1, 2)
  logits, taps, variables = _abstract(model)
  assert taps["branch_logits"].shape == (2, 2, 10)
  plan = sftn.bridge_plan(model, (32, 32, 3))
  assert [p["mode"] for p in plan.values()] == ["up", "up"]
  _check_bridges(model, variables, plan)
  assert "student_tail" in variables["params"] and "branch_1" not in variables["params"]
  one = models.get(
    "sftn", num_classes=10, teacher="resnet20", student="resnet8", branch_points=(2,)
  )
  _, taps, variables = _abstract(one)
  assert taps["branch_logits"].shape == (1, 2, 10)
  assert sorted(variables["params"]) == ["branch_2", "bridge_2", "teacher"]
  assert sorted(variables["params"]["branch_2"]) == ["fc", "layer3_0"]  # stages 3.. + head only


def test_configuration_errors():
  with pytest.raises(ValueError, match="same number of stages.*'resnet8' has 3.*'vgg8' has 4"):
    models.get("sftn", num_classes=10, teacher="resnet8", student="vgg8")
  for bad in ((0,), (3,), (1, 1), ()):
    with pytest.raises(ValueError, match="branch_points"):
      models.get("sftn", num_classes=10, teacher="resnet8", student="resnet8", branch_points=bad)
  with pytest.raises(ValueError, match="pairs"):
    models.get(
      "sftn",
      num_classes=10,
      teacher="tiny_cnn",
      student="tiny_cnn",
      student_kwargs=ml_collections.ConfigDict({"width": 4}),
    )
  with pytest.raises(ValueError, match="factor of 2"):
    sftn.bridge_mode((32, 32, 8), (8, 8, 8))


def _np_log_softmax(z):
  z = z - z.max(-1, keepdims=True)
  return z - np.log(np.exp(z).sum(-1, keepdims=True))


def test_sftn_term_matches_hand_computation():
  rs = np.random.RandomState(0)
  r, b, k = 3, 5, 7
  z_t = rs.randn(b, k).astype(np.float32) * 2
  z_b = rs.randn(r, b, k).astype(np.float32) * 2
  y = rs.randint(0, k, b)
  s = Outputs(jnp.asarray(z_t), {"branch_logits": jnp.asarray(z_b)})
  batch = Batch(jnp.asarray(y), jnp.arange(b))

  def expected(kl_w, ce_w, tau, direction, t2, reduce):
    ce = np.stack([-_np_log_softmax(z_b[i])[np.arange(b), y] for i in range(r)])
    lt = _np_log_softmax(z_t / tau)
    kl = []
    for i in range(r):
      lr = _np_log_softmax(z_b[i] / tau)
      lp, lq = (lt, lr) if direction == "teacher_to_branch" else (lr, lt)
      kl.append((np.exp(lp) * (lp - lq)).sum(-1) * (tau**2 if t2 else 1.0))
    red = np.mean if reduce == "mean" else np.sum
    return ce_w * red(ce, 0) + kl_w * red(np.stack(kl), 0)

  for kw in (
    dict(),
    dict(
      kl_weight=0.5,
      ce_weight=2.0,
      temperature=2.0,
      kl_direction="branch_to_teacher",
      branch_reduce="sum",
    ),
    dict(temperature=4.0, t2_scale=False, detach_teacher_logits_in_kl=True),
  ):
    full = dict(
      kl_weight=3.0,
      ce_weight=1.0,
      temperature=1.0,
      kl_direction="teacher_to_branch",
      t2_scale=True,
      branch_reduce="mean",
    )
    full.update({k_: v for k_, v in kw.items() if k_ in full})
    got = sftn_term(s, None, batch, **kw)
    np.testing.assert_allclose(
      np.asarray(got),
      expected(
        full["kl_weight"],
        full["ce_weight"],
        full["temperature"],
        full["kl_direction"],
        full["t2_scale"],
        full["branch_reduce"],
      ),
      rtol=1e-5,
      atol=1e-6,
    )

  # Through the declarative method: lambda_T CE(z_T) + the term; no teacher needed.
  method = build_method(dict(name="sftn", ce_weight=1.0, terms=dict(sftn=dict(weight=1.0))))
  assert not method.needs_teacher and method.student_taps == ("branch_logits",)
  total, _ = method.loss(s, None, batch)
  ce_t = -_np_log_softmax(z_t)[np.arange(b), y]
  np.testing.assert_allclose(
    np.asarray(total),
    ce_t + expected(3.0, 1.0, 1.0, "teacher_to_branch", True, "mean"),
    rtol=1e-5,
    atol=1e-6,
  )

  # detach_teacher_logits_in_kl: the KL sends no gradient to z_T.
  def g(detach):
    return jax.grad(
      lambda zt: sftn_term(
        Outputs(zt, s.taps), None, batch, ce_weight=0.0, detach_teacher_logits_in_kl=detach
      ).sum()
    )(s.logits)

  assert np.abs(np.asarray(g(False))).max() > 1e-3 and np.all(np.asarray(g(True)) == 0)

  for bad, match in (
    (dict(kl_direction="both"), "kl_direction"),
    (dict(branch_reduce="max"), "branch_reduce"),
    (dict(kl_weight=-1.0), "kl_weight"),
    (dict(temperature=0.0), "temperature"),
  ):
    with pytest.raises(ValueError, match=match):
      sftn_term(s, None, batch, **bad)
  with pytest.raises(ValueError, match="unknown hyper-parameter 'lambda_kl'"):
    build_method(dict(terms=dict(sftn=dict(weight=1.0, lambda_kl=3.0))))


@pytest.mark.parametrize("detach", [True, False])
def test_branch_gradient_reaches_teacher_only_without_detach(detach):
  model = models.get(
    "sftn",
    num_classes=10,
    teacher="tiny_cnn",
    student="tiny_cnn",
    student_kwargs={"width": 4},
    detach_branch_input=detach,
  )
  x = jax.random.normal(jax.random.PRNGKey(1), (4, 16, 16, 3))
  v = model.init(jax.random.PRNGKey(0), x)
  batch = Batch(jnp.array([0, 1, 2, 3]), jnp.arange(4))

  def branch_ce(params):
    (z, taps), _ = model.apply(
      {"params": params, "batch_stats": v["batch_stats"]}, x, train=True, mutable=["batch_stats"]
    )
    return sftn_term(Outputs(z, taps), None, batch, kl_weight=0.0, ce_weight=1.0).mean()

  grads = jax.grad(branch_ce)(v["params"])
  t_norm = sum(float(jnp.abs(a).sum()) for a in jax.tree_util.tree_leaves(grads["teacher"]))
  b_norm = sum(float(jnp.abs(a).sum()) for a in jax.tree_util.tree_leaves(grads["branch_1"]))
  assert b_norm > 0
  if detach:
    assert t_norm == 0.0
  else:
    assert t_norm > 0 and float(jnp.abs(grads["teacher"]["conv0"]["kernel"]).sum()) > 0


def test_configs_build_and_validate():
  for arg in sorted(sftn_configs.PAIRS) + ["fmnist:resnet20-resnet8"]:
    c = sftn_configs.get_config(arg)
    validate(c)
    m = build_method(c.method)
    assert c.model == "sftn" and m.ce_weight == 1.0 and not m.needs_teacher
    assert dict(m.terms[0].hparams)["kl_weight"] == 3.0
  with pytest.raises(ValueError, match="unknown pair"):
    sftn_configs.get_config("resnet56-resnet20")


def test_stage1_export_then_unchanged_kd(tmp_path, mock_cifar100, capsys):
  # Stage 1: an ordinary supervised run whose model is the SFTN wrapper.
  cfg = tiny_run_config(num_epochs=1, model="sftn")
  cfg.model_kwargs.teacher = "tiny_cnn"
  cfg.model_kwargs.student = "tiny_cnn"
  cfg.model_kwargs.student_kwargs = (("width", 4),)
  cfg.method.name = "sftn"
  cfg.method.ce_weight = 1.0
  cfg.method.terms.sftn = dict(weight=1.0, kl_weight=3.0, ce_weight=1.0, temperature=1.0)
  swd = str(tmp_path / "sftn")
  s1 = train_and_evaluate(cfg, swd)
  assert s1["finished"] and s1["last_top1"] is not None
  sv, smeta = load_model(swd, "final")
  assert smeta["arch"] == "sftn" and {"teacher", "bridge_1", "branch_1"} <= set(sv["params"])

  # Stage 3: export through the CLI (one message, exit 2, on a bad workdir).
  out = str(tmp_path / "sftn_teacher")
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  cmd = [sys.executable, "-m", "launch.export_teacher", "--workdir", swd, "--out", out]
  r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
  assert r.returncode == 0, r.stderr[-2000:]
  assert "exported SFTN teacher tiny_cnn" in r.stdout
  tv, tmeta = load_model(out, "final")
  assert tmeta["arch"] == "tiny_cnn" and tmeta["source"] == "sftn"
  assert tmeta["model_kwargs"] == {} and tmeta["num_classes"] == 100
  assert tmeta["step"] == smeta["step"] and tmeta["epoch"] == 1
  for a, b in zip(
    jax.tree_util.tree_leaves(tv),
    jax.tree_util.tree_leaves(
      {"params": sv["params"]["teacher"], "batch_stats": sv["batch_stats"]["teacher"]}
    ),
  ):
    np.testing.assert_array_equal(a, b)
  with pytest.raises(ValueError, match="already holds"):
    sftn.export_teacher(swd, out)
  with pytest.raises(SystemExit) as e:  # what the CLI does with a bad --workdir
    cli.guarded(sftn.export_teacher, str(tmp_path / "nope"), str(tmp_path / "o2"))
  assert e.value.code == 2 and "does not exist" in capsys.readouterr().err

  # Stage 4: an unchanged distiller consumes the export; it sees the SFTN run's teacher.
  kd = tiny_run_config(num_epochs=1)
  kd.model_kwargs.width = 4
  kd.teacher.workdir = out
  kd.method.name = "kd"
  kd.method.ce_weight = 0.1
  kd.method.terms.kd = dict(weight=0.9, temperature=4.0)
  s4 = train_and_evaluate(kd, str(tmp_path / "kd"))
  assert s4["finished"] and s4["teacher"]["arch"] == "tiny_cnn"
  assert s4["teacher_top1"] == pytest.approx(s1["last_top1"])

  # Fine-tune mode: a fresh SFTN takes the trained teacher's weights, branches stay fresh.
  model = models.get(
    "sftn", num_classes=100, teacher="tiny_cnn", student="tiny_cnn", student_kwargs=(("width", 4),)
  )
  fresh = model.init(jax.random.PRNGKey(3), jnp.zeros((1, 32, 32, 3)))
  loaded = sftn.load_pretrained_teacher(fresh, out + "@final", expected_arch="tiny_cnn")
  np.testing.assert_array_equal(
    loaded["params"]["teacher"]["conv0"]["kernel"], tv["params"]["conv0"]["kernel"]
  )
  np.testing.assert_array_equal(
    loaded["params"]["bridge_1"]["conv"]["kernel"], fresh["params"]["bridge_1"]["conv"]["kernel"]
  )
  with pytest.raises(ValueError, match="resnet8"):
    sftn.load_pretrained_teacher(fresh, out, expected_arch="resnet8")
