"""SFTN stage 1: which parameters each loss term reaches (methods.md §4.2, issue 13 item 4).

The reference for the stop-gradients is kimyuji/SFTN_kd ``helper/loops.py:train_sftn`` (the
unofficial reimplementation; no official code was released): ``feat_t = [f.detach() ...]`` before
the transforms, the teacher logits *not* detached in ``DistillKL(logit_s, logit_t)``, so

* the teacher CE reaches the teacher only;
* the branch CE reaches bridges + branches only;
* the KL reaches bridges + branches and, through ``z_T``, the whole teacher (head and trunk).

kdjax's switches move exactly two edges: ``detach_branch_input=False`` adds branch -> teacher
trunk (up to the branch point, never the teacher head or the stages after the last branch
point), ``detach_teacher_logits_in_kl=True`` removes KL -> ``z_T``.
"""

import itertools

import jax
import jax.numpy as jnp
import pytest

from kdjax import losses, models
from kdjax.methods import Batch, Outputs
from kdjax.methods.sftn import sftn_term

# tiny_cnn: stem (conv0, bn0), stage 1 (convs_0, bns_0), stage 2 (convs_1, bns_1), head (fc).
TRUNK_TO_POINT_1 = {"conv0", "bn0", "convs_0", "bns_0"}
AFTER_POINT_1 = {"convs_1", "bns_1"}
HEAD = {"fc"}
BRANCH = {"bridge_1", "branch_1"}


def _reached(detach_input: bool, detach_logits: bool):
  model = models.get(
    "sftn",
    num_classes=5,
    teacher="tiny_cnn",
    student="tiny_cnn",
    student_kwargs={"width": 4},
    detach_branch_input=detach_input,
  )
  x = jax.random.normal(jax.random.PRNGKey(1), (6, 12, 12, 3))
  y = jnp.array([0, 1, 2, 3, 4, 0])
  v = model.init(jax.random.PRNGKey(0), x)
  batch = Batch(y, jnp.arange(6))

  def terms(params):
    (z, taps), _ = model.apply(
      {"params": params, "batch_stats": v["batch_stats"]}, x, train=True, mutable=["batch_stats"]
    )
    s = Outputs(z, taps)
    kw = dict(detach_teacher_logits_in_kl=detach_logits)
    return {
      "t_ce": losses.cross_entropy(z, y).mean(),
      "b_ce": sftn_term(s, None, batch, kl_weight=0.0, ce_weight=1.0, **kw).mean(),
      "kl": sftn_term(s, None, batch, kl_weight=3.0, ce_weight=0.0, **kw).mean(),
    }

  out = {}
  for name in ("t_ce", "b_ce", "kl"):
    g = jax.grad(lambda p, n=name: terms(p)[n])(v["params"])
    hit = set()
    for top, sub in g.items():
      # 1e-9: float32 gradients of a live path are O(1e-3..1); a cut path is exactly 0.
      if top == "teacher":
        hit |= {
          k
          for k, t in sub.items()
          if any(jnp.abs(a).max() > 1e-9 for a in jax.tree_util.tree_leaves(t))
        }
      elif any(jnp.abs(a).max() > 1e-9 for a in jax.tree_util.tree_leaves(sub)):
        hit.add(top)
    out[name] = hit
  return out


@pytest.mark.parametrize(
  "detach_input,detach_logits", list(itertools.product([True, False], repeat=2))
)
def test_each_term_reaches_exactly_the_documented_parameters(detach_input, detach_logits):
  got = _reached(detach_input, detach_logits)
  assert got["t_ce"] == TRUNK_TO_POINT_1 | AFTER_POINT_1 | HEAD
  into_trunk = set() if detach_input else TRUNK_TO_POINT_1
  assert got["b_ce"] == BRANCH | into_trunk
  via_logits = set() if detach_logits else TRUNK_TO_POINT_1 | AFTER_POINT_1 | HEAD
  assert got["kl"] == BRANCH | into_trunk | via_logits


def test_kimyuji_setting_matches_the_reference_stop_gradients():
  # feat_t detached, logit_t live in the KL: the branches touch the teacher only via z_T.
  got = _reached(True, False)
  assert got["b_ce"] == BRANCH
  assert HEAD <= got["kl"] and TRUNK_TO_POINT_1 <= got["kl"]
