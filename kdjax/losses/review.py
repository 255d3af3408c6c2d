r"""ReviewKD's hierarchical context loss (HCL), per example.

Chen, Liu, Zhao, Jia, "Distilling Knowledge via Knowledge Review", CVPR 2021 (code:
dvlab-research/ReviewKD ``CIFAR-100/model/reviewkd.py:hcl``; megvii-research/mdistiller
``mdistiller/distillers/ReviewKD.py:hcl_loss``). The student's stage features, fused top-down by
the attention-based fusion (ABF) connectors (:mod:`kdjax.methods.reviewkd`), are compared with
the teacher's at every stage and at a pyramid of pooled resolutions:

  ``HCL = Σ_i  [ MSE(F_s^i, F_t^i) + Σ_{l ∈ (4, 2, 1), l < H_i} 2^{-j(l)} · MSE(P_l F_s^i, P_l F_t^i) ]
  / (1 + Σ_{l < H_i} 2^{-j(l)})``

where ``P_l`` is ``adaptive_avg_pool2d`` to ``l × l``, ``j(l)`` counts the levels used so far
(1 for the first kept level, 2 for the next, ...), and ``MSE`` is the mean over all elements.
Levels with ``l >= H_i`` are skipped (the 1×1 pooled-feature stage keeps only its plain MSE).

Per-example form: every ``MSE`` is the mean over ``(H, W, C)`` of one example, so the batch mean
of the returned ``(B,)`` array equals the reference's ``F.mse_loss(reduction='mean')`` sums
exactly (all examples have the same size). Feature maps are NHWC.
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp

from kdjax.losses.features import adaptive_avg_pool

__all__ = ["hcl", "HCL_LEVELS"]

HCL_LEVELS = (4, 2, 1)


def _mse(a: jax.Array, b: jax.Array) -> jax.Array:
  d = a - b
  return jnp.mean(d * d, axis=tuple(range(1, d.ndim)))


def hcl(
  student_feats: Sequence[jax.Array],
  teacher_feats: Sequence[jax.Array],
  *,
  levels: Sequence[int] = HCL_LEVELS,
) -> jax.Array:
  """Hierarchical context loss summed over stages, per example.

  Args:
    student_feats: the ABF outputs, one ``(B, H_i, W_i, C_i)`` map per stage.
    teacher_feats: the teacher's maps, same shapes (mdistiller: ``preact_feats[1:]`` and the
      pooled feature as a 1×1 map).
    levels: pooled resolutions, in the reference's order ``(4, 2, 1)``; weights halve per
      level kept.

  Returns:
    ``(B,)`` per-example losses.
  """
  student_feats, teacher_feats = list(student_feats), list(teacher_feats)
  if not student_feats or len(student_feats) != len(teacher_feats):
    raise ValueError(
      f"hcl: need one teacher map per student map, got {len(student_feats)} "
      f"student and {len(teacher_feats)} teacher maps."
    )
  total = 0.0
  for i, (fs, ft) in enumerate(zip(student_feats, teacher_feats)):
    if fs.ndim != 4 or fs.shape != ft.shape:
      raise ValueError(
        f"hcl: stage {i}: expected two NHWC maps of one shape, got {fs.shape} and {ft.shape}."
      )
    h = fs.shape[1]
    loss = _mse(fs, ft)
    cnt, tot = 1.0, 1.0
    for l in levels:
      if l >= h:
        continue
      cnt /= 2.0
      size = (l, l)
      loss = loss + _mse(adaptive_avg_pool(fs, size), adaptive_avg_pool(ft, size)) * cnt
      tot += cnt
    total = total + loss / tot
  return total
