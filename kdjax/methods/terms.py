"""Built-in method terms: thin adapters from (student, teacher, batch) to ``kdjax.losses``.

Each adapter's keyword-only arguments are the term's hyper-parameters (validated by name at
config time). Adding a method = one loss in ``kdjax.losses`` + one adapter here + configs.
"""
from __future__ import annotations

import jax.numpy as jnp

from kdjax import losses
from kdjax.methods.base import register_term


@register_term("kd")
def kd_term(s, t, batch, *, temperature: float = 4.0, t2_scale: bool = True):
  """Hinton KD, ``T^2 KL(p_t^T || p_s^T)`` per example (RepDistiller ``DistillKL``)."""
  del batch
  return losses.kd(s.logits, t.logits, temperature=temperature, t2_scale=t2_scale)


@register_term("ttm")
def ttm_term(s, t, batch, *, gamma: float):
  """Transformed teacher matching, ``KL(softmax(gamma z_t) || softmax(z_s))`` (zkxufo/TTM)."""
  del batch
  return losses.ttm(s.logits, t.logits, gamma=gamma)


@register_term("wttm")
def wttm_term(s, t, batch, *, gamma: float):
  """Weighted TTM: the TTM term weighted per sample by ``U_gamma(p_t)`` (zkxufo/TTM)."""
  del batch
  return losses.wttm(s.logits, t.logits, gamma=gamma)


@register_term("dkd")
def dkd_term(s, t, batch, *, alpha: float = 1.0, beta: float = 8.0, temperature: float = 4.0,
             warmup_epochs: int = 20):
  """Decoupled KD (mdistiller), scaled by the warm-up factor ``min(epoch / warmup, 1)``."""
  loss = losses.dkd(s.logits, t.logits, batch.labels, alpha=alpha, beta=beta,
                    temperature=temperature)
  if warmup_epochs:
    loss = loss * losses.dkd_warmup_factor(jnp.asarray(batch.epoch, jnp.float32), warmup_epochs)
  return loss


@register_term("dist")
def dist_term(s, t, batch, *, beta: float = 1.0, gamma: float = 1.0, temperature: float = 4.0):
  """DIST: inter- and intra-class Pearson relations (Huang et al. 2022)."""
  del batch
  return losses.dist(s.logits, t.logits, beta=beta, gamma=gamma, temperature=temperature)


@register_term("listmle")
def listmle_term(s, t, batch, *, top_k=None):
  """Plackett-Luce / ListMLE on the teacher's class order (calibration-insensitive ranking)."""
  del batch
  return losses.listmle(s.logits, t.logits, top_k=top_k)


@register_term("pairwise_ranking")
def pairwise_ranking_term(s, t, batch, *, temperature: float = 1.0, top_k=None):
  """Pairwise logistic ranking loss on the teacher's class order."""
  del batch
  return losses.pairwise_ranking(s.logits, t.logits, temperature=temperature, top_k=top_k)


@register_term("pld")
def pld_term(s, t, batch, *, teacher_temperature: float = 1.0):
  """Teacher-weighted list-wise ranking loss (PLD, candidate 4 of the ranking slot)."""
  return losses.pld(s.logits, t.logits, batch.labels, teacher_temperature=teacher_temperature)


@register_term("kl")
def kl_term(s, t, batch, *, teacher_temperature: float, student_temperature: float,
            t2_scale: bool = True, form: str = "kl"):
  """The general KL of methods.md 0.2 (e.g. calibration paper: tau = 1.8 and ce_weight = 0)."""
  del batch
  return losses.kl_per_example(s.logits, t.logits, teacher_temperature=teacher_temperature,
                               student_temperature=student_temperature, t2_scale=t2_scale,
                               form=form)


# ---- SFTN stage 1 (student-friendly teacher; Park et al., NeurIPS 2021; methods.md §4) --------
_SFTN_KL_DIRECTIONS = ("teacher_to_branch", "branch_to_teacher")
_SFTN_BRANCH_REDUCE = ("mean", "sum")


@register_term("sftn", student_taps=("branch_logits",), needs_teacher=False)
def sftn_term(s, t, batch, *, kl_weight: float = 3.0, ce_weight: float = 1.0,
              temperature: float = 1.0, kl_direction: str = "teacher_to_branch",
              t2_scale: bool = True, detach_teacher_logits_in_kl: bool = False,
              branch_reduce: str = "mean"):
  """SFTN branch terms on the model ``'sftn'`` (``s.logits`` = teacher logits ``z_T``,
  ``s.taps['branch_logits']`` = ``(R, B, K)`` branch logits ``z_R^i``), per example:
  ``ce_weight · red_i CE(z_R^i, y) + kl_weight · red_i τ² KL(p_T^τ ‖ p_R^{i,τ})`` with ``red`` the
  mean (or sum) over branches; ``kl_direction='branch_to_teacher'`` uses ``KL(p_R ‖ p_T)``.
  ``method.ce_weight`` is λ_T; give this term weight 1."""
  import jax  # noqa: PLC0415  (this block only)

  del t
  if kl_direction not in _SFTN_KL_DIRECTIONS:
    raise ValueError(f"sftn kl_direction must be one of {_SFTN_KL_DIRECTIONS}, got "
                     f"{kl_direction!r}.")
  if branch_reduce not in _SFTN_BRANCH_REDUCE:
    raise ValueError(f"sftn branch_reduce must be one of {_SFTN_BRANCH_REDUCE}, got "
                     f"{branch_reduce!r}.")
  for name, v in (("kl_weight", kl_weight), ("ce_weight", ce_weight)):
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not v >= 0:
      raise ValueError(f"sftn {name} must be a number >= 0, got {v!r}.")
  for name, v in (("t2_scale", t2_scale),
                  ("detach_teacher_logits_in_kl", detach_teacher_logits_in_kl)):
    if not isinstance(v, bool):
      raise ValueError(f"sftn {name} must be a bool, got {v!r}.")
  if "branch_logits" not in s.taps:
    raise ValueError("the sftn term needs taps['branch_logits']: train model 'sftn'.")
  z_t = s.logits
  z_b = s.taps["branch_logits"]
  if z_b.ndim != 3 or tuple(z_b.shape[1:]) != tuple(z_t.shape):
    raise ValueError(f"sftn: branch_logits must be (R, B, K) with (B, K) = {tuple(z_t.shape)}, "
                     f"got {tuple(z_b.shape)}.")
  z_kl = jax.lax.stop_gradient(z_t) if detach_teacher_logits_in_kl else z_t
  k = z_t.shape[-1]
  target = jax.nn.one_hot(batch.labels, k, dtype=jnp.float32)
  mix_labels = getattr(batch, "mix_labels", None)
  if mix_labels is not None:        # mixup: the same label mixing as the main CE
    lam = batch.mix_lam
    target = lam * target + (1.0 - lam) * jax.nn.one_hot(mix_labels, k, dtype=jnp.float32)
  ce, kl = [], []
  for r in range(z_b.shape[0]):
    z_r = z_b[r]
    ce.append(-jnp.sum(target * jax.nn.log_softmax(z_r.astype(jnp.float32), axis=-1), axis=-1))
    student, teacher = (z_r, z_kl) if kl_direction == "teacher_to_branch" else (z_kl, z_r)
    kl.append(losses.kl_per_example(student, teacher, teacher_temperature=temperature,
                                    student_temperature=temperature, t2_scale=t2_scale))
  reduce = jnp.mean if branch_reduce == "mean" else jnp.sum
  return ce_weight * reduce(jnp.stack(ce), axis=0) + kl_weight * reduce(jnp.stack(kl), axis=0)


