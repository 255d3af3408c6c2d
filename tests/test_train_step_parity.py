"""One whole distillation train step equals RepDistiller's ``train_distill`` step (PyTorch).

Golden: ``tools/goldens/make_train_step_golden.py`` (run once with torch 2.13, float64): teacher
resnet32x4 and student resnet8x4 with the parity fixtures' weights, one batch of 16, loss
``0.1 CE + 0.9 KD(T=4) + 1000 AT(p=2, three stages)``, student in train mode, teacher in eval
mode, ``SGD(lr 0.05, momentum 0.9, wd 5e-4)``. Here the same weights go through kdjax's own
import, method (``build_method`` from config dicts, exactly as RepDistiller's ``-r 0.1 -a 0.9
-b 1000 --distill attention`` wiring), optimiser (``make_optimizer``) and jitted ``train_batch``
(float32). Compared: the loss and its parts, every updated student parameter and the BN running
means to 1e-4 (relative to each tensor's largest magnitude), and the running variances after
accounting for Flax's biased batch variance (PyTorch stores the unbiased one).
"""
import importlib.util
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kdjax import models
from kdjax.config import base_config
from kdjax.methods import build_method
from kdjax.models import import_torch as it
from kdjax.train import state as state_lib
from kdjax.train.optim import make_optimizer
from kdjax.train.step import make_steps

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GOLDEN = os.path.join(ROOT, "tests", "golden", "train_step_r32x4_r8x4.npz")
PARITY = os.path.join(ROOT, "tests", "golden", "parity")
# float64: the semantics (parameters agree to 1e-6; the logit losses cast to float32 inside
# Method.loss, so the loss parts agree to ~3e-6); float32: kdjax's default
# precision, where one tensor (layer3_0 conv1, whose gradient sums the AT term weighted 1000
# over 16x8x8 positions) reaches 1.6e-4 relative to its largest entry.
RTOL = {"float64": 1e-5, "float32": 2.5e-4}

_spec = importlib.util.spec_from_file_location("parity_recipe", os.path.join(PARITY, "recipe.py"))
recipe = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(recipe)


def _torch_sd(arch):
  with np.load(os.path.join(PARITY, f"{arch}.npz")) as f:
    return recipe.state_dict({k: f[k] for k in f.files})


def _rel(got, want):
  got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
  assert got.shape == want.shape, (got.shape, want.shape)
  return float(np.max(np.abs(got - want)) / max(np.max(np.abs(want)), 1e-30))


def _bn_count(key, batch):
  """Elements per channel a BN layer of resnet8x4 normalises over (batch x H x W)."""
  hw = {"layer2": 16, "layer3": 8}.get(key.split(".")[0], 32)
  return batch * hw * hw


@pytest.fixture(scope="module", params=["float32", "float64"])
def stepped(request):
  if request.param == "float64":
    with jax.enable_x64(True):
      yield _step(np.float64) + (RTOL["float64"],)
  else:
    yield _step(np.float32) + (RTOL["float32"],)


def _step(dtype):
  with np.load(GOLDEN) as f:
    g = {k: f[k] for k in f.files}
  t_sd, s_sd = _torch_sd("resnet32x4"), _torch_sd("resnet8x4")
  cast = lambda tree: jax.tree_util.tree_map(lambda a: jnp.asarray(a, dtype), tree)
  tv = cast(it.convert("resnet32x4", t_sd)[0])
  sv = cast(it.convert("resnet8x4", s_sd)[0])
  teacher = models.get("resnet32x4", num_classes=100)
  student = models.get("resnet8x4", num_classes=100)
  method = build_method(dict(name="kd+at", ce_weight=0.1, terms=dict(
      kd=dict(weight=0.9, temperature=4.0),
      at=dict(loss="at@3", weight=1000.0, p=2.0))))
  cfg = base_config().optim            # SGD 0.05, momentum 0.9, wd 5e-4 (RepDistiller)
  tx, _ = make_optimizer(cfg, steps_per_epoch=782)
  state = state_lib.create({"student": sv["params"], "connectors": {}},
                           {"student": sv["batch_stats"], "connectors": {}}, tx,
                           jax.random.PRNGKey(0))
  fns = make_steps(student=student, method=method, tx=tx, teacher=teacher,
                   train_transform=lambda im, r: im, eval_transform=lambda im: im)
  batch = {"image": jnp.asarray(np.transpose(g["input"], (0, 2, 3, 1)), dtype),
           "label": jnp.asarray(g["labels"]), "index": jnp.arange(len(g["labels"]))}
  new_state, metrics = fns.train_batch(state, batch, tv)
  after, _ = it.convert("resnet8x4", {k[len("after/"):]: v for k, v in g.items()
                                      if k.startswith("after/")})
  before_var = {k: v for k, v in s_sd.items() if k.endswith("running_var")}
  return g, jax.device_get(new_state), jax.device_get(metrics), after, s_sd, before_var


