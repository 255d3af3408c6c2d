"""L∞ adversarial attacks (FGSM, I-FGSM/PGD) and black-box transfer between models.

Ojha et al. (NeurIPS 2023), methods.md §6.3.2: craft iterative-FGSM examples against the
**teacher** (k = 5 steps, each clipped to ``[I − ε, I + ε]``), keep the images that flip the
teacher, and report the fooling rate of each student on them (:func:`transfer_success`).

* FGSM (Goodfellow et al. 2015): ``x' = x + ε · sign(∇_x CE(f(x), y))``.
* PGD (Madry et al. 2018) / I-FGSM (Kurakin et al. 2017):
  ``x_{t+1} = Π_{‖x' − x‖∞ ≤ ε}(x_t + α · sign(∇ CE))``; with ``random_start=False`` (the default)
  this is I-FGSM / BIM, with ``random_start=True`` Madry's PGD (uniform start in the ε-ball).

**Units.** kdjax models take normalised images ``(x_pix − mean) / std``. By default ``eps`` and
``step_size`` are in those normalised units. Pass ``pixel_std`` (per-channel std, ``[0, 1]`` pixel
units, e.g. ``info.std``) to give ``eps`` / ``step_size`` in ``[0, 1]`` pixel units instead (e.g.
``8/255``): the per-channel bound in model space becomes ``eps / std_c`` (and each step
``step_size / std_c``). Pass ``pixel_mean`` as well to also clip the adversarial image to the
valid pixel box ``[0, 1]`` (``[(0 − mean_c)/std_c, (1 − mean_c)/std_c]`` in model space).

**Models.** ``model`` is a kdjax Flax module applied as ``model.apply(variables, x, train=False)``
(the logits are the first output); with ``variables=None``, ``model`` is any hashable callable
``x -> logits`` or ``x -> (logits, ...)``. All attacks are jittable (``eps`` / ``step_size`` may be
traced; ``steps``, ``random_start``, ``pixel_std`` and ``pixel_mean`` are static) and run as one
jitted kernel keyed on the (static) model, so sweeps over checkpoints and ε grids compile once.
"""
from __future__ import annotations

import functools
from typing import Dict, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["fgsm", "ifgsm", "pgd", "attack_sweep", "transfer_success", "logits_fn"]


def logits_fn(model, variables=None):
    """``x -> logits`` for a kdjax module + variables (``train=False``) or a plain callable."""
    if variables is None:
        if not callable(model):
            raise ValueError("with variables=None, model must be a callable x -> logits")
        f = model
    else:
        def f(x):
            return model.apply(variables, x, train=False)

    def g(x):
        out = f(x)
        return out[0] if isinstance(out, (tuple, list)) else out

    return g


def _scale_and_box(x, pixel_std, pixel_mean):
    """Per-channel factor pixel->model units, and the valid box in model space (or None)."""
    c = x.shape[-1]
    if pixel_std is None:
        if pixel_mean is not None:
            raise ValueError("pixel_mean needs pixel_std")
        return jnp.ones((c,), x.dtype), None
    std = jnp.broadcast_to(jnp.asarray(pixel_std, x.dtype), (c,))
    scale = 1.0 / std
    if pixel_mean is None:
        return scale, None
    mean = jnp.broadcast_to(jnp.asarray(pixel_mean, x.dtype), (c,))
    return scale, ((0.0 - mean) / std, (1.0 - mean) / std)


def _static_vec(v):
    if v is None:
        return None
    return tuple(float(a) for a in np.ravel(np.asarray(v, dtype=np.float64)))


@functools.partial(jax.jit, static_argnames=("model", "steps", "random_start", "pixel_std",
                                             "pixel_mean"))
def _pgd_kernel(model, variables, x, y, eps, step_size, rng, *, steps, random_start, pixel_std,
                pixel_mean):
    f = logits_fn(model, variables)
    scale, box = _scale_and_box(x, pixel_std, pixel_mean)
    bound = eps.astype(x.dtype) * scale
    alpha = step_size.astype(x.dtype) * scale

    def project(delta):
        delta = jnp.clip(delta, -bound, bound)
        if box is not None:
            delta = jnp.clip(x + delta, box[0], box[1]) - x
        return delta

    def loss(xa):
        logp = jax.nn.log_softmax(f(xa), axis=-1)
        return -jnp.sum(jnp.take_along_axis(logp, y[:, None], axis=-1))

    grad = jax.grad(loss)
    if random_start:
        delta = jax.random.uniform(rng, x.shape, x.dtype, -1.0, 1.0) * bound
    else:
        delta = jnp.zeros_like(x)
    delta = project(delta)

    def body(_, d):
        return project(d + alpha * jnp.sign(grad(x + d)))

    delta = jax.lax.fori_loop(0, steps, body, delta)
    return x + delta