# =============================================================================================
# Feature, relational and contrastive terms (RepDistiller's classic methods; methods.md §7,
# anchors.md §4.4). Appended section: imports, connector wrappers, then the registrations.
# =============================================================================================
#
# Stage-dependent terms and the ``@n`` suffix. Which taps a term reads is declared statically in
# its TermSpec (the teacher's tap dict is restricted to the declared taps), but RepDistiller's
# ``feat[1:-1]`` ("all stages") and ``feat[-2]`` ("last stage") depend on the family: 3 stages
# for CIFAR ResNet / WRN / ShuffleNet, 4 for VGG / MobileNetV2 / ResNet50 (2 for ``tiny_cnn``).
# Each such term is therefore registered once per stage count, ``<name>@<n>``, where ``n`` is
# the highest stage the term reads:
#
# * ``at@n``, ``nst@n``, ``vid@n``: ``stage1..stage<n>`` (all stages of an n-stage model);
# * ``ab@n``, ``oh@n``: ``preact_stage1..<n>``; ``fsp@n``: ``stem, stage1..<n>``;
# * ``sp@n``, ``ft@n``, ``ft_paraphraser@n``: ``stage<n>`` (the last stage of an n-stage model);
# * ``fitnet@k``: FitNet's ``hint_layer = k`` (``0`` = ``stem``, else ``stage<k>``).
#
# The bare names are RepDistiller's defaults for its 3-stage families: ``at`` = ``at@3`` ...,
# and ``fitnet`` = ``fitnet@2`` (``--hint_layer 2``). :func:`staged_term` maps
# ``(name, num_stages)`` to the loss name (configs use the model's ``num_stages``). When the two
# models have different stage counts, ``@n`` with ``n = min`` pairs the first n stages of each
# (what RepDistiller's ``zip`` over ``feat[1:-1]`` does). Missing taps are reported at config
# time by ``Method.check_shapes``; connectors that cannot bridge the shapes raise ``ValueError``
# when they are built (``Method.connectors``), before anything is compiled.

import math as _math  # noqa: E402

import flax.linen as _nn  # noqa: E402
import jax as _jax  # noqa: E402

from kdjax.losses import connectors as _conn  # noqa: E402
from kdjax.losses import contrastive as _crd_lib  # noqa: E402

STAGE_VARIANTS = (1, 2, 3, 4)
DEFAULT_NUM_STAGES = 3
DEFAULT_HINT_LAYER = 2
_STAGED = ("at", "nst", "vid", "ab", "oh", "fsp", "sp", "ft", "ft_paraphraser")


def staged_term(name: str, n: int) -> str:
  """Registered loss name of a stage-dependent term for an ``n``-stage model pair (FitNet: the
  hint layer). ``staged_term('at', 4) == 'at@4'``; the bare name for the default."""
  if name == "fitnet":
    if n not in (0,) + STAGE_VARIANTS:
      raise ValueError(f"fitnet hint_layer must be in 0..{max(STAGE_VARIANTS)}, got {n!r}.")
    return "fitnet" if n == DEFAULT_HINT_LAYER else f"fitnet@{n}"
  if name not in _STAGED:
    raise ValueError(f"{name!r} is not a stage-dependent term; those are {_STAGED} and fitnet.")
  if n not in STAGE_VARIANTS:
    raise ValueError(f"{name}: number of stages must be in {STAGE_VARIANTS}, got {n!r}.")
  return name if n == DEFAULT_NUM_STAGES else f"{name}@{n}"


def _stages(n):
  return tuple(f"stage{i}" for i in range(1, n + 1))


def _preacts(n):
  return tuple(f"preact_stage{i}" for i in range(1, n + 1))


def _tap_shape(shapes, key, side, term):
  if shapes is None or key not in shapes:
    have = sorted(shapes) if shapes else []
    raise ValueError(f"term {term}: the {side} model has no tap {key!r} (it has {have}).")
  return tuple(int(v) for v in shapes[key])


def _map_shape(shapes, key, side, term):
  shp = _tap_shape(shapes, key, side, term)
  if len(shp) != 4:
    raise ValueError(f"term {term}: {side} tap {key!r} must be an NHWC map, got shape {shp}.")
  return shp


def _check_num(term, name, value, *, lo=None, lo_open=False, integer=False):
  if isinstance(value, bool) or not isinstance(value, (int, float)):
    raise ValueError(f"term {term}: {name} must be a number, got {value!r}.")
  if integer and int(value) != value:
    raise ValueError(f"term {term}: {name} must be an integer, got {value!r}.")
  if not _math.isfinite(value) or (lo is not None and (value <= lo if lo_open else value < lo)):
    raise ValueError(f"term {term}: {name} must be {'>' if lo_open else '>='} {lo}, got "
                     f"{value!r}.")


# ---- connector wrappers (thin Flax modules around kdjax.losses.connectors) -------------------
class FitNetRegressor(_nn.Module):
  """FitNet's ``ConvReg`` with a defaulted ``train`` flag (the trainer initialises connectors
  with positional zeros only). Parameters under ``reg/``."""
  s_shape: tuple
  t_shape: tuple

  @_nn.compact
  def __call__(self, x, train: bool = False):
    return _conn.ConvReg(self.s_shape, self.t_shape, name="reg")(x, train)


