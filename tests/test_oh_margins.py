"""OH margins from the teacher's BatchNorm before each ReLU (kdjax.models.bn_before_relu) against
mdistiller's choice and overhaul's ``get_margin_from_BN`` on PyTorch teachers
(tools/goldens/make_oh_margin_goldens.py), and the OH term's use of them."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kdjax import losses, models
from kdjax.methods import Batch, BuildContext, Outputs, build_method
from kdjax.models.bn_before_relu import bn_before_relu, bn_before_relu_paths
from kdjax.models.import_torch import flax_module_path
from kdjax.train.state import init_train_state

GOLDEN = np.load(os.path.join(os.path.dirname(__file__), "golden", "oh_margins.npz"))
ARCHS = ("resnet8x4", "wrn_16_2", "vgg8", "MobileNetV2", "ResNet50")


def _params_from_torch(arch):
  """kdjax params of ``arch`` (zeros) with every BN's scale/bias set from the golden's torch
  state-dict entries (the importer's module-name mapping)."""
  m = models.get(arch, num_classes=100)
  shapes = jax.eval_shape(lambda: m.init(jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 3))))
  params = jax.tree_util.tree_map(lambda s: np.zeros(s.shape, s.dtype), shapes["params"])
  params = jax.tree_util.tree_map(lambda a: a, dict(params))
  prefix = f"{arch}/bn/"
  n = 0
  for key in GOLDEN.files:
    if not key.startswith(prefix) or not key.endswith(".weight"):
      continue
    tname = key[len(prefix) : -len(".weight")]
    node = params
    for part in flax_module_path(tname).split("/"):
      node = node[part]
    node["scale"] = GOLDEN[key]
    node["bias"] = GOLDEN[prefix + tname + ".bias"]
    n += 1
  assert n > 0
  return m, params


@pytest.mark.parametrize("arch", ARCHS)
def test_bn_choice_and_margins_match_the_reference(arch):
  m, params = _params_from_torch(arch)
  paths = bn_before_relu_paths(params)
  assert ["/".join(p) for p in paths] == [flax_module_path(n) for n in GOLDEN[f"{arch}/chosen"]]
  got = [losses.overhaul_margin(g, b) for g, b in bn_before_relu(params)]
  for i, g in enumerate(got):
    np.testing.assert_allclose(g, GOLDEN[f"{arch}/margin{i}"], rtol=1e-5, atol=1e-6)
  # one BN per pre-activation tap, same channel counts
  _, taps = jax.eval_shape(
    lambda: m.apply(
      {
        "params": params,
        "batch_stats": jax.tree_util.tree_map(
          jnp.zeros_like, m.init(jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 3)))["batch_stats"]
        ),
      },
      jnp.zeros((1, 32, 32, 3)),
      train=False,
    )
  )
  pre = sorted(k for k in taps if k.startswith("preact_stage"))
  assert [taps[k].shape[-1] for k in pre] == [int(g.shape[0]) for g in got]


def test_models_without_a_mapping_raise_and_name_the_fix():
  for arch in ("ShuffleV1", "ShuffleV2"):
    m = models.get(arch, num_classes=10)
    p = jax.eval_shape(lambda: m.init(jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 3))))["params"]
    with pytest.raises(ValueError, match="margins='batch'"):
      bn_before_relu_paths(p)


def _shapes(m, v):
  return {k: a.shape for k, a in m.apply(v, jnp.zeros((1, 32, 32, 3)), train=False)[1].items()}


