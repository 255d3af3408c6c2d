"""Linear centered kernel alignment (CKA) between two representations.

* :func:`linear_cka`: Kornblith et al. (ICML 2019), Eq. for the linear kernel,

      CKA(X, Y) = HSIC(K, L) / sqrt(HSIC(K, K) · HSIC(L, L)),   K = X Xᵀ,  L = Y Yᵀ,

  with the biased estimator ``HSIC_0(K, L) = tr(K H L H) / (n − 1)²`` (``H = I − 11ᵀ/n``); for linear
  kernels this equals ``‖Yᵀ_c X_c‖²_F / (‖Xᵀ_c X_c‖_F ‖Yᵀ_c Y_c‖_F)`` on column-centred features.
  With ``unbiased=True`` the unbiased estimator of Song et al. (2012) is used instead:

      HSIC_1(K, L) = [tr(K̃ L̃) + (1ᵀK̃1)(1ᵀL̃1) / ((n−1)(n−2)) − 2/(n−2) · 1ᵀ K̃ L̃ 1] / (n(n−3)),

  where ``K̃, L̃`` are ``K, L`` with zeroed diagonals (needs ``n ≥ 4``).
* :class:`CKAAccumulator`: the minibatch CKA of Nguyen, Raghu & Kornblith (ICLR 2021),

      CKA_mb = Σ_b HSIC_1(K_b, L_b) / sqrt(Σ_b HSIC_1(K_b, K_b) · Σ_b HSIC_1(L_b, L_b)),

  which runs on a full test set batch by batch with O(batch²) memory. It is a pytree: jit
  ``acc.update`` freely. Every batch must hold at least 4 examples (drop or merge a short last
  batch); batches should have equal sizes for the estimator's usual interpretation.

Features are flattened per example (``(n, ...) -> (n, d)``), so conv taps ``(n, H, W, C)`` compare
directly; the two representations may have different widths. Values are in ``[0, 1]`` for the
biased estimator; the unbiased one can be slightly negative for unrelated features. Both are
invariant to orthogonal transforms and isotropic scaling of either representation.
"""

from __future__ import annotations

import flax.struct
import jax
import jax.numpy as jnp

__all__ = ["linear_cka", "gram_linear", "hsic_biased", "hsic_unbiased", "CKAAccumulator"]

_HI = jax.lax.Precision.HIGHEST


def _flatten(x) -> jax.Array:
  x = jnp.asarray(x)
  if x.ndim < 2:
    raise ValueError(f"expected (n, ...) features, got shape {x.shape}")
  x = x.reshape(x.shape[0], -1)
  return x.astype(jnp.result_type(x.dtype, jnp.float32))


def gram_linear(x) -> jax.Array:
  """Linear Gram matrix ``X Xᵀ`` of per-example flattened features ``(n, ...) -> (n, n)``."""
  x = _flatten(x)
  return jnp.matmul(x, x.T, precision=_HI)


def hsic_biased(k: jax.Array, l: jax.Array) -> jax.Array:
  """Biased HSIC ``tr(K H L H) / (n − 1)²`` (Gretton et al. 2005) of two ``(n, n)`` Gram matrices."""
  n = k.shape[0]
  kc = k - jnp.mean(k, 0, keepdims=True) - jnp.mean(k, 1, keepdims=True) + jnp.mean(k)
  lc = l - jnp.mean(l, 0, keepdims=True) - jnp.mean(l, 1, keepdims=True) + jnp.mean(l)
  return jnp.sum(kc * lc) / (n - 1) ** 2