def test_loss_and_parts_match_repdistiller(stepped):
  g, _, m, *_, tol = stepped
  assert float(m["loss"]) == pytest.approx(float(g["loss"]), rel=tol)
  assert float(m["ce"]) == pytest.approx(float(g["loss_ce"]), rel=tol)
  assert float(m["kd"]) == pytest.approx(float(g["loss_kd"]), rel=tol)
  assert float(m["at"]) == pytest.approx(float(g["loss_at"]), rel=tol)


def test_updated_parameters_match_repdistiller(stepped):
  _, state, _, after, *_, tol = stepped
  got = jax.tree_util.tree_flatten_with_path(state.params["student"])[0]
  want = dict(jax.tree_util.tree_flatten_with_path(after["params"])[0])
  assert len(got) == len(want) > 30
  errors = {jax.tree_util.keystr(p): _rel(v, want[p]) for p, v in got}
  bad = {k: e for k, e in errors.items() if not e <= tol}
  assert not bad, bad
  # The step really moved the parameters (the comparison is not of two unchanged copies).
  before = it.convert("resnet8x4", _torch_sd("resnet8x4"))[0]["params"]
  moved = jax.tree_util.tree_map(lambda a, b: float(np.max(np.abs(a - b))), after["params"],
                                 before)
  assert max(jax.tree_util.tree_leaves(moved)) > 1e-3


def test_bn_running_statistics_match_repdistiller(stepped):
  g, state, _, after, s_sd, _, tol = stepped
  got = dict(jax.tree_util.tree_flatten_with_path(state.batch_stats["student"])[0])
  want = dict(jax.tree_util.tree_flatten_with_path(after["batch_stats"])[0])
  before = dict(jax.tree_util.tree_flatten_with_path(
      it.convert("resnet8x4", _torch_sd("resnet8x4"))[0]["batch_stats"])[0])
  # Elements per channel of every BN: convert a state dict whose running variances hold them.
  batch = len(g["labels"])
  marked = {k: (np.full_like(v, _bn_count(k, batch)) if k.endswith("running_var") else v)
            for k, v in s_sd.items()}
  counts = dict(jax.tree_util.tree_flatten_with_path(
      it.convert("resnet8x4", marked)[0]["batch_stats"])[0])
  assert set(got) == set(want)
  n_checked = 0
  for path, v in got.items():
    leaf = jax.tree_util.keystr(path)
    if leaf.endswith("['mean']"):
      assert _rel(v, want[path]) <= tol, leaf
    else:
      # torch: r1 = 0.9 r0 + 0.1 var_unbiased; flax: 0.9 r0 + 0.1 var_biased.
      r0, r1 = np.asarray(before[path], np.float64), np.asarray(want[path], np.float64)
      n_el = float(np.asarray(counts[path]).flat[0])
      expected = 0.9 * r0 + (n_el - 1) / n_el * (r1 - 0.9 * r0)
      assert _rel(v, expected) <= tol, leaf
    n_checked += 1
  assert n_checked == len(want)