class PairEmbed(_nn.Module):
  """Two trainable embeddings ``(embed_s(f_s), embed_t(f_t))``: RepDistiller's ``Embed``
  (Linear + L2 norm; CRD) if ``normalize`` else ``LinearEmbed`` (CC)."""
  dim_out: int = 128
  normalize: bool = True

  @_nn.compact
  def __call__(self, f_s, f_t):
    cls = _conn.Embed if self.normalize else _conn.LinearEmbed
    return cls(self.dim_out, name="embed_s")(f_s), cls(self.dim_out, name="embed_t")(f_t)


class VIDRegressors(_nn.Module):
  """One :class:`~kdjax.losses.connectors.VIDRegressor` per stage (``vid1..vidN``), RepDistiller
  ``VIDLoss(s_C, t_C, t_C)`` each; ``__call__(*student_maps)`` -> tuple of ``(mu, log_scale)``."""
  t_shapes: tuple
  init_pred_var: float = 5.0
  eps: float = 1e-5

  @_nn.compact
  def __call__(self, *feats):
    out = []
    for i, (x, ts) in enumerate(zip(feats, self.t_shapes)):
      reg = _conn.VIDRegressor(ts[3], ts[3], self.init_pred_var, self.eps, name=f"vid{i + 1}")
      out.append(reg(x, target_hw=ts[1:3]))
    return tuple(out)


class ABConnectors(_nn.Module):
  """RepDistiller's AB ``Connector`` list: one :class:`~kdjax.losses.connectors.ABConnector` per
  pre-activation stage (identity when channels and height match, else conv + BN). When every
  stage is the identity the module holds one unused zero scalar ``identity_placeholder`` (the
  trainer expects every connector to have parameters; it gets no gradient and stays 0)."""
  s_shapes: tuple
  t_shapes: tuple

  @_nn.compact
  def __call__(self, *feats, train: bool = False):
    mods = [_conn.ABConnector(s, t, name=f"ab{i + 1}")
            for i, (s, t) in enumerate(zip(self.s_shapes, self.t_shapes))]
    if all(m.is_identity for m in mods):
      self.param("identity_placeholder", _nn.initializers.zeros, ())
    return tuple(m(x, train) for m, x in zip(mods, feats))


class OHConnectors(_nn.Module):
  """One :class:`~kdjax.losses.connectors.OHConnector` (conv1x1 + BN) per pre-activation stage."""
  t_channels: tuple

  @_nn.compact
  def __call__(self, *feats, train: bool = False):
    return tuple(_conn.OHConnector(c, name=f"oh{i + 1}")(x, train)
                 for i, (c, x) in enumerate(zip(self.t_channels, feats)))


class FTConnector(_nn.Module):
  """Factor transfer modules: the student's ``Translator`` and the teacher's ``Paraphraser``
  (RepDistiller ``Translator(s_shape, t_shape, k)``, ``Paraphraser(t_shape, k)``).
  ``__call__(f_s, f_t, train)`` -> ``(factor_s, factor_t, reconstruction_t)``;
  ``paraphrase(f_t, train)`` -> ``(factor_t, reconstruction_t)`` (the paraphraser alone: FT's
  init stage, term ``ft_paraphraser``). Parameters under ``translator/`` and ``paraphraser/``."""
  s_shape: tuple
  t_shape: tuple
  k: float = 0.5

  def setup(self):
    self.translator = _conn.Translator(self.s_shape, self.t_shape, self.k)
    self.paraphraser = _conn.Paraphraser(self.t_shape, self.k)

  def __call__(self, f_s, f_t, train: bool = False):
    factor_s = self.translator(f_s, train)
    factor_t, recon = self.paraphraser(f_t, train)
    return factor_s, factor_t, recon

  def paraphrase(self, f_t, train: bool = False):
    return self.paraphraser(f_t, train)


# ---- FitNet ----------------------------------------------------------------------------------
def _register_fitnet(name, tap):
  term = name

  def connector_fn(s_shapes, t_shapes, **hp):
    ss = _map_shape(s_shapes, tap, "student", term)
    ts = _map_shape(t_shapes, tap, "teacher", term)
    try:
      _conn.conv_reg_kind(ss, ts)
    except ValueError as e:
      raise ValueError(f"term {term}: ConvReg cannot bridge student {tap} {ss[1:]} to teacher "
                       f"{tap} {ts[1:]} (NHWC): {e}") from None
    return FitNetRegressor(ss, ts), (ss,)

  def fitnet_term(s, t, batch, *, connector=None):
    del batch
    return losses.fitnet(connector(s.taps[tap], train=True), t.taps[tap])

  fitnet_term.__doc__ = (
      f"FitNet hint (Romero et al. 2015; RepDistiller ``HintLoss`` + ``ConvReg``): per-example "
      f"MSE between ``ConvReg(student {tap})`` and teacher ``{tap}``. The regressor (conv + BN + "
      f"ReLU, trained with the student in one stage as RepDistiller) is this term's connector.")
  register_term(name, student_taps=(tap,), teacher_taps=(tap,),
                connector_fn=connector_fn)(fitnet_term)


for _k in (0,) + STAGE_VARIANTS:
  _register_fitnet(f"fitnet@{_k}", "stem" if _k == 0 else f"stage{_k}")
_register_fitnet("fitnet", f"stage{DEFAULT_HINT_LAYER}")


# ---- AT, NST, SP, FSP (no connector) ----------------------------------------------------------
def _register_at(name, keys):
  def at_term(s, t, batch, *, p: float = 2.0):
    del batch
    return losses.at([s.taps[k] for k in keys], [t.taps[k] for k in keys], p=p)

  at_term.__doc__ = (f"Attention transfer (RepDistiller ``Attention(p=2)``), summed over "
                     f"{', '.join(keys)}.")
  register_term(name, student_taps=keys, teacher_taps=keys)(at_term)


def _register_nst(name, keys):
  def nst_term(s, t, batch):
    del batch
    return losses.nst([s.taps[k] for k in keys], [t.taps[k] for k in keys])

  nst_term.__doc__ = (f"Neuron selectivity transfer (RepDistiller ``NSTLoss``, polynomial "
                      f"kernel), summed over {', '.join(keys)}.")
  register_term(name, student_taps=keys, teacher_taps=keys)(nst_term)


