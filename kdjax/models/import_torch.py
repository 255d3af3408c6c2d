"""PyTorch checkpoints -> kdjax model variables (RepDistiller, mdistiller, torchvision).

  sd = load_torch_state_dict("ckpt_epoch_240.pth")          # or a .npz of name -> array
  variables, report = convert("resnet32x4", sd)              # num_classes read from the fc
  kdjax.teachers.import_torch.save_teacher(variables, "resnet32x4", report["num_classes"],
                                           "cifar100", "runs/t_r32x4")   # a teacher run

or from the shell: ``python -m launch.import_teacher --arch resnet32x4 --pth FILE --workdir DIR``.

Mapping. Torch module paths become kdjax module paths by joining Sequential/ModuleList indices to
the name before them (``layer1.0.conv1`` -> ``layer1_0/conv1``, ``blocks.2.1.conv.3`` ->
``blocks_2_1/conv_3``), plus the renames the families document: ``downsample.0/1`` ->
``downsample_conv/_bn``, ``shortcut.0/1`` -> ``shortcut_conv/_bn`` (ResNet50), ``blockN.layer.i``
-> ``blockN_i`` (WRN), ``blockN.(3j)/(3j+1)`` -> ``blockN/conv{j}/bn{j}`` (VGG),
``conv1.0/1``, ``conv2.0/1`` -> ``conv1_conv/_bn``, ``conv2_conv/_bn`` and ``classifier.0`` ->
``classifier`` (MobileNetV2), ``model.0.0/1`` -> ``model_0/conv/bn`` and ``model.i.0/1/3/4`` ->
``model_i/conv_dw/bn_dw/conv_pw/bn_pw`` (MobileNetV1). Leaves: conv ``weight`` OIHW -> ``kernel``
HWIO (grouped and depthwise convs too: Flax's grouped kernel is (kh, kw, in/groups, out)),
``Linear.weight`` -> transposed ``kernel``, BN ``weight``/``bias`` -> ``scale``/``bias`` in
``params``, ``running_mean``/``running_var`` -> ``mean``/``var`` in ``batch_stats``;
``num_batches_tracked`` is dropped. Conversion is all-or-nothing: any unmatched checkpoint key,
missing model variable or shape mismatch raises one ``ValueError`` listing all of them.
"""

from __future__ import annotations

import functools
import os
import re
import warnings
from typing import Any, Dict, Optional, Tuple

import numpy as np

from kdjax import models
from kdjax.errors import UserError
from kdjax.models import registry

_PREFIXES = ("module.student.", "module.", "student.")
_IGNORED_LEAVES = ("num_batches_tracked",)


# ------------------------------------------------------------------------------------- loading
class TorchMissingError(ImportError, UserError):
  """torch is not installed (a ``ValueError`` too, so the launch scripts print one line)."""


def _import_torch():
  try:
    import torch  # noqa: PLC0415
  except ImportError:
    raise TorchMissingError(
      "Reading PyTorch .pth checkpoints needs torch: pip install "
      "kdjax[torch] (or convert the checkpoint to a .npz of name -> "
      "array)."
    ) from None
  return torch


def _is_tensor_dict(d) -> bool:
  return (
    isinstance(d, dict)
    and bool(d)
    and all(hasattr(v, "shape") for k, v in d.items() if not str(k).endswith(_IGNORED_LEAVES))
  )


def _unwrap(obj, path: str) -> Dict[str, Any]:
  """Finds the state dict in a training checkpoint ({'model': sd}, {'state_dict': sd}, ...)."""
  if isinstance(obj, dict):
    # RepDistiller/mdistiller: {'epoch', 'model', 'optimizer', ...}; others use 'state_dict'.
    for key in ("model", "state_dict", "model_state_dict", "net", "student"):
      if key in obj and isinstance(obj[key], dict) and not _is_tensor_dict(obj):
        return _unwrap(obj[key], path)
    if _is_tensor_dict(obj):
      return obj
  if hasattr(obj, "state_dict") and callable(obj.state_dict):  # a pickled nn.Module
    return obj.state_dict()
  keys = sorted(map(str, obj))[:10] if isinstance(obj, dict) else type(obj).__name__
  raise UserError(
    f"{path!r} does not hold a state dict: found {keys}. Expected a PyTorch "
    "state dict, or a checkpoint with it under 'model' or 'state_dict'."
  )


