"""ImageNet SFTN (configs/imagenet/sftn.py): the ResNet-34 teacher with ResNet-18 branches.

* Structure at 224x224 (traced with ``jax.eval_shape``, nothing computed): ResNet-34 and
  ResNet-18 are both BasicBlock ResNets with stage maps 56x56x64 / 28x28x128 / 14x14x256 /
  7x7x512, so each of the three branch points (after stages 1..3) gets the equal-shape bridge
  (1x1 conv + BN + ReLU) and branch ``i`` holds ResNet-18's stages ``i+1..4`` and ``fc``. The
  parameter count is checked against one assembled from the standalone models' own trees.
* One stage-1 training step of the ``teacher:resnet34-resnet18`` cell on
  ``tfds.testing.mock_data`` through ``train_and_evaluate`` (32x32 crops, batch 2).
"""

import importlib.util
import os

import jax
import jax.numpy as jnp
import numpy as np

from kdjax import models
from kdjax.config import validate
from kdjax.models import sftn

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CELL = "teacher:resnet34-resnet18"


def _config(cell=CELL):
  spec = importlib.util.spec_from_file_location(
    "cfg_imagenet_sftn", os.path.join(ROOT, "configs", "imagenet", "sftn.py")
  )
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  return mod.get_config(cell)


def _abstract(model, hw=224, k=1000):
  x = jax.ShapeDtypeStruct((1, hw, hw, 3), jnp.float32)
  (logits, taps), v = jax.eval_shape(lambda x: model.init_with_output(jax.random.key(0), x), x)
  return logits, taps, v


def _count(tree):
  return sum(int(np.prod(a.shape)) for a in jax.tree_util.tree_leaves(tree))


def _shapes(tree):
  return jax.tree_util.tree_map(lambda a: a.shape, tree)


def test_resnet34_resnet18_sftn_structure():
  c = _config()
  validate(c)
  assert c.model == "sftn" and c.method.name == "sftn"
  assert (c.optim.lr, c.optim.weight_decay) == (0.1, 1e-4)
  assert dict(c.method.terms.sftn)["kl_weight"] == 1.0  # λ_R^KL = 1 on ImageNet
  mk = dict(c.model_kwargs)
  assert (mk["teacher"], mk["student"]) == ("resnet34_imagenet", "resnet18_imagenet")
  model = models.get("sftn", num_classes=1000, **mk)
  assert type(model).num_stages == 4 and model.branch_points == (1, 2, 3)

  plan = sftn.bridge_plan(model, (224, 224, 3))
  widths = {1: (56, 64), 2: (28, 128), 3: (14, 256)}
  for i, (s, ch) in widths.items():
    assert plan[i] == {"mode": "same", "teacher": (s, s, ch), "student": (s, s, ch)}

  logits, taps, v = _abstract(model)
  assert logits.shape == (1, 1000) and taps["branch_logits"].shape == (3, 1, 1000)
  params = v["params"]
  assert sorted(params) == [
    "branch_1",
    "branch_2",
    "branch_3",
    "bridge_1",
    "bridge_2",
    "bridge_3",
    "teacher",
  ]
  _, _, t_alone = _abstract(models.get("resnet34_imagenet", num_classes=1000))
  _, _, s_alone = _abstract(models.get("resnet18_imagenet", num_classes=1000))
  assert _shapes(params["teacher"]) == _shapes(t_alone["params"])
  assert _shapes(v["batch_stats"]["teacher"]) == _shapes(t_alone["batch_stats"])
  expected = _count(t_alone["params"])
  for i, (_, ch) in widths.items():
    tail = {
      k: s
      for k, s in s_alone["params"].items()
      if k == "fc" or (k.startswith("layer") and int(k[5]) > i)
    }
    assert _shapes(params[f"branch_{i}"]) == _shapes(tail), i
    b = params[f"bridge_{i}"]
    assert b["conv"]["kernel"].shape == (1, 1, ch, ch) and b["conv"]["bias"].shape == (ch,)
    expected += _count(tail) + (ch * ch + ch) + 2 * ch  # 1x1 conv with bias, BN scale/bias
  assert _count(params) == expected


def test_one_sftn_step_on_mock_imagenet(tmp_path):
  import tensorflow_datasets as tfds
  from kdjax.train.loop import train_and_evaluate

  c = _config()
  d = c.dataset
  d.image_size, d.train_limit, d.eval_limit, d.stream_threads = 32, 4, 2, 0
  c.batch_size = c.eval_batch_size = c.optim.reference_batch_size = 2
  c.max_steps = 1
  c.progress = c.tensorboard = c.async_checkpoint = False
  c.checkpoint_every_steps = c.keep_every_epochs = 0
  c.log_every_steps = 1
  with tfds.testing.mock_data(num_examples=8):
    s = train_and_evaluate(c, str(tmp_path / "run"))
  assert s["step"] == 1 and s["method"] == "sftn"
  state = s["state"]
  assert int(state.step) == 1
  params = state.params["student"]
  assert {"teacher", "bridge_1", "branch_3"} <= set(params)
  leaves = jax.tree_util.tree_leaves(params)
  assert all(bool(jnp.all(jnp.isfinite(x))) for x in leaves)