def _register_sp(name, key):
  def sp_term(s, t, batch):
    del batch
    return losses.sp(s.taps[key], t.taps[key])

  sp_term.__doc__ = (f"Similarity-preserving KD (RepDistiller ``Similarity``) on ``{key}`` "
                     f"(``feat[-2]``, the last stage); a batch-relational loss split row-wise.")
  register_term(name, student_taps=(key,), teacher_taps=(key,))(sp_term)


def _register_fsp(name, keys):
  def fsp_term(s, t, batch):
    del batch
    return losses.fsp([s.taps[k] for k in keys], [t.taps[k] for k in keys])

  fsp_term.__doc__ = (
      f"FSP matrices (RepDistiller ``FSP``) over consecutive taps {', '.join(keys)}; needs equal "
      f"channel counts at every tap (N/A for wrn_40_2->wrn_40_1 and cross-architecture pairs). "
      f"RepDistiller uses FSP ONLY in a 30-epoch init stage that trains the student's feature "
      f"layers (``helper/pretrain.py``), followed by 240 epochs of CE alone: put this term in "
      f"``method.init.terms`` (weight 1) with ``method.init.trainable = 'student_features'`` "
      f"and leave it out of ``method.terms`` (``configs/cifar100/repdistiller.py``). In "
      f"``method.terms`` it trains jointly with CE (not RepDistiller's protocol).")
  register_term(name, student_taps=keys, teacher_taps=keys)(fsp_term)


# ---- VID ------------------------------------------------------------------------------------
def _register_vid(name, keys):
  term = name

  def connector_fn(s_shapes, t_shapes, *, init_pred_var=5.0, eps=1e-5, **hp):
    _check_num(term, "eps", eps, lo=0, lo_open=True)
    _check_num(term, "init_pred_var", init_pred_var, lo=eps, lo_open=True)
    ss = tuple(_map_shape(s_shapes, k, "student", term) for k in keys)
    ts = tuple(_map_shape(t_shapes, k, "teacher", term) for k in keys)
    for k, a, b in zip(keys, ss, ts):
      if (a[1] - b[1]) * (a[2] - b[2]) < 0:
        raise ValueError(f"term {term}: cannot match the spatial sizes of student {k} {a[1:]} "
                         f"and teacher {k} {b[1:]} (one is taller, the other wider).")
    return VIDRegressors(ts, float(init_pred_var), float(eps)), ss

  def vid_term(s, t, batch, *, connector=None, init_pred_var: float = 5.0, eps: float = 1e-5):
    del batch, init_pred_var
    outs = connector(*[s.taps[k] for k in keys])
    total = 0.0
    for (mu, log_scale), k in zip(outs, keys):
      total = total + losses.vid(mu, log_scale, t.taps[k], eps=eps)
    return total

  vid_term.__doc__ = (f"Variational information distillation (RepDistiller ``VIDLoss(s_C, t_C, "
                      f"t_C)`` per stage), summed over {', '.join(keys)}; the regressors and "
                      f"variances are this term's connector.")
  register_term(name, student_taps=keys, teacher_taps=keys,
                connector_fn=connector_fn)(vid_term)


# ---- AB -------------------------------------------------------------------------------------
def _register_ab(name, keys):
  term = name

  def connector_fn(s_shapes, t_shapes, **hp):
    ss = tuple(_map_shape(s_shapes, k, "student", term) for k in keys)
    ts = tuple(_map_shape(t_shapes, k, "teacher", term) for k in keys)
    for k, a, b in zip(keys, ss, ts):
      if not (a[3] == b[3] and a[1] == b[1]):
        try:
          _conn.conv_reg_kind(a, b)
        except ValueError as e:
          raise ValueError(f"term {term}: the AB connector cannot bridge student {k} {a[1:]} to "
                           f"teacher {k} {b[1:]}: {e}") from None
    return ABConnectors(ss, ts), ss

  def ab_term(s, t, batch, *, connector=None, margin: float = 1.0):
    del batch
    conn = connector(*[s.taps[k] for k in keys], train=True)
    return losses.ab(list(conn), [t.taps[k] for k in keys], margin=margin)

  ab_term.__doc__ = (
      f"Activation-boundary loss (RepDistiller ``ABLoss`` + ``Connector``) on "
      f"{', '.join(keys)}. RepDistiller uses AB ONLY in a 30-epoch init stage (connector + "
      f"student feature layers, ``helper/pretrain.py``, β not applied) and then trains 240 "
      f"epochs with CE alone (``loss_kd = 0``, connector unused): put this term in "
      f"``method.init.terms`` (weight 1) with ``method.init.trainable = "
      f"'student_features+connectors'`` and leave it out of ``method.terms`` "
      f"(``configs/cifar100/repdistiller.py``). In ``method.terms`` it trains jointly with CE "
      f"(not RepDistiller's protocol).")
  register_term(name, student_taps=keys, teacher_taps=keys,
                connector_fn=connector_fn)(ab_term)


# ---- FT -------------------------------------------------------------------------------------
def _register_ft(name, key):
  term = name

  def connector_fn(s_shapes, t_shapes, *, k=0.5, **hp):
    _check_num(term, "k", k, lo=0, lo_open=True)
    ss = _map_shape(s_shapes, key, "student", term)
    ts = _map_shape(t_shapes, key, "teacher", term)
    if int(ts[3] * k) < 1:
      raise ValueError(f"term {term}: int(teacher channels {ts[3]} * k={k}) must be >= 1.")
    if (ss[1] - ts[1]) * (ss[2] - ts[2]) < 0:
      raise ValueError(f"term {term}: cannot match the spatial sizes of student {key} "
                       f"{ss[1:]} and teacher {key} {ts[1:]}.")
    return FTConnector(ss, ts, float(k)), (ss, ts)

  def ft_term(s, t, batch, *, connector=None, k: float = 0.5, p1: float = 2, p2: float = 1,
              paraphraser_recon_weight: float = 0.005, detach_teacher_factor: bool = True):
    del batch, k
    f_t = t.taps[key]
    factor_s, factor_t, recon = connector(s.taps[key], f_t, train=True)
    if detach_teacher_factor:
      factor_t = _jax.lax.stop_gradient(factor_t)
    v = losses.ft(factor_s, factor_t, p1=p1, p2=p2)
    if paraphraser_recon_weight:
      v = v + paraphraser_recon_weight * jnp.mean(jnp.square(recon - f_t), axis=(1, 2, 3))
    return v

  ft_term.__doc__ = (
      f"Factor transfer (RepDistiller ``FactorTransfer(p1=2, p2=1)``) on ``{key}``: "
      f"``|φ(Translator(f_s)) − φ(Paraphraser(f_t))|``. RepDistiller first PRE-TRAINS the "
      f"paraphraser for 30 epochs (MSE reconstruction of the teacher's last stage, "
      f"``helper/pretrain.py``) and freezes it for the 240-epoch main stage: give the init "
      f"stage the term ``ft_paraphraser`` under the SAME key (it shares this connector) with "
      f"``method.init.trainable = 'connectors/<key>/paraphraser'``, and this term "
      f"``paraphraser_recon_weight = 0`` with ``method.trainable = "
      f"'student+connectors/<key>/translator'`` (``configs/cifar100/repdistiller.py``). Without "
      f"an init stage, both the Translator and the Paraphraser train from the first step: the "
      f"FT term reaches the paraphraser only through ``paraphraser_recon_weight · "
      f"MSE(reconstruction, f_t)`` (added to this term, default 0.005 = 1/b for RepDistiller's "
      f"b = 200, i.e. a unit-weight reconstruction loss) while its factor is detached in the FT "
      f"distance (``detach_teacher_factor``); a joint stand-in, not RepDistiller's protocol.")
  register_term(name, student_taps=(key,), teacher_taps=(key,),
                connector_fn=connector_fn)(ft_term)
  return connector_fn