def pgd(model, variables, x, y, *, eps, steps: int, step_size, rng=None,
        random_start: bool = False, pixel_std=None, pixel_mean=None) -> jax.Array:
    """L∞ projected gradient ascent on the cross-entropy (I-FGSM, or PGD with a random start).

    The work is one jitted kernel with ``model`` (hashable Flax module or callable), ``steps``,
    ``random_start``, ``pixel_std`` and ``pixel_mean`` static, so repeated calls with the same
    model and shapes (e.g. over checkpoints or an ε grid) compile once.

    Args:
      model: kdjax module (with ``variables``) or callable ``x -> logits`` (``variables=None``).
      variables: model variables, or None.
      x: ``(B, H, W, C)`` normalised clean images.
      y: ``(B,)`` integer labels whose cross-entropy is maximised (untargeted attack).
      eps: L∞ radius (normalised units, or ``[0, 1]`` pixel units when ``pixel_std`` is given).
      steps: number of sign-gradient steps (static Python int, ``>= 0``).
      step_size: step ``α`` in the same units as ``eps``.
      rng: PRNG key for ``random_start``.
      random_start: start uniformly in the ε-ball (Madry et al.) instead of at ``x``.
      pixel_std: per-channel std making ``eps`` / ``step_size`` pixel-unit (see module docstring).
      pixel_mean: per-channel mean; with ``pixel_std`` also clips to the valid pixel box.

    Returns:
      ``(B, H, W, C)`` adversarial images with ``|x' − x| ≤ eps / std_c`` per channel.
    """
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 0:
        raise ValueError(f"steps must be a non-negative Python int, got {steps!r}")
    if random_start and rng is None:
        raise ValueError("random_start=True needs rng")
    if pixel_mean is not None and pixel_std is None:
        raise ValueError("pixel_mean needs pixel_std")
    if variables is None and not callable(model):
        raise ValueError("with variables=None, model must be a callable x -> logits")
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise ValueError(f"x must be float (normalised images), got {x.dtype}")
    y = jnp.asarray(y).astype(jnp.int32)
    rng = jax.random.PRNGKey(0) if rng is None else rng
    return _pgd_kernel(model, variables, x, y, jnp.asarray(eps, x.dtype),
                       jnp.asarray(step_size, x.dtype), rng, steps=steps,
                       random_start=bool(random_start), pixel_std=_static_vec(pixel_std),
                       pixel_mean=_static_vec(pixel_mean))


def fgsm(model, variables, x, y, *, eps, pixel_std=None, pixel_mean=None) -> jax.Array:
    """Fast gradient sign method (Goodfellow et al. 2015): ``x + ε · sign(∇_x CE)``.

    One :func:`pgd` step of size ``eps`` from ``x``; same arguments and units.
    """
    return pgd(model, variables, x, y, eps=eps, steps=1, step_size=eps,
               pixel_std=pixel_std, pixel_mean=pixel_mean)


def ifgsm(model, variables, x, y, *, eps, steps: int = 5, step_size=None, pixel_std=None,
          pixel_mean=None) -> jax.Array:
    """Iterative FGSM (Kurakin et al. 2017) with Ojha et al.'s defaults: 5 steps of ``ε / 5``.

    ``step_size=None`` means ``eps / steps`` (methods.md §6.3.2 design decision).
    """
    if step_size is None:
        step_size = eps / max(steps, 1)
    return pgd(model, variables, x, y, eps=eps, steps=steps, step_size=step_size,
               pixel_std=pixel_std, pixel_mean=pixel_mean)


@functools.partial(jax.jit, static_argnames=("model",))
def _predict(model, variables, x):
    return jnp.argmax(logits_fn(model, variables)(x), axis=-1)


@functools.partial(jax.jit, static_argnames=("model", "zero", "steps", "fgsm", "pixel_std",
                                             "pixel_mean"))
