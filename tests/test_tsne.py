"""Exact t-SNE and the ``tsne`` probe (kdjax/analysis/probes/tsne.py): the perplexity bisection,
the KL gradient against autodiff, separated Gaussian clusters stay separated, determinism with a
seed, and the probe on a Context of tiny CNNs."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import kdjax
from kdjax import data as kdata
from kdjax.analysis.probes import base
from kdjax.analysis.probes import tsne as T
from kdjax.errors import UserError


def _clusters(k=5, per=40, dim=20, sep=8.0, seed=0):
  rs = np.random.RandomState(seed)
  means = sep * rs.randn(k, dim)  # centres ~ sep * sqrt(2 dim) apart, unit noise: separated
  labels = np.repeat(np.arange(k), per)
  return means[labels] + rs.randn(k * per, dim), labels


def test_conditional_rows_have_the_requested_perplexity():
  x, _ = _clusters(k=3, per=30)
  for perp in (5.0, 20.0):
    p = T.conditional_probabilities(x, perp)
    assert np.all(np.diag(p) == 0) and np.allclose(p.sum(1), 1.0, atol=1e-12)
    h = -np.sum(np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0), axis=1)
    # bisection tolerance 1e-5 nats
    np.testing.assert_allclose(h, np.log(perp), atol=2e-5)
  pj = T.joint_probabilities(x, 10.0)
  np.testing.assert_allclose(pj, pj.T, atol=0)
  assert abs(pj.sum() - 1.0) < 1e-6 and np.all(np.diag(pj) == 0)
  with pytest.raises(UserError, match="perplexity"):
    T.conditional_probabilities(x[:10], 30.0)


def test_gradient_is_the_gradient_of_kl():
  x, _ = _clusters(k=3, per=10, dim=5)
  p = jnp.asarray(T.joint_probabilities(x, 5.0), jnp.float32)
  y = jnp.asarray(np.random.RandomState(1).randn(30, 2), jnp.float32)

  def kl(y):
    sq = jnp.sum((y[:, None] - y[None]) ** 2, -1)
    w = (1.0 / (1.0 + sq)) * (1.0 - jnp.eye(len(y)))
    q = w / jnp.sum(w)
    return jnp.sum(jnp.where(p > 0, p * jnp.log(p / jnp.where(q > 0, q, 1.0)), 0.0))

  g, _ = T._kl_grad(p, y)
  ref = jax.grad(kl)(y)
  # float32 sums of ~900 terms of size ~1e-3: agreement to ~1e-6 of the gradient's scale
  np.testing.assert_allclose(g, ref, atol=1e-5 * float(jnp.max(jnp.abs(ref))) + 1e-7)


def test_separated_clusters_stay_separated_and_the_map_is_seeded():
  x, labels = _clusters()
  emb, kl = T.tsne(x, perplexity=20.0, iterations=400, seed=0)
  assert emb.shape == (200, 2) and np.all(np.isfinite(emb)) and kl > 0
  assert T.knn_agreement(emb, labels, 10) > 0.9
  # the measure can fail: the random initial map and shuffled labels sit near chance (1/5)
  y0 = np.random.default_rng(0).standard_normal((200, 2))
  assert T.knn_agreement(y0, labels, 10) < 0.4
  assert T.knn_agreement(emb, np.random.RandomState(0).permutation(labels), 10) < 0.4
  again, kl2 = T.tsne(x, perplexity=20.0, iterations=400, seed=0)
  np.testing.assert_array_equal(emb, again)
  assert kl == kl2
  other, _ = T.tsne(x, perplexity=20.0, iterations=400, seed=1)
  assert not np.allclose(emb, other)
  pca, _ = T.tsne(x, perplexity=20.0, iterations=400, init="pca")
  assert T.knn_agreement(pca, labels, 10) > 0.9
  with pytest.raises(UserError):
    T.tsne(np.zeros((T.MAX_POINTS + 1, 2)))
  with pytest.raises(UserError):
    T.tsne(x, init="spectral")


def test_final_kl_matches_scikit_learn_exact():
  # Golden: scikit-learn 1.9.1 TSNE(method='exact', perplexity=20, max_iter=1000,
  # min_grad_norm=0, n_iter_without_progress=10000, init=<the same N(0, 1e-4²) map as seed 0>)
  # on these clusters (scratch venv, not a kdjax dependency): kl_divergence_ = 0.52053. Runs in
  # float64 there and float32 here reach slightly different optima (0.1% apart, measured); 1%
  # still fails an optimiser that keeps momentum and gains across the exaggeration switch (0.544).
  x, _ = _clusters(sep=1.0)
  _, kl = T.tsne(x, perplexity=20.0, iterations=1000, seed=0)
  assert abs(kl - 0.52053) < 0.01 * 0.52053


def test_knn_agreement_known_answer():
  x = np.array([[0.0], [0.1], [5.0], [5.1], [9.0], [9.3]])
  labels = np.array([0, 0, 1, 1, 0, 1])
  assert T.knn_agreement(x, labels, 1) == 4 / 6  # the pair (9.0, 9.3) disagrees
  # 2-NN: 0.5 for every point but 9.0 (neighbours 9.3 and 5.1, both label 1: 0)
  assert abs(T.knn_agreement(x, labels, 2) - 2.5 / 6) < 1e-12
  with pytest.raises(UserError):
    T.knn_agreement(x, labels, 6)


def _run(name, role, seed):
  model = kdjax.models.get("tiny_cnn", num_classes=4, width=8)
  variables = model.init(jax.random.PRNGKey(seed), jnp.zeros((1, 8, 8, 3)), train=False)
  return base.Run(name, role, f"/nowhere/{name}", model, variables, {"num_classes": 4})


def test_tsne_probe_on_tiny_models(tmp_path):
  rs = np.random.RandomState(0)
  labels = np.arange(48) % 4
  images = rs.randint(0, 256, (48, 8, 8, 3)).astype(np.uint8)
  teacher = _run("teacher", "teacher", 0)
  self_kd = base.Run("self", "distilled", "/x", teacher.module, teacher.variables, teacher.meta)
  ctx = base.Context(
    teacher=teacher,
    students=[self_kd, _run("independent", "independent", 1)],
    info=kdata.info("cifar10"),
    images=images,
    labels=labels,
    batch_size=16,
    out_dir=str(tmp_path),
    seed=0,
    num_examples=48,
  )
  probe = T.TSNE("tsne", dict(num_points=40, max_classes=3, perplexity=5.0, iterations=100, knn=3))
  res = probe.compute(ctx)
  assert res["num_points"] == 36 and res["classes"] == [0, 1, 2]  # 3 classes x 12 examples
  m = res["models"]
  assert set(m) == {"teacher", "self", "independent"}
  # the same model with the same seed gives the same map
  np.testing.assert_array_equal(probe._maps["teacher"], probe._maps["self"])
  assert m["self"]["knn_agreement_tsne"] == m["teacher"]["knn_agreement_tsne"]
  assert all(0.0 <= v["knn_agreement_tsne"] <= 1.0 for v in m.values())
  assert m["teacher"]["feature_dim"] == 32  # tiny_cnn width 8: its last stage has 4 x 8 channels
  probe.figures(ctx, res)
  assert (tmp_path / "tsne.png").stat().st_size > 0 and (tmp_path / "tsne.npz").exists()
  md = probe.markdown(ctx, res)
  assert md[0].startswith("| model") and "![t-SNE](tsne.png)" in md
  with pytest.raises(UserError):
    T.TSNE("tsne", dict(num_points=T.MAX_POINTS + 1))
  with pytest.raises(UserError):
    T.TSNE("tsne", dict(perplexty=5.0))