def _strip_prefixes(sd: Dict[str, Any]) -> Dict[str, Any]:
  """Drops DataParallel/distiller prefixes (``module.``, ``student.``, ``module.student.``).

  When a distiller checkpoint holds both student and teacher weights, only the student's are kept.
  """
  keys = list(sd)
  for p in _PREFIXES:
    hits = [k for k in keys if k.startswith(p)]
    if hits and (len(hits) == len(keys) or p.endswith("student.")):
      return {k[len(p) :]: sd[k] for k in hits}
  return sd


def load_torch_state_dict(path: str) -> Dict[str, np.ndarray]:
  """Reads a PyTorch checkpoint (``.pth``/``.pt``/``.tar``) or a ``.npz`` of name -> array.

  Unwraps RepDistiller (``{'model': sd, 'epoch': ...}``), mdistiller (``{'model': sd}`` /
  ``'state_dict'``, keys prefixed ``module.``, ``student.`` or ``module.student.``) and plain
  torchvision state dicts. Returns float32/int numpy arrays keyed by the torch parameter names.
  torch is imported only for non-npz files.
  """
  if not os.path.isfile(path):
    raise FileNotFoundError(f"Checkpoint {path!r} does not exist.")
  if path.endswith(".npz"):
    with np.load(path, allow_pickle=False) as f:
      sd = {k: np.asarray(f[k]) for k in f.files}
    sd = _strip_prefixes(_unwrap(sd, path))
  else:
    torch = _import_torch()
    try:
      obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 - older checkpoints pickle argparse options etc.
      warnings.warn(
        f"{path}: not loadable with torch.load(weights_only=True); unpickling it "
        "fully. Only import checkpoints you trust.",
        stacklevel=2,
      )
      obj = torch.load(path, map_location="cpu", weights_only=False)
    sd = _strip_prefixes(_unwrap(obj, path))
    sd = {
      k: (v.detach().cpu().float().numpy() if v.is_floating_point() else v.cpu().numpy())
      for k, v in sd.items()
      if hasattr(v, "detach")
    }
  return {k: (v.astype(np.float32) if v.dtype.kind == "f" else v) for k, v in sd.items()}


# ------------------------------------------------------------------------------------- mapping
def _vgg(m):
  j = int(m.group(2))
  if j % 3 == 2:
    return m.group(0)  # a ReLU has no parameters: leave unmatched
  return f"{m.group(1)}/{'conv' if j % 3 == 0 else 'bn'}{j // 3}"


_MNV1_BLOCK = {"0": "conv_dw", "1": "bn_dw", "3": "conv_pw", "4": "bn_pw"}
# (pattern on the dotted torch module path, replacement); applied in order, first match wins.
_RULES = [
  (re.compile(r"^(.*)\.downsample\.0$"), r"\1.downsample_conv"),
  (re.compile(r"^(.*)\.downsample\.1$"), r"\1.downsample_bn"),
  (re.compile(r"^(.*)\.shortcut\.0$"), r"\1.shortcut_conv"),
  (re.compile(r"^(.*)\.shortcut\.1$"), r"\1.shortcut_bn"),
  (re.compile(r"^(block\d+)\.layer\.(\d+)\.(.*)$"), r"\1.\2.\3"),
  (re.compile(r"^(block\d+)\.(\d+)$"), _vgg),
  (re.compile(r"^(conv[12])\.0$"), r"\1_conv"),
  (re.compile(r"^(conv[12])\.1$"), r"\1_bn"),
  (re.compile(r"^classifier\.0$"), "classifier"),
  (re.compile(r"^model\.0\.0$"), "model_0/conv"),
  (re.compile(r"^model\.0\.1$"), "model_0/bn"),
  (
    re.compile(r"^model\.(\d+)\.([0134])$"),
    lambda m: f"model_{m.group(1)}/{_MNV1_BLOCK[m.group(2)]}",
  ),
]


def flax_module_path(torch_module: str) -> str:
  """``layer1.0.downsample.0`` -> ``layer1_0/downsample_conv`` (see the module docstring)."""
  for pat, rep in _RULES:
    new = pat.sub(rep, torch_module)
    if new != torch_module:
      torch_module = new
      break
  out = []
  for part in torch_module.replace("/", ".").split("."):
    if part.isdigit() and out:
      out[-1] += "_" + part
    else:
      out.append(part)
  return "/".join(out)