def test_oh_term_state_holds_the_teacher_bn_margins():
  t_mod, params = _params_from_torch("resnet8x4")
  tv = dict(t_mod.init(jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 3))))
  tv["params"] = params
  s_mod = models.get("resnet8x4", num_classes=100)
  sv = s_mod.init(jax.random.PRNGKey(1), jnp.zeros((1, 32, 32, 3)))
  method = build_method(dict(terms={"oh": dict(loss="oh", weight=1.0)}))
  built = init_train_state(
    s_mod,
    (t_mod, tv),
    method,
    jnp.zeros((1, 32, 32, 3)),
    jax.random.PRNGKey(0),
    student_variables=sv,
  )
  states, method = built.method_state, built.method
  assert int(states["oh"]["is_set"]) == 1
  for i, mg in enumerate(states["oh"]["margins"]):
    np.testing.assert_allclose(mg, GOLDEN[f"resnet8x4/margin{i}"], rtol=1e-5, atol=1e-6)
  # the loss uses them (not a first-batch estimate): compare with losses.oh by hand
  rs = np.random.RandomState(0)
  keys = ("preact_stage1", "preact_stage2", "preact_stage3")
  sh = _shapes(t_mod, tv)
  t_taps = {k: jnp.asarray(rs.randn(2, *sh[k][1:]), jnp.float32) for k in keys}
  s_taps = {k: jnp.asarray(rs.randn(2, *sh[k][1:]), jnp.float32) for k in keys}
  mod = built.connectors["oh"]
  cv = {
    "params": built.params["connectors"]["oh"],
    "batch_stats": built.batch_stats["connectors"]["oh"],
  }

  def conn(*a, **kw):
    out, _ = mod.apply(cv, *a, mutable=["batch_stats"], **kw)
    return out

  logits = jnp.zeros((2, 100))
  total, metrics = method.loss(
    Outputs(logits, s_taps),
    Outputs(logits, t_taps),
    Batch(jnp.zeros((2,), jnp.int32), jnp.arange(2)),
    connectors={"oh": conn},
    states=states,
  )
  want = losses.oh(
    list(conn(tuple(s_taps[k] for k in keys), tuple(t_taps[k] for k in keys), train=True)),
    [t_taps[k] for k in keys],
    list(states["oh"]["margins"]),
    scale=1e-3,
  )
  np.testing.assert_allclose(metrics["oh"], want.mean(), rtol=1e-5)


def test_oh_bn_margins_clear_errors():
  s_mod = models.get("resnet8", num_classes=10)
  sv = s_mod.init(jax.random.PRNGKey(1), jnp.zeros((1, 32, 32, 3)))
  sh = _shapes(s_mod, sv)
  bn = build_method(dict(terms={"oh": dict(loss="oh", weight=1.0)})).bind(sh, sh)
  batch = build_method(dict(terms={"oh": dict(loss="oh", weight=1.0, margins="batch")})).bind(
    sh, sh
  )
  with pytest.raises(ValueError, match="needs the teacher's variables"):
    bn.init_states(BuildContext(10, None, sh, sh), jax.random.PRNGKey(0))
  with pytest.raises(ValueError, match="ONE teacher"):
    bn.init_states(BuildContext(10, [sv, sv], sh, sh), jax.random.PRNGKey(0))
  with pytest.raises(ValueError, match="margins must be"):
    build_method(dict(terms={"oh": dict(loss="oh", weight=1.0, margins="stats")})).bind(
      sh, sh
    ).init_states(BuildContext(10, [sv], sh, sh), jax.random.PRNGKey(0))
  assert (
    int(batch.init_states(BuildContext(10, None, sh, sh), jax.random.PRNGKey(0))["oh"]["is_set"])
    == 0
  )
  # a teacher family without a mapping: the term's error names the fix
  t_mod = models.get("ShuffleV1", num_classes=10)
  tv = t_mod.init(jax.random.PRNGKey(2), jnp.zeros((1, 32, 32, 3)))
  tsh = _shapes(t_mod, tv)
  with pytest.raises(ValueError, match="term oh: .*margins='batch'"):
    bn.bind(tsh, tsh).init_states(BuildContext(10, [tv], tsh, tsh), jax.random.PRNGKey(0))
  st = batch.bind(tsh, tsh).init_states(BuildContext(10, [tv], tsh, tsh), jax.random.PRNGKey(0))
  assert int(st["oh"]["is_set"]) == 0