def _register_ft_paraphraser(name, key, ft_connector_fn):
  def ft_paraphraser_term(s, t, batch, *, connector=None, k: float = 0.5):
    del s, batch, k
    f_t = t.taps[key]
    _, recon = connector(f_t, train=True, method="paraphrase")
    return jnp.mean(jnp.square(recon - f_t), axis=(1, 2, 3))

  ft_paraphraser_term.__doc__ = (
      f"FT's init stage (RepDistiller ``helper/pretrain.py``: ``nn.MSELoss()(Paraphraser(f_t)"
      f"[1], f_t)``, 30 epochs): per-example MSE reconstruction of the teacher's ``{key}`` by the "
      f"paraphraser. Its connector is the FT term's ``FTConnector`` (Translator + Paraphraser, "
      f"built identically; only the paraphraser is applied), so under the FT term's key it "
      f"trains the paraphraser the main stage's FT term then uses frozen. Reads no student tap.")
  register_term(name, teacher_taps=(key,),
                connector_fn=ft_connector_fn)(ft_paraphraser_term)


# ---- OH -------------------------------------------------------------------------------------
def _register_oh(name, keys):
  term = name

  def connector_fn(s_shapes, t_shapes, **hp):
    ss = tuple(_map_shape(s_shapes, k, "student", term) for k in keys)
    ts = tuple(_map_shape(t_shapes, k, "teacher", term) for k in keys)
    for k, a, b in zip(keys, ss, ts):
      if a[1:3] != b[1:3]:
        raise ValueError(f"term {term}: the OH connector (conv1x1 + BN) cannot bridge student "
                         f"{k} {a[1:]} to teacher {k} {b[1:]}: spatial sizes differ.")
    return OHConnectors(tuple(b[3] for b in ts)), ss

  def init_state(num_examples, s_shapes, t_shapes, rng, *, teacher_variables=None,
                 margins="bn", **hp):
    del num_examples, s_shapes, rng
    ts = [_map_shape(t_shapes, k, "teacher", term) for k in keys]
    if margins == "batch":
      return {"margins": tuple(jnp.zeros((c[3],), jnp.float32) for c in ts),
              "is_set": jnp.zeros((), jnp.int32)}
    if margins != "bn":
      raise ValueError(f"term {term}: margins must be 'bn' (from the teacher's BatchNorm before "
                       f"each ReLU, the reference) or 'batch', got {margins!r}.")
    if teacher_variables is None:
      raise ValueError(f"term {term}: margins='bn' needs the teacher's parameters (the trainer "
                       "passes them to Method.init_states(..., teacher_variables=...)); or use "
                       "margins='batch'.")
    if isinstance(teacher_variables, (list, tuple)):
      if len(teacher_variables) != 1:
        raise ValueError(f"term {term}: margins='bn' needs ONE teacher, got an ensemble of "
                         f"{len(teacher_variables)}: use margins='batch'.")
      teacher_variables = teacher_variables[0]
    from kdjax.models.bn_before_relu import bn_before_relu
    try:
      bns = bn_before_relu(teacher_variables["params"])
    except ValueError as e:
      raise ValueError(f"term {term}: {e}") from None
    if len(bns) < len(keys) or any(g.shape != (c[3],) for (g, _), c in zip(bns, ts)):
      raise ValueError(f"term {term}: the teacher's BNs before ReLU have "
                       f"{[int(g.shape[0]) for g, _ in bns]} channels, its taps {list(keys)} "
                       f"{[c[3] for c in ts]}: use margins='batch'.")
    return {"margins": tuple(losses.overhaul_margin(g, b).astype(jnp.float32)
                             for g, b in bns[:len(keys)]),
            "is_set": jnp.ones((), jnp.int32)}

  def oh_term(s, t, batch, *, connector=None, state=None, scale: float = 1e-3,
              margins: str = "bn"):
    del batch, margins
    t_pre = [t.taps[k] for k in keys]
    is_set = state["is_set"] > 0
    margins = []
    for x, old in zip(t_pre, state["margins"]):
      mean = jnp.mean(x, axis=(0, 1, 2))
      std = jnp.std(x, axis=(0, 1, 2))
      new = losses.overhaul_margin(std, mean).astype(old.dtype)
      margins.append(jnp.where(is_set, old, new))
    conn = connector(*[s.taps[k] for k in keys], train=True)
    v = losses.oh(list(conn), t_pre, margins, scale=scale)
    return v, {"margins": tuple(margins), "is_set": jnp.ones((), jnp.int32)}

  oh_term.__doc__ = (
      f"Overhaul of feature distillation (clovaai/overhaul-distillation) on {', '.join(keys)} "
      f"with OHConnector (conv1x1 + BN) per stage. ``margins='bn'`` (default, the reference): "
      f"the per-channel margin comes from the teacher's BN before each ReLU (γ as std, β as mean; "
      f"mdistiller's ``get_bn_before_relu``, :mod:`kdjax.models.bn_before_relu`), computed once "
      f"from the teacher's parameters when the term state is created. ``margins='batch'`` (for "
      f"teachers without that mapping, e.g. ShuffleNets): the per-channel margin is "
      f"``overhaul_margin(std, mean)`` of the teacher's pre-activation tap over the FIRST batch "
      f"(B, H, W), then frozen in the term state (like CRD's Z). For BN-output pre-activations "
      f"(VGG, WRN) this estimates the same quantity; for ResNets (residual sum before the ReLU) "
      f"it is the margin of the actual pre-activation rather than of ``bn2`` alone. The 'bn' "
      f"margins are checked against mdistiller's on imported PyTorch teachers "
      f"(``tests/test_oh_margins.py``).")
  register_term(name, student_taps=keys, teacher_taps=keys, connector_fn=connector_fn,
                init_state=init_state)(oh_term)


