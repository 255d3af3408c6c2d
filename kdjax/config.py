"""The config schema: every key a run understands, with its default.

Config files in ``configs/`` start from :func:`base_config` and override fields; :func:`validate`
rejects unknown keys (typos) with a suggestion *before* anything is built, so a misspelt
``--config.optim.lr_decay`` never silently does nothing.
"""

from __future__ import annotations

import difflib
import json

import ml_collections

from kdjax.errors import UserError

# Sub-trees whose keys are free-form (validated by their own builders).
_FREE_FORM = {"method.terms", "method.init.terms", "model_kwargs"}


def base_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.model = "resnet8"  # the network this run trains (student or teacher)
  c.model_kwargs = ml_collections.ConfigDict()

  c.dataset = d = ml_collections.ConfigDict()
  d.name = "cifar100"
  d.data_dir = ml_collections.FieldReference(None, field_type=str)  # TFDS data_dir
  d.idx_dir = ml_collections.FieldReference(None, field_type=str)  # (fashion-)MNIST IDX files
  d.train_split = ""  # "" = the dataset's default (kdjax.data.info(name))
  d.eval_split = ""
  d.train_limit = 0  # >0: use the first N training examples only
  d.eval_limit = 0
  # > 0: hold N examples of the (loaded) training split out as a validation split; the run
  # trains on the rest. Stratified, seeded by val_seed (not by seed): kdjax/data/holdout.py.
  # Post-hoc temperature scaling (kdjax.calibration.study) is fitted on it.
  d.val_examples = 0
  d.val_seed = 0
  d.crop_pad = 4  # RandomCrop(padding=crop_pad); 0 disables
  d.flip = True  # RandomHorizontalFlip
  d.mixup_alpha = 0.0  # > 0: mixup with Beta(alpha, alpha) (teacher variant)
  d.image_size = 0  # streamed datasets (ImageNet): crop size; 0 = dataset default
  d.stream_threads = 4  # host decoding threads for streamed datasets
  d.loader = "stream"  # streamed datasets: 'stream' (host threads) | 'grain' (workers)
  d.grain_workers = 8  # loader='grain': worker processes (kdjax.data.grain_feed)
  d.prefetch = 2  # loader='grain': batches kept on the devices ahead of the step
  # Train-time colour jitter (torchvision ColorJitter semantics; all 0 = off): Ojha et al.'s
  # jitter-invariant teacher (configs/ojha/jitter_teacher.py).
  d.color_jitter = ml_collections.ConfigDict(
    dict(brightness=0.0, contrast=0.0, saturation=0.0, hue=0.0)
  )

  # Distillation teacher (empty workdir = supervised training).
  c.teacher = t = ml_collections.ConfigDict()
  t.workdir = ""
  t.which = "final"  # 'final' | 'best' | 'selected' | 'step:<n>' | 'epoch:<n>'
  t.members = ()  # ensemble: ('WORKDIR@WHICH', ...); replaces workdir/which
  t.ensemble_mode = "logit_mean"  # logit_mean | prob_mean
  t.temperature = 1.0  # post-hoc calibration: teacher logits are divided by this
  t.fold_bn = False  # fold the frozen teacher's inference BN into its convs (exact;
  # kdjax.models.fold_bn); its BN variables stay available to OH
  # RCO (route-constrained optimisation, kdjax.train.rco): num_anchors > 0 distils each segment of
  # the student's epochs from another kept checkpoint of teacher.workdir (teacher.which ignored).
  t.rco = ml_collections.ConfigDict(dict(num_anchors=0, strategy="equal_epoch", anchor_epochs=()))

  c.method = m = ml_collections.ConfigDict()
  m.name = "supervised"
  m.ce_weight = 1.0
  m.label_smoothing = 0.0
  m.terms = ml_collections.ConfigDict()
  m.trainable = "student+connectors"  # main stage's trainable set (kdjax.methods.core)
  # Optional init stage before the main one (RepDistiller's AB/FT/FSP pre-training): its own
  # loss (ce_weight + terms), trainable set, epochs and constant lr (0 = optim.lr).
  m.init = mi = ml_collections.ConfigDict()
  mi.epochs = 0  # 0 = no init stage; > 0: runs before num_epochs main epochs
  mi.ce_weight = 0.0
  mi.terms = ml_collections.ConfigDict()
  mi.trainable = ""  # e.g. 'student_features+connectors' (required if epochs > 0)
  mi.lr = 0.0
  mi.milestones = ()  # init-stage epochs where its lr *= optim.decay; () = constant

  c.optim = o = ml_collections.ConfigDict()
  o.name = "sgd"  # 'sgd' | 'dot' (DOT: task/distill momenta momentum -/+ dot_delta)
  o.lr = 0.05
  o.momentum = 0.9
  o.nesterov = False
  o.dot_delta = 0.075  # optim.name='dot': Δ (mdistiller's SOLVER.DOT.DELTA default)
  o.weight_decay = 5e-4
  o.schedule = "multistep"  # multistep | step | cosine | constant
  o.milestones = (150, 180, 210)
  o.step_epochs = 60
  o.decay = 0.1
  o.warmup_epochs = 0
  o.epochs = 240  # cosine length
  o.reference_batch_size = 64  # lr is quoted for this batch; a warning is printed otherwise
  o.scale_lr_with_batch = False  # if True: lr *= batch_size / reference_batch_size

  # Mixed precision (kdjax.precision): compute dtype per model; master weights, BatchNorm
  # statistics and loss reductions stay float32.
  c.precision = ml_collections.ConfigDict(dict(student="float32", teacher="float32"))
  c.batch_size = 64
  c.eval_batch_size = 500
  c.drop_remainder = False  # RepDistiller keeps the last partial batch
  c.num_epochs = 240
  c.max_steps = 0  # >0: stop (and checkpoint) after this many steps in total
  c.eval_every_epochs = 1
  c.log_every_steps = 100
  c.checkpoint_every_steps = 0  # >0: also save the resume state every N steps (mid-epoch)
  c.keep_every_epochs = 0  # >0: keep a model checkpoint every N epochs (never rotated)
  c.keep_epochs = ()  # extra epochs to keep
  c.async_checkpoint = True
  c.progress = True  # tqdm progress bar
  c.tensorboard = True
  c.force_resume = False  # resume even if the config differs from the run's config.json

  # ---- online distillation (kdjax.train.online, launch/online.py; ignored by other runs) ----
  c.online = on = ml_collections.ConfigDict()
  on.mode = "dml"  # 'dml' (Zhang et al. 2018) | 'kdcl' (Guo et al. 2020)
  on.peers = ()  # K >= 2 model names, e.g. ('resnet32', 'resnet32')
  on.temperature = ml_collections.FieldReference(None, field_type=float)  # None: DML 1, KDCL 3
  on.weight = 1.0  # λ of the mimicry / ensemble-KD term
  on.ensemble = "minlogit"  # KDCL teacher: 'minlogit' | 'naive' | 'linear'
  return c