def _sweep_kernel(model, variables, x, y, eps, step_size, *, zero, steps, fgsm, pixel_std,
                  pixel_mean):
  f = logits_fn(model, variables)
  scale, box = _scale_and_box(x, pixel_std, pixel_mean)

  def loss(xa):
    logp = jax.nn.log_softmax(f(xa), axis=-1)
    return -jnp.sum(jnp.take_along_axis(logp, y[:, None], axis=-1))

  grad = jax.grad(loss)

  def project(delta, bound):
    delta = jnp.clip(delta, -bound, bound)
    if box is not None:
      delta = jnp.clip(x + delta, box[0], box[1]) - x
    return delta

  # The start of every attack (no random start): project(0) = clip(x, box) - x for any ε, so
  # the first gradient is shared by all radii and by FGSM.
  d0 = project(jnp.zeros_like(x), jnp.zeros((), x.dtype))
  g0 = jnp.sign(grad(x + d0))

  def one(args):  # one radius ε > 0: (PGD image, FGSM image)
    e, s = args
    bound, alpha = e * scale, s * scale
    f = x + project(d0 + bound * g0, bound) if fgsm else x
    if steps == 0:
      return x + d0, f

    def body(_, d):
      return project(d + alpha * jnp.sign(grad(x + d)), bound)

    d1 = project(d0 + alpha * g0, bound)
    return x + jax.lax.fori_loop(1, steps, body, d1), f

  nz = [i for i, z in enumerate(zero) if not z]
  if nz:  # the radii one after another (lax.map): one compiled attack body for all of them
    idx = jnp.asarray(nz)
    p_nz, f_nz = jax.lax.map(one, (eps[idx], step_size[idx]))
  pgd_out, fgsm_out = [], []
  for i, is_zero in enumerate(zero):
    if is_zero:  # ε = 0: every step projects back onto d0 (bit-identical to running them)
      pgd_out.append(x + d0)
      fgsm_out.append(x + d0)
    else:
      pgd_out.append(p_nz[nz.index(i)])
      fgsm_out.append(f_nz[nz.index(i)])
  return jnp.stack(pgd_out), (jnp.stack(fgsm_out) if fgsm else None)


def attack_sweep(model, variables, x, y, *, eps_list: Sequence[float], steps: int,
                 step_size_frac: float, fgsm: bool = True, pixel_std=None, pixel_mean=None):
  """I-FGSM / PGD (no random start) at every radius of ``eps_list`` and FGSM, in one kernel.

  Equals :func:`pgd` with ``step_size = eps * step_size_frac`` and :func:`fgsm` at each ``eps``
  (same arithmetic; ``tests/test_analysis.py`` checks it), computed with less work: every attack
  starts from the same point, so the first sign-gradient is computed once for all radii and
  for FGSM, and ``eps = 0`` needs no gradient at all (each step projects back onto the start).
  ``model`` and the static arguments key one compiled function for a whole evaluation set.

  Args:
    model, variables, x, y, pixel_std, pixel_mean: as :func:`pgd`.
    eps_list: radii (units as in :func:`pgd`).
    steps: PGD steps (``>= 0``).
    step_size_frac: PGD step as a fraction of each ``eps``.
    fgsm: also return FGSM images.

  Returns:
    ``(pgd_images, fgsm_images)``: ``(E, B, H, W, C)`` each (``fgsm_images`` None when
    ``fgsm=False``).
  """
  if not isinstance(steps, int) or isinstance(steps, bool) or steps < 0:
    raise ValueError(f"steps must be a non-negative Python int, got {steps!r}")
  if pixel_mean is not None and pixel_std is None:
    raise ValueError("pixel_mean needs pixel_std")
  x = jnp.asarray(x)
  if not jnp.issubdtype(x.dtype, jnp.floating):
    raise ValueError(f"x must be float (normalised images), got {x.dtype}")
  y = jnp.asarray(y).astype(jnp.int32)
  eps_list = [float(e) for e in eps_list]
  if any(not e >= 0 for e in eps_list):
    raise ValueError(f"eps_list must hold radii >= 0, got {eps_list}")
  # The same float32 scalars pgd() builds: eps, and the step eps * frac rounded once.
  eps = jnp.stack([jnp.asarray(e, x.dtype) for e in eps_list])
  step = jnp.stack([jnp.asarray(e * float(step_size_frac), x.dtype) for e in eps_list])
  return _sweep_kernel(model, variables, x, y, eps, step, zero=tuple(e == 0 for e in eps_list),
                       steps=steps, fgsm=bool(fgsm), pixel_std=_static_vec(pixel_std),
                       pixel_mean=_static_vec(pixel_mean))


def _safe_rate(num, den):
    return float(num / den) if den > 0 else float("nan")