for _n in STAGE_VARIANTS:
  _register_at(f"at@{_n}", _stages(_n))
  _register_nst(f"nst@{_n}", _stages(_n))
  _register_vid(f"vid@{_n}", _stages(_n))
  _register_sp(f"sp@{_n}", f"stage{_n}")
  _register_ft_paraphraser(f"ft_paraphraser@{_n}", f"stage{_n}",
                           _register_ft(f"ft@{_n}", f"stage{_n}"))
  _register_fsp(f"fsp@{_n}", ("stem",) + _stages(_n))
  _register_ab(f"ab@{_n}", _preacts(_n))
  _register_oh(f"oh@{_n}", _preacts(_n))
_register_at("at", _stages(DEFAULT_NUM_STAGES))
_register_nst("nst", _stages(DEFAULT_NUM_STAGES))
_register_vid("vid", _stages(DEFAULT_NUM_STAGES))
_register_sp("sp", f"stage{DEFAULT_NUM_STAGES}")
_register_ft_paraphraser("ft_paraphraser", f"stage{DEFAULT_NUM_STAGES}",
                         _register_ft("ft", f"stage{DEFAULT_NUM_STAGES}"))
_register_fsp("fsp", ("stem",) + _stages(DEFAULT_NUM_STAGES))
_register_ab("ab", _preacts(DEFAULT_NUM_STAGES))
_register_oh("oh", _preacts(DEFAULT_NUM_STAGES))


# ---- pooled-feature terms: CC, RKD, PKT -------------------------------------------------------
def _pooled_pair_connector(term, normalize):
  def connector_fn(s_shapes, t_shapes, *, feat_dim=128, **hp):
    _check_num(term, "feat_dim", feat_dim, lo=1, integer=True)
    ss = _tap_shape(s_shapes, "pooled", "student", term)
    ts = _tap_shape(t_shapes, "pooled", "teacher", term)
    return PairEmbed(int(feat_dim), normalize), (ss, ts)
  return connector_fn


@register_term("cc", student_taps=("pooled",), teacher_taps=("pooled",),
               connector_fn=_pooled_pair_connector("cc", normalize=False))
def cc_term(s, t, batch, *, connector=None, feat_dim: int = 128):
  """Correlation congruence (RepDistiller ``Correlation``) on two trainable ``LinearEmbed``
  projections (student and teacher ``pooled`` -> ``feat_dim`` = 128), the term's connector."""
  del batch, feat_dim
  e_s, e_t = connector(s.taps["pooled"], t.taps["pooled"])
  return losses.cc(e_s, e_t)


@register_term("rkd", student_taps=("pooled",), teacher_taps=("pooled",))
def rkd_term(s, t, batch, *, w_dist: float = 25.0, w_angle: float = 50.0):
  """Relational KD (RepDistiller ``RKDLoss(25, 50)``) on the ``pooled`` features."""
  del batch
  return losses.rkd(s.taps["pooled"], t.taps["pooled"], w_dist=w_dist, w_angle=w_angle)


@register_term("pkt", student_taps=("pooled",), teacher_taps=("pooled",))
def pkt_term(s, t, batch, *, eps: float = 1e-7):
  """Probabilistic knowledge transfer (RepDistiller ``PKT``) on the ``pooled`` features."""
  del batch
  return losses.pkt(s.taps["pooled"], t.taps["pooled"], eps=eps)


# ---- CRD (memory bank) and its queue variant --------------------------------------------------
def _check_crd(term, feat_dim, nce_t, extra):
  _check_num(term, "feat_dim", feat_dim, lo=1, integer=True)
  _check_num(term, "nce_t", nce_t, lo=0, lo_open=True)
  for name, (value, lo) in extra.items():
    _check_num(term, name, value, lo=lo, integer=True)


def _raw_key(rng):
  if jnp.issubdtype(rng.dtype, _jax.dtypes.prng_key):
    return _jax.random.key_data(rng)
  return jnp.asarray(rng, jnp.uint32)


def _crd_init_state(num_examples, s_shapes, t_shapes, rng, *, feat_dim=128, nce_k=16384,
                    nce_t=0.07, nce_m=0.5, negatives="uniform", **hp):
  _check_crd("crd", feat_dim, nce_t, {"nce_k": (nce_k, 1)})
  _check_num("crd", "nce_m", nce_m, lo=0)
  if nce_m > 1:
    raise ValueError(f"term crd: nce_m must be in [0, 1], got {nce_m!r}.")
  if negatives not in _crd_lib.NEGATIVE_MODES:
    raise ValueError(f"term crd: negatives must be one of {_crd_lib.NEGATIVE_MODES}, got "
                     f"{negatives!r}.")
  if int(num_examples) < 2:
    raise ValueError(f"term crd: needs a dataset index space of >= 2 examples, got "
                     f"{num_examples}.")
  k_s, k_t, k_r = _jax.random.split(_jax.random.fold_in(rng, 0), 3)
  state = {
      "memory_s": _crd_lib.crd_init_memory(k_s, int(num_examples), int(feat_dim)),
      "memory_t": _crd_lib.crd_init_memory(k_t, int(num_examples), int(feat_dim)),
      "z_s": jnp.full((), -1.0, jnp.float32),
      "z_t": jnp.full((), -1.0, jnp.float32),
      "rng": _raw_key(k_r),
  }
  if negatives == "other_class":
    state["labels"] = jnp.full((int(num_examples),), -1, jnp.int32)
  return state


@register_term("crd", student_taps=("pooled",), teacher_taps=("pooled",),
               connector_fn=_pooled_pair_connector("crd", normalize=True),
               init_state=_crd_init_state)