def _flat(tree, prefix=()):
  out = {}
  for k, v in tree.items():
    if isinstance(v, dict) or hasattr(v, "items"):
      out.update(_flat(v, prefix + (k,)))
    else:
      out[prefix + (k,)] = v
  return out


def _unflat(flat):
  tree = {}
  for path, v in flat.items():
    node = tree
    for k in path[:-1]:
      node = node.setdefault(k, {})
    node[path[-1]] = v
  return tree


@functools.lru_cache(maxsize=64)
def model_variable_shapes(arch: str, num_classes: int, input_shape=(1, 32, 32, 3)):
  """``{('params'|'batch_stats', *module path, leaf): shape}`` of ``kdjax.models.get(arch)``."""
  import jax  # noqa: PLC0415
  import jax.numpy as jnp  # noqa: PLC0415

  module = models.get(arch, num_classes=num_classes)
  abstract = jax.eval_shape(module.init, jax.random.key(0), jnp.zeros(input_shape, jnp.float32))
  return {k: tuple(v.shape) for k, v in _flat(dict(abstract)).items()}


def _plan(sd: Dict[str, np.ndarray], shapes):
  """Matches checkpoint keys to model variables. Returns (plan, unmatched, missing, mismatched)."""
  modules = {}
  for path in shapes:
    modules.setdefault("/".join(path[1:-1]), set()).add(path[0] + ":" + path[-1])
  plan, unmatched, mismatched = {}, [], []
  for key, value in sd.items():
    mod, _, leaf = key.rpartition(".")
    if leaf in _IGNORED_LEAVES:
      continue
    fmod = flax_module_path(mod)
    have = modules.get(fmod, set())
    if leaf == "weight" and "params:kernel" in have:
      target, how = ("params", "kernel"), "conv" if np.ndim(value) == 4 else "linear"
    elif leaf == "weight" and "params:scale" in have:
      target, how = ("params", "scale"), "copy"
    elif leaf == "bias" and "params:bias" in have:
      target, how = ("params", "bias"), "copy"
    elif leaf == "running_mean" and "batch_stats:mean" in have:
      target, how = ("batch_stats", "mean"), "copy"
    elif leaf == "running_var" and "batch_stats:var" in have:
      target, how = ("batch_stats", "var"), "copy"
    else:
      unmatched.append(key)
      continue
    path = (target[0],) + tuple(fmod.split("/")) + (target[1],)
    want = shapes[path]
    if _flax_shape(how, np.shape(value)) != want:
      torch_want = _torch_shape(how, want)
      mismatched.append(
        f"{key}: checkpoint {tuple(np.shape(value))}, model expects "
        f"{torch_want} ({'/'.join(path)} {want})"
      )
      continue
    if path in plan:
      mismatched.append(f"{key} and {plan[path][0]} both map to {'/'.join(path)}")
      continue
    plan[path] = (key, how)
  missing = [
    "/".join(p)
    for p in sorted((p for p in shapes if p not in plan), key=lambda p: (p[0] != "params", p))
  ]
  return plan, unmatched, missing, mismatched


def _flax_shape(how: str, shape) -> tuple:
  shape = tuple(int(s) for s in shape)
  if how == "conv":
    o, i, h, w = shape
    return (h, w, i, o)
  if how == "linear" and len(shape) == 2:
    return shape[::-1]
  return shape


def _transform(how: str, value):
  if how == "conv":
    return np.transpose(value, (2, 3, 1, 0))  # OIHW -> HWIO
  if how == "linear":
    return np.transpose(value)  # (out, in) -> (in, out)
  return value


def _torch_shape(how, flax_shape):
  if how == "conv" and len(flax_shape) == 4:
    h, w, i, o = flax_shape
    return (o, i, h, w)
  if how == "linear" and len(flax_shape) == 2:
    return tuple(reversed(flax_shape))
  return tuple(flax_shape)


def infer_num_classes(sd: Dict[str, np.ndarray]) -> int:
  """The output size of the checkpoint's (single) Linear layer."""
  linear = [k for k, v in sd.items() if k.endswith(".weight") and np.ndim(v) == 2]
  if len(linear) != 1:
    raise UserError(
      f"Cannot infer num_classes: expected one Linear weight in the checkpoint, "
      f"found {linear or 'none'}. Pass num_classes explicitly."
    )
  return int(np.shape(sd[linear[0]])[0])