def transfer_success(source_model, source_variables, target_model, target_variables, x, y,
                     eps_list: Sequence[float], *, steps: int = 5, step_size_frac: Optional[float] = None,
                     random_start: bool = False, rng=None, pixel_std=None, pixel_mean=None,
                     batch_size: Optional[int] = None) -> Dict[str, list]:
    """Crafts attacks on the source model and measures how they transfer to the target model.

    For each ε, adversarial images are made by :func:`pgd` on the **source** (``steps`` steps of
    ``step_size_frac · ε``; default ``1/steps``, i.e. Ojha et al.'s I-FGSM) and both models are
    evaluated on them. Reported per ε (lists aligned with ``eps``):

    * ``source_error`` / ``target_error``: error rate on the adversarial images (all examples);
    * ``source_fooling_rate`` / ``target_fooling_rate``: fraction of the examples the model
      classifies correctly when clean that it misclassifies when attacked;
    * ``transfer_fooling_rate``: Ojha et al.'s metric: among examples that both models get right
      when clean **and** that fool the source, the fraction that also fool the target (NaN when
      there are none);
    * ``num_source_fooled``: size of that filtered set.

    Clean accuracies are returned as ``source_clean_accuracy`` / ``target_clean_accuracy``.

    Args:
      source_model, source_variables: the attacked model (e.g. the teacher); see :func:`pgd`.
      target_model, target_variables: the evaluated model (e.g. a student).
      x: ``(N, H, W, C)`` normalised images.
      y: ``(N,)`` labels.
      eps_list: radii (units as in :func:`pgd`).
      steps: attack steps.
      step_size_frac: step size as a fraction of ε (default ``1 / steps``).
      random_start: PGD random start (needs ``rng``; one key per batch is folded in).
      rng: PRNG key.
      pixel_std, pixel_mean: see :func:`pgd`.
      batch_size: examples per attack batch (default: all at once).

    Returns:
      Dict of lists of Python floats (plus ``eps``).
    """
    x = jnp.asarray(x)
    y = np.asarray(y).astype(np.int32)
    n = x.shape[0]
    bs = n if batch_size is None else int(batch_size)
    frac = (1.0 / max(steps, 1)) if step_size_frac is None else float(step_size_frac)
    def pred_s(xb):
        return _predict(source_model, source_variables, xb)

    def pred_t(xb):
        return _predict(target_model, target_variables, xb)

    def attack(xb, yb, eps, key):
        return pgd(source_model, source_variables, xb, yb, eps=eps, steps=steps,
                   step_size=eps * frac, rng=key, random_start=random_start,
                   pixel_std=pixel_std, pixel_mean=pixel_mean)

    def batched(fn, *arrays):
        return np.concatenate([np.asarray(fn(*(a[i:i + bs] for a in arrays)))
                               for i in range(0, n, bs)])

    clean_s = batched(pred_s, x) == y
    clean_t = batched(pred_t, x) == y
    key = jax.random.PRNGKey(0) if rng is None else rng
    out = {k: [] for k in ("eps", "source_error", "target_error", "source_fooling_rate",
                           "target_fooling_rate", "transfer_fooling_rate", "num_source_fooled")}
    for eps in eps_list:
        adv_s, adv_t = [], []
        for j, i in enumerate(range(0, n, bs)):
            xa = attack(x[i:i + bs], y[i:i + bs], float(eps), jax.random.fold_in(key, j))
            adv_s.append(np.asarray(pred_s(xa)))
            adv_t.append(np.asarray(pred_t(xa)))
        ok_s = np.concatenate(adv_s) == y
        ok_t = np.concatenate(adv_t) == y
        fooled = clean_s & clean_t & ~ok_s
        out["eps"].append(float(eps))
        out["source_error"].append(float(np.mean(~ok_s)))
        out["target_error"].append(float(np.mean(~ok_t)))
        out["source_fooling_rate"].append(_safe_rate(np.sum(clean_s & ~ok_s), np.sum(clean_s)))
        out["target_fooling_rate"].append(_safe_rate(np.sum(clean_t & ~ok_t), np.sum(clean_t)))
        out["transfer_fooling_rate"].append(_safe_rate(np.sum(fooled & ~ok_t), np.sum(fooled)))
        out["num_source_fooled"].append(float(np.sum(fooled)))
    out["source_clean_accuracy"] = float(np.mean(clean_s))
    out["target_clean_accuracy"] = float(np.mean(clean_t))
    return out