def crd_term(s, t, batch, *, connector=None, state=None, feat_dim: int = 128,
             nce_k: int = 16384, nce_t: float = 0.07, nce_m: float = 0.5,
             negatives: str = "uniform"):
  """Contrastive representation distillation (Tian et al. 2020; RepDistiller ``CRDLoss``,
  ``ContrastMemory``): student and teacher ``pooled`` -> trainable ``Embed`` (Linear + L2,
  ``feat_dim`` 128; the connector) -> two-view NCE against memory banks (state ``memory_s``,
  ``memory_t``: index-space × feat_dim, uniform init as the reference) with ``nce_k`` negatives
  per example, temperature ``nce_t``, ``Z`` per view fixed from the first batch (state ``z_s``,
  ``z_t``, initially −1), then the momentum update of the rows at ``batch.index`` (``nce_m``).
  Positives (slot 0) are ``batch.index`` (``mode='exact'``). Negatives are drawn with
  ``jax.random`` from the state's ``rng`` (split every step: deterministic and resumable):
  ``'uniform'`` = the reference's ``AliasMethod`` with uniform weights (used when no
  ``contrast_idx`` is given); ``'other_class'`` approximates ``CIFAR100InstanceSample`` (K
  OTHER-class indices without replacement) by rejection against a label bank filled as batches
  arrive (state ``labels``; with replacement; see ``kdjax.losses.crd_sample_negatives``). The
  memory holds one row per dataset index (N × 128 floats per network); for datasets where that
  does not fit use ``crd_queue``."""
  del feat_dim
  if negatives not in _crd_lib.NEGATIVE_MODES:
    raise ValueError(f"crd negatives must be one of {_crd_lib.NEGATIVE_MODES}, got "
                     f"{negatives!r}.")
  e_s, e_t = connector(s.taps["pooled"], t.taps["pooled"])
  mem_s, mem_t = state["memory_s"], state["memory_t"]
  n = mem_s.shape[0]
  index = jnp.asarray(batch.index, jnp.int32)
  rng, key = _jax.random.split(state["rng"])
  new_state = dict(state)
  if negatives == "other_class":
    bank = state["labels"].at[index].set(jnp.asarray(batch.labels, jnp.int32))
    neg = _crd_lib.crd_sample_negatives(key, index.shape[0], nce_k, n, labels=batch.labels,
                                        label_bank=bank)
    new_state["labels"] = bank
  else:
    neg = _crd_lib.crd_sample_negatives(key, index.shape[0], nce_k, n)
  loss, (z_s, z_t) = _crd_lib.crd(e_s, e_t, mem_s, mem_t, index, neg, nce_t=nce_t,
                                  num_data=n, z_s=state["z_s"], z_t=state["z_t"],
                                  return_z=True)
  new_state.update(
      memory_s=_crd_lib.crd_update_memory(mem_s, e_s, index, momentum=nce_m),
      memory_t=_crd_lib.crd_update_memory(mem_t, e_t, index, momentum=nce_m),
      z_s=z_s.astype(state["z_s"].dtype), z_t=z_t.astype(state["z_t"].dtype), rng=rng)
  return loss, new_state


def _crd_queue_init_state(num_examples, s_shapes, t_shapes, rng, *, feat_dim=128,
                          queue_size=16384, nce_t=0.07, num_data=0, **hp):
  _check_crd("crd_queue", feat_dim, nce_t,
             {"queue_size": (queue_size, 1), "num_data": (num_data, 0)})
  n = int(num_data) or int(num_examples)
  if n < 1:
    raise ValueError("term crd_queue: num_data (or the dataset index space) must be >= 1.")
  k_s, k_t = _jax.random.split(_jax.random.fold_in(rng, 0))
  return {
      "queue_s": _crd_lib.crd_init_memory(k_s, int(queue_size), int(feat_dim)),
      "queue_t": _crd_lib.crd_init_memory(k_t, int(queue_size), int(feat_dim)),
      "ptr": jnp.zeros((), jnp.int32),
      "z_s": jnp.full((), -1.0, jnp.float32),
      "z_t": jnp.full((), -1.0, jnp.float32),
      "num_data": jnp.full((), float(n), jnp.float32),
  }


@register_term("crd_queue", student_taps=("pooled",), teacher_taps=("pooled",),
               connector_fn=_pooled_pair_connector("crd_queue", normalize=True),
               init_state=_crd_queue_init_state)
def crd_queue_term(s, t, batch, *, connector=None, state=None, feat_dim: int = 128,
                   queue_size: int = 16384, nce_t: float = 0.07, num_data: int = 0):
  """CRD with MoCo-style FIFO queues instead of per-example memory banks, for datasets whose
  N × feat_dim banks do not fit (RepDistiller#40). State: ``queue_s``, ``queue_t``
  (``queue_size`` × feat_dim, detached past embeddings), ``ptr``, ``z_s``/``z_t`` (fixed from the
  first batch) and ``num_data`` (the noise prior 1/N; 0 = the dataset index space). Per anchor:
  positive = the other network's current (detached) embedding of the same image, negatives =
  the whole other queue; NCE as CRD (``kdjax.losses.crd_queue``). After scoring, the batch is
  enqueued. Not the reference algorithm and not behind any published number."""
  del batch, feat_dim, queue_size, num_data
  e_s, e_t = connector(s.taps["pooled"], t.taps["pooled"])
  loss, (z_s, z_t) = _crd_lib.crd_queue(e_s, e_t, state["queue_s"], state["queue_t"],
                                        nce_t=nce_t, num_data=state["num_data"],
                                        z_s=state["z_s"], z_t=state["z_t"], return_z=True)
  q_s, ptr = _crd_lib.crd_enqueue(state["queue_s"], e_s, state["ptr"])
  q_t, _ = _crd_lib.crd_enqueue(state["queue_t"], e_t, state["ptr"])
  return loss, dict(state, queue_s=q_s, queue_t=q_t, ptr=ptr,
                    z_s=z_s.astype(state["z_s"].dtype), z_t=z_t.astype(state["z_t"].dtype))


# ---- ITRD ----------------------------------------------------------------------------------------
def _itrd_connector(s_shapes, t_shapes, *, corr_weight=2.0, mi_weight=1.0, alpha=1.5):
  _check_num("itrd", "alpha", alpha, lo=0, lo_open=True)
  _check_num("itrd", "corr_weight", corr_weight, lo=0)
  _check_num("itrd", "mi_weight", mi_weight, lo=0)
  ss = _tap_shape(s_shapes, "pooled", "student", "itrd")
  ts = _tap_shape(t_shapes, "pooled", "teacher", "itrd")
  return _conn.LinearEmbed(int(ts[-1])), (ss,)


