"""Folding a frozen network's inference-mode BatchNorm into the convolution that feeds it.

A distillation teacher runs in inference mode, where ``BN(z) = (z - mu) * gamma / sqrt(var + eps)
+ beta`` is affine per channel; when ``z = conv(x; W, b)`` feeds nothing but that BN,

    BN(conv(x; W, b)) = conv(x; W * s, (b - mu) * s + beta),   s = gamma / sqrt(var + eps)

with ``s`` scaling the kernel's output-channel (last, HWIO) axis. This is exact arithmetic; in
float32 the folded kernel is rounded once more (folding is done in float64 and cast back), so
outputs agree to a few float32 ulps of their scale (``tests/test_fold_bn.py`` states the bound).

``fold_bn(module, variables, example_x)`` returns ``(FoldedModel, folded_variables)``. The folded
model duck-types the linen module for inference: ``apply(variables, x, train=False,
method=...)`` returns what the original returns (logits and every tap, also through
``method='apply_stage'`` etc.); each folded BN call becomes ``x + bias`` (``x`` when the
convolution has a bias of its own, which then carries the folded one). Which (conv, BN) pairs fold
is found from the model itself, nothing is per-architecture:

1. one traced forward pass records each Conv's output and each BN's input (Flax method
   interception): a BN is a candidate when its input *is* a Conv's output;
2. a candidate folds only if that Conv output has no other consumer (a residual shortcut, a tap
   such as WRN's raw ``stem``): checked on the traced program (jaxpr), where the Conv output
   must have exactly one use, the BN (no compilation: folding a ResNet takes well under a
   second).

Modules called more than once per forward pass (shared weights) are never folded. Training-mode
calls raise: a folded model has no batch statistics to update.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Dict, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from kdjax.errors import UserError

Path = Tuple[str, ...]


def _is_literal(v) -> bool:
  return type(v).__name__ == "Literal"


def _is_call(context, cls) -> bool:
  return isinstance(context.module, cls) and context.method_name == "__call__"


def _get(tree, path):
  for k in path:
    tree = tree[k]
  return tree


def _set(tree, path, value):
  """Functional nested-dict update (dicts are copied along ``path``)."""
  tree = dict(tree)
  if len(path) == 1:
    tree[path[0]] = value
  else:
    tree[path[0]] = _set(tree.get(path[0], {}), path[1:], value)
  return tree


def _delete(tree, path):
  tree = dict(tree)
  if len(path) == 1:
    tree.pop(path[0], None)
  elif path[0] in tree:
    sub = _delete(tree[path[0]], path[1:])
    if sub:
      tree[path[0]] = sub
    else:
      tree.pop(path[0])
  return tree


def _unfreeze(tree):
  if isinstance(tree, dict) or hasattr(tree, "items"):
    return {k: _unfreeze(v) for k, v in tree.items()}
  return tree


def find_foldable(module, variables, example_x, **apply_kw) -> Dict[Path, dict]:
  """``{bn_path: {"conv": conv_path, "epsilon", "use_scale", "use_bias", "conv_bias"}}`` for every
  inference-mode BatchNorm that can be folded into the convolution feeding it (see the module
  docstring for the rule)."""
  x = jax.ShapeDtypeStruct(np.shape(example_x), getattr(example_x, "dtype", jnp.float32))
  calls: Dict[Path, int] = {}
  conv_out: Dict[int, Path] = {}
  conv_info: Dict[Path, dict] = {}
  candidates: Dict[Path, dict] = {}

  def record(next_fun, args, kwargs, context):
    if _is_call(context, nn.Conv):
      p = tuple(context.module.path)
      calls[p] = calls.get(p, 0) + 1
      out = next_fun(*args, **kwargs)
      conv_out[id(out)] = p
      conv_info[p] = {"use_bias": bool(context.module.use_bias), "out": out}
      return out
    if _is_call(context, nn.BatchNorm):
      p = tuple(context.module.path)
      calls[p] = calls.get(p, 0) + 1
      src = conv_out.get(id(args[0])) if args else None
      if src is not None and conv_info[src]["out"] is args[0]:
        m = context.module
        candidates[p] = {
          "conv": src,
          "epsilon": float(m.epsilon),
          "use_scale": bool(m.use_scale),
          "use_bias": bool(m.use_bias),
          "conv_bias": conv_info[src]["use_bias"],
          "shape": args[0].shape,
          "dtype": args[0].dtype,
        }
    return next_fun(*args, **kwargs)

  def fwd(v, x):
    with nn.intercept_methods(record):
      return module.apply(v, x, train=False, **apply_kw)

  jax.eval_shape(fwd, variables, x)
  candidates = {
    b: c for b, c in candidates.items() if calls.get(b) == 1 and calls.get(c["conv"]) == 1
  }
  if not candidates:
    return {}
  # Sole-consumer check on the jaxpr (tracing only, no compilation): every Conv output and every
  # BN input passes through an optimization_barrier marker, recorded in call order; a candidate's
  # conv marker must have exactly one use, the marker of its BN's input.
  marks = []

  def mark(next_fun, args, kwargs, context):
    if _is_call(context, nn.Conv):
      out = jax.lax.optimization_barrier(next_fun(*args, **kwargs))
      marks.append(("conv", tuple(context.module.path)))
      return out
    if _is_call(context, nn.BatchNorm):
      args = (jax.lax.optimization_barrier(args[0]),) + tuple(args[1:])
      marks.append(("bn", tuple(context.module.path)))
    return next_fun(*args, **kwargs)

  def marked(v, x):
    with nn.intercept_methods(mark):
      return module.apply(v, x, train=False, **apply_kw)

  jaxpr = jax.make_jaxpr(marked)(variables, x).jaxpr
  barriers = [e for e in jaxpr.eqns if e.primitive.name == "optimization_barrier"]
  if len(barriers) != len(marks):  # markers nested in sub-jaxprs: fold nothing (safe)
    return {}
  uses: Dict[Any, list] = {}
  for i, e in enumerate(jaxpr.eqns):
    for v in e.invars:
      if not _is_literal(v):
        uses.setdefault(v, []).append(e)
  for v in jaxpr.outvars:
    if not _is_literal(v):
      uses.setdefault(v, []).append(None)
  conv_var = {p: e.outvars[0] for (kind, p), e in zip(marks, barriers) if kind == "conv"}
  bn_eqn = {p: e for (kind, p), e in zip(marks, barriers) if kind == "bn"}
  keep = {}
  for b, c in candidates.items():
    users = uses.get(conv_var.get(c["conv"]), [])
    if len(users) == 1 and users[0] is bn_eqn.get(b):
      keep[b] = {k: v for k, v in c.items() if k not in ("shape", "dtype")}
  return keep


_TRAIN_MSG = (
  "A BatchNorm-folded model (kdjax.models.fold_bn) is inference-only: call it with "
  "train=False, or use the unfolded module to train it."
)


@dataclasses.dataclass
class FoldedModel:
  """Inference-only stand-in for a linen module whose BatchNorms were folded (``fold_bn``).

  ``apply(folded_variables, x, train=False, method=None, **kw)`` -> the original's outputs (a
  training-mode call raises ``UserError``)."""

  module: Any
  folded: Dict[Path, dict]

  def __getattr__(self, name):  # num_stages, dtype, ... of the wrapped module
    if name in ("module", "folded"):
      raise AttributeError(name)
    return getattr(self.module, name)

  def apply(self, variables, *args, method=None, **kw):
    if kw.get("train"):
      raise UserError(_TRAIN_MSG)
    if kw.get("mutable"):
      raise UserError("A BatchNorm-folded model has no batch statistics: drop mutable=.")
    biases = variables.get("folded_bn", {})
    folded = self.folded

    def replace(next_fun, a, k, context):
      if _is_call(context, nn.BatchNorm):
        p = tuple(context.module.path)
        if p in folded:
          ura = k.get("use_running_average", context.module.use_running_average)
          if not ura:  # a training-mode call (train passed positionally)
            raise UserError(_TRAIN_MSG)
          x = a[0]
          key = "/".join(p)
          return x + biases[key].astype(x.dtype) if key in biases else x
      return next_fun(*a, **k)

    inner = {c: v for c, v in variables.items() if c != "folded_bn"}
    with nn.intercept_methods(replace):
      return self.module.apply(inner, *args, method=method, **kw)


def fold_bn(module, variables, example_x, **apply_kw) -> Tuple[FoldedModel, dict]:
  """Folds every foldable inference-mode BatchNorm of ``module`` into its convolution.

  Args:
    module: a linen module with ``apply(variables, x, train=False)`` (the kdjax protocol).
    variables: its ``{'params', 'batch_stats'}``.
    example_x: an input of the right shape (only its shape and dtype are used; batch >= 1).

  Returns:
    ``(FoldedModel, folded_variables)``: the folded kernels/biases in ``params``, the biases of
    folded bias-less convolutions in a ``folded_bn`` collection, the folded BNs' parameters and
    statistics removed. Folding is computed in float64 and cast to each parameter's dtype.
  """
  folded = find_foldable(module, variables, example_x, **apply_kw)
  params = _unfreeze(variables["params"])
  stats = _unfreeze(variables.get("batch_stats", {}))
  extra = {}
  for bn, c in folded.items():
    bp = _get(params, bn)
    st = _get(stats, bn)
    kernel_path = c["conv"] + ("kernel",)
    w = np.asarray(_get(params, kernel_path), np.float64)
    mean = np.asarray(st["mean"], np.float64)
    var = np.asarray(st["var"], np.float64)
    gamma = np.asarray(bp["scale"], np.float64) if c["use_scale"] else 1.0
    beta = np.asarray(bp["bias"], np.float64) if c["use_bias"] else 0.0
    s = gamma / np.sqrt(var + c["epsilon"])
    b_conv = np.asarray(_get(params, c["conv"] + ("bias",)), np.float64) if c["conv_bias"] else 0.0
    new_b = (b_conv - mean) * s + beta
    kdtype = _get(params, kernel_path).dtype
    params = _set(params, kernel_path, jnp.asarray(w * s, kdtype))
    if c["conv_bias"]:
      params = _set(params, c["conv"] + ("bias",), jnp.asarray(new_b, kdtype))
    else:
      extra["/".join(bn)] = jnp.asarray(new_b, kdtype)
    params = _delete(params, bn)
    stats = _delete(stats, bn)
  out = {k: v for k, v in variables.items() if k not in ("params", "batch_stats")}
  out["params"] = params
  if stats:
    out["batch_stats"] = stats
  if extra:
    out["folded_bn"] = extra
  return FoldedModel(module, folded), out


def fold_teacher_bn(module, variables, input_shape, dtype=jnp.float32):
  """``fold_bn`` from an input shape ``(H, W, C)``: the one-line hook for teacher loading."""
  return fold_bn(module, variables, jnp.zeros((1,) + tuple(input_shape), dtype))