def hsic_unbiased(k: jax.Array, l: jax.Array) -> jax.Array:
  """Unbiased HSIC_1 of Song et al. (2012), as used by Nguyen et al. (2021); needs ``n ≥ 4``."""
  n = k.shape[0]
  if n < 4:
    raise ValueError(f"the unbiased HSIC estimator needs n >= 4 examples, got {n}")
  eye = jnp.eye(n, dtype=bool)
  kt = jnp.where(eye, 0.0, k)
  lt = jnp.where(eye, 0.0, l)
  kl1 = jnp.matmul(kt, jnp.sum(lt, axis=1), precision=_HI)  # K̃ L̃ 1
  term1 = jnp.sum(kt * lt)  # tr(K̃ L̃) (L̃ symmetric)
  term2 = jnp.sum(kt) * jnp.sum(lt) / ((n - 1) * (n - 2))
  term3 = 2.0 / (n - 2) * jnp.sum(kl1)
  return (term1 + term2 - term3) / (n * (n - 3))


def linear_cka(x, y, *, unbiased: bool = False) -> jax.Array:
  """Linear CKA between two representations of the same ``n`` examples (Kornblith et al. 2019).

  Args:
    x: ``(n, ...)`` features of model A (flattened per example).
    y: ``(n, ...)`` features of model B.
    unbiased: use the unbiased HSIC_1 estimator (Song et al. 2012) instead of the biased one.

  Returns:
    Scalar CKA (1 for identical representations up to orthogonal transform and scaling).
  """
  k, l = gram_linear(x), gram_linear(y)
  if k.shape != l.shape:
    raise ValueError(
      f"x and y must hold the same number of examples, got {k.shape[0]} and {l.shape[0]}"
    )
  hsic = hsic_unbiased if unbiased else hsic_biased
  return hsic(k, l) / jnp.sqrt(hsic(k, k) * hsic(l, l))


@flax.struct.dataclass
class CKAAccumulator:
  """Minibatch linear CKA (Nguyen et al. 2021): running sums of unbiased HSIC_1 terms.

  Functional pytree: ``update`` returns a new accumulator, so it can be carried through
  ``jax.jit`` / ``lax.scan``::

      acc = CKAAccumulator.create()
      for xb, yb in batches:            # each batch: >= 4 examples
          acc = acc.update(xb, yb)
      cka = acc.result()

  Attributes:
    hsic_xy: ``Σ_b HSIC_1(K_b, L_b)``.
    hsic_xx: ``Σ_b HSIC_1(K_b, K_b)``.
    hsic_yy: ``Σ_b HSIC_1(L_b, L_b)``.
    num_batches: number of batches accumulated.
  """

  hsic_xy: jax.Array
  hsic_xx: jax.Array
  hsic_yy: jax.Array
  num_batches: jax.Array

  @classmethod
  def create(cls) -> "CKAAccumulator":
    """An empty accumulator (float32 sums)."""
    z = jnp.zeros((), jnp.float32)
    return cls(hsic_xy=z, hsic_xx=z, hsic_yy=z, num_batches=jnp.zeros((), jnp.int32))

  def update(self, x_batch, y_batch) -> "CKAAccumulator":
    """Adds one batch of paired features ``(b, ...)``, ``b ≥ 4``; returns the new accumulator."""
    k, l = gram_linear(x_batch), gram_linear(y_batch)
    if k.shape != l.shape:
      raise ValueError(
        f"batches must hold the same number of examples, got {k.shape[0]} and {l.shape[0]}"
      )
    return self.replace(
      hsic_xy=self.hsic_xy + hsic_unbiased(k, l).astype(self.hsic_xy.dtype),
      hsic_xx=self.hsic_xx + hsic_unbiased(k, k).astype(self.hsic_xx.dtype),
      hsic_yy=self.hsic_yy + hsic_unbiased(l, l).astype(self.hsic_yy.dtype),
      num_batches=self.num_batches + 1,
    )

  def result(self) -> jax.Array:
    """``Σ HSIC_xy / sqrt(Σ HSIC_xx · Σ HSIC_yy)`` (NaN before the first update)."""
    return self.hsic_xy / jnp.sqrt(self.hsic_xx * self.hsic_yy)