@register_term("itrd", student_taps=("pooled",), teacher_taps=("pooled",),
               connector_fn=_itrd_connector)
def itrd_term(s, t, batch, *, connector=None, corr_weight: float = 2.0, mi_weight: float = 1.0,
              alpha: float = 1.5):
  """ITRD (Miles et al., BMVC 2022; zkxufo/TTM ``ITLoss``): ``λ_corr·L_corr + λ_mutual·L_mi`` on
  the ``pooled`` features, the student mapped to the teacher's width by a trainable linear
  ``Embed`` (the connector). zkxufo/TTM runs it on ``preact=True`` features; ``pooled`` is the
  same tensor for every kdjax model (pooling happens after the last ReLU)."""
  del batch
  f_s = s.taps["pooled"]
  return losses.itrd(f_s, connector(f_s), t.taps["pooled"], corr_weight=corr_weight,
                     mi_weight=mi_weight, alpha=alpha)


# ---- SSKD ----------------------------------------------------------------------------------------
from kdjax.data import augment as _augment  # noqa: E402
from kdjax.losses import selfsup as _selfsup  # noqa: E402
from kdjax.methods.base import ViewSpec  # noqa: E402

# SSKD's four rotations (0/90/180/270 degrees) of every training image; one object, so that every
# SSKD term of a method declares the same view set.
ROTATION_VIEWS = ViewSpec(
    "rotation", 4, lambda images, rng, transform: _augment.rotation_views(images, rng, transform))


class ProjHead(_nn.Module):
  """SSKD's projection head (``wrapper.proj_head``): ``Linear(d, d) → ReLU → Linear(d, d)`` on
  the pooled feature, PyTorch default init. Parameters ``fc1/``, ``fc2/``."""
  dim: int

  @_nn.compact
  def __call__(self, x):
    for i in (1, 2):
      x = _nn.Dense(self.dim, kernel_init=_conn.torch_default_kernel,
                    bias_init=_conn.torch_default_bias(self.dim), name=f"fc{i}")(x)
      if i == 1:
        x = _nn.relu(x)
    return x


class SSKDHeads(_nn.Module):
  """The student's and the teacher's SSKD projection heads (``student_head/``,
  ``teacher_head/``): ``__call__(f_s, f_t)`` -> both representations; ``teacher(f_t)`` -> the
  teacher's alone (its self-supervision pre-training, term ``sskd_head``). The teacher head is
  trained in the init stage and frozen afterwards (``configs/cifar100/sskd.py``)."""
  s_dim: int
  t_dim: int

  def setup(self):
    self.student_head = ProjHead(self.s_dim)
    self.teacher_head = ProjHead(self.t_dim)

  def __call__(self, f_s, f_t):
    return self.student_head(f_s), self.teacher_head(f_t)

  def teacher(self, f_t):
    return self.teacher_head(f_t)


def _sskd_heads(term):
  def connector_fn(s_shapes, t_shapes, **hp):
    for name in ("temperature",):
      if name in hp:
        _check_num(term, name, hp[name], lo=0, lo_open=True)
    if "ratio" in hp:
      _check_num(term, "ratio", hp["ratio"], lo=0)
      if hp["ratio"] > 1:
        raise ValueError(f"term {term}: ratio must be in [0, 1], got {hp['ratio']!r}.")
    ss = _tap_shape(s_shapes, "pooled", "student", term)
    ts = _tap_shape(t_shapes, "pooled", "teacher", term)
    return SSKDHeads(int(ss[-1]), int(ts[-1])), (ss, ts)
  return connector_fn


@register_term("sskd_tf", views=ROTATION_VIEWS)
def sskd_tf_term(s, t, batch, *, temperature: float = 4.0, ratio: float = 1.0):
  """SSKD's KD on the rotated views (xuguodong03/SSKD ``loss3``, weight 2.7):
  ``T² · batchmean_kept KL(p_t^T ‖ p_s^T)`` over the 3 rotated views of every example, a view
  kept when the teacher ranks its label first, or among the ``ratio`` share of wrong views with
  the best label rank (:func:`kdjax.losses.selfsup.sskd_transform_kd`). Trains on the four
  rotations (the method's CE and other terms see the normal view)."""
  _check_num("sskd_tf", "temperature", temperature, lo=0, lo_open=True)
  _check_num("sskd_tf", "ratio", ratio, lo=0)
  return _selfsup.sskd_transform_kd(s.logits, t.logits, batch.labels, temperature=temperature,
                                    ratio=ratio, num_views=ROTATION_VIEWS.num_views)


@register_term("sskd_ss", student_taps=("pooled",), teacher_taps=("pooled",),
               connector_fn=_sskd_heads("sskd_ss"), views=ROTATION_VIEWS)
def sskd_ss_term(s, t, batch, *, connector=None, temperature: float = 0.5, ratio: float = 0.75):
  """SSKD's self-supervision KD (xuguodong03/SSKD ``loss4``, weight 10): cosine similarities of
  each rotated view's projection to the batch's normal-view projections, student vs. teacher,
  ``T² · batchmean_kept KL`` with error-level filtering (``ratio``)
  (:func:`kdjax.losses.selfsup.sskd_similarity`). Connector :class:`SSKDHeads`: the student head
  trains with the student; the teacher head comes from the init stage (term ``sskd_head`` under
  the same key) and is frozen (``method.trainable = 'student+connectors/<key>/student_head'``)."""
  del batch
  r_s, r_t = connector(s.taps["pooled"], t.taps["pooled"])
  return _selfsup.sskd_similarity(r_s, r_t, temperature=temperature, ratio=ratio,
                                  num_views=ROTATION_VIEWS.num_views)


@register_term("sskd_head", teacher_taps=("pooled",), connector_fn=_sskd_heads("sskd_head"),
               views=ROTATION_VIEWS)
def sskd_head_term(s, t, batch, *, connector=None):
  """SSKD's teacher self-supervision head pre-training (``student.py``, 60 epochs, backbone
  frozen, eval mode): each rotated view's projection must find its own example's normal view
  among the batch, ``CE(cosine row, own index)`` (:func:`kdjax.losses.selfsup.sskd_head_ce`).
  Reads no student output; its connector is the ``sskd_ss`` term's :class:`SSKDHeads` (same key:
  one shared module), of which it applies the teacher head only."""
  del s, batch
  r_t = connector(t.taps["pooled"], method="teacher")
  return _selfsup.sskd_head_ce(r_t, num_views=ROTATION_VIEWS.num_views)