def _base(name: str) -> str:
  return re.sub(r"(_\d+)+$", "", name)


def _guess_arch(sd, arch: str, num_classes: int) -> Optional[str]:
  """Another registered model that the checkpoint fits exactly, if any.

  Only families (module classes) whose top-level module names are the checkpoint's are searched,
  ``arch``'s own first, members in registration order (shallow before deep); each candidate costs
  one traced init.
  """
  models.names()  # registers every family
  families = {}
  for name in registry._REGISTRY:  # noqa: SLF001 - registration order
    try:
      families.setdefault(type(models.get(name, num_classes=num_classes)), []).append(name)
    except Exception:  # noqa: BLE001 - a model that cannot be built with these args
      continue
  keys = [k for k in sd if not k.endswith(_IGNORED_LEAVES)]
  top = {_base(flax_module_path(k.rpartition(".")[0]).split("/")[0]) for k in keys}
  own = type(models.get(arch, num_classes=num_classes))
  for cls in [own] + [c for c in families if c is not own]:
    members = families.get(cls, [])
    rep = arch if cls is own else (members[0] if members else None)
    if (
      rep is None
      or {_base(p[1]) for p in model_variable_shapes(rep, num_classes) if len(p) > 2} != top
    ):
      continue
    for name in members:
      if name == arch:
        continue
      shapes = model_variable_shapes(name, num_classes)
      if len(shapes) != len(keys):
        continue
      _, unmatched, missing, mismatched = _plan(sd, shapes)
      if not (unmatched or missing or mismatched):
        return name
  return None


def convert(
  arch: str,
  state_dict: Dict[str, np.ndarray],
  num_classes: Optional[int] = None,
  *,
  guess: bool = True,
) -> Tuple[dict, dict]:
  """Maps a PyTorch state dict onto the variables of ``kdjax.models.get(arch, num_classes=...)``.

  Args:
    arch: a registered kdjax model name (``resnet32x4``, ``wrn_40_2``, ``resnet50_imagenet``...).
    state_dict: torch parameter name -> array (from :func:`load_torch_state_dict`).
    num_classes: defaults to the output size of the checkpoint's Linear layer.
    guess: on failure, name another registered architecture the checkpoint fits exactly (costs a
      few traced model inits).

  Returns:
    ``(variables, report)``: ``{'params': ..., 'batch_stats': ...}`` of float32 numpy arrays, and
    a report with ``arch``, ``num_classes``, ``num_params``, ``num_tensors``, ``ignored`` keys.

  Raises:
    ValueError: one message listing unmatched checkpoint keys, missing model variables and shape
      mismatches.
  """
  sd = _strip_prefixes(dict(state_dict))
  if num_classes is None:
    num_classes = infer_num_classes(sd)
  models.get(arch, num_classes=num_classes)  # validates the name early, with suggestions
  shapes = model_variable_shapes(arch, num_classes)
  plan, unmatched, missing, mismatched = _plan(sd, shapes)
  if unmatched or missing or mismatched:
    guessed = _guess_arch(sd, arch, num_classes) if guess else None
    hint = (
      f"The checkpoint matches {guessed!r} exactly: pass --arch {guessed}."
      if guessed
      else "The checkpoint looks like another architecture (or another num_classes)."
    )

    def lst(title, items):
      if not items:
        return ""
      more = f"\n    ... and {len(items) - 15} more" if len(items) > 15 else ""
      return f"\n  {title} ({len(items)}):\n    " + "\n    ".join(items[:15]) + more

    raise UserError(
      f"Cannot load this checkpoint into {arch!r} (num_classes={num_classes}). {hint}"
      + lst("checkpoint keys with no model variable", unmatched)
      + lst("model variables missing from the checkpoint", missing)
      + lst("shape mismatches", mismatched)
    )
  flat = {
    path: np.ascontiguousarray(_transform(how, np.asarray(sd[key], np.float32)))
    for path, (key, how) in plan.items()
  }
  variables = _unflat(flat)
  report = {
    "arch": arch,
    "num_classes": num_classes,
    "num_params": int(sum(v.size for p, v in flat.items() if p[0] == "params")),
    "num_tensors": len(flat),
    "ignored": sorted(k for k in sd if k.endswith(_IGNORED_LEAVES)),
  }
  return variables, report