def _walk(cfg, prefix=""):
  for k, v in cfg.items():
    path = f"{prefix}{k}"
    yield path, v
    if isinstance(v, ml_collections.ConfigDict) and path not in _FREE_FORM:
      yield from _walk(v, path + ".")


def validate(config) -> None:
  """Raises UserError on any key not in :func:`base_config` (with the closest valid key)."""
  ref = dict(_walk(base_config()))
  for path, _ in _walk(config):
    if any(path.startswith(f + ".") for f in _FREE_FORM):
      continue
    if path not in ref:
      close = difflib.get_close_matches(path, list(ref), n=1)
      hint = f" Did you mean {close[0]!r}?" if close else ""
      raise UserError(f"Unknown config key {path!r}.{hint}")
  if config.batch_size < 1 or config.num_epochs < 1:
    raise UserError("config.batch_size and config.num_epochs must be >= 1.")


# Keys that may change when a run is resumed (relaunched on its workdir): its length, cadences
# and I/O. Anything else changes what the resumed steps compute, so a relaunch that differs from
# the run's config.json elsewhere is refused unless config.force_resume.
RESUMABLE_KEYS = (
  "num_epochs",
  "max_steps",
  "log_every_steps",
  "eval_every_epochs",
  "checkpoint_every_steps",
  "keep_every_epochs",
  "keep_epochs",
  "async_checkpoint",
  "progress",
  "tensorboard",
  "eval_batch_size",
  "force_resume",
  "dataset.data_dir",
  "dataset.idx_dir",
  "dataset.stream_threads",
  "dataset.loader",
  "dataset.grain_workers",
  "dataset.prefetch",
)


def _flatten(d, prefix=""):
  out = {}
  for k, v in d.items():
    if isinstance(v, dict) and v and f"{prefix}{k}" not in _FREE_FORM:
      out.update(_flatten(v, f"{prefix}{k}."))
    else:
      out[f"{prefix}{k}"] = v
  return out


def resume_config_diff(saved: dict, current: dict) -> list:
  """Dotted keys whose values differ between a run's saved ``config.json`` and the relaunch's
  config (both JSON-normalised), ignoring :data:`RESUMABLE_KEYS`. A key present on one side only
  (a config written by an older kdjax) differs only if the other side is not its default."""
  a, b = _flatten(saved), _flatten(current)
  ref = _flatten(json_normalise(base_config()))
  diff = []
  for k in sorted(set(a) | set(b)):
    if k in RESUMABLE_KEYS:
      continue
    va, vb = a.get(k, ref.get(k)), b.get(k, ref.get(k))
    if va != vb:
      diff.append(k)
  return diff


def json_normalise(config) -> dict:
  return json.loads(config.to_json_best_effort())


def parse_which(which):
  """'final' | 'best' | 'step:<n>' | 'epoch:<n>' | int -> checkpoint selector."""
  if isinstance(which, int):
    return which
  which = str(which)
  if which in ("final", "best", "selected"):
    return which
  for key in ("step", "epoch"):
    if which.startswith(key + ":"):
      return {key: int(which.split(":", 1)[1])}
  raise UserError(
    f"teacher.which must be 'final', 'best', 'selected', 'step:<n>' or 'epoch:<n>', got {which!r}."
  )
