"""Probes ``boundary`` (decision-boundary IoU on triplet planes), ``crop`` and ``shift``
(kdjax/analysis/probes/): the plane geometry against its definition, the triplet sampler, the
crop / shift kernels' known answers, and the probes on a Context of tiny random CNNs."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import kdjax
from kdjax import data as kdata
from kdjax.analysis.probes import base
from kdjax.analysis.probes import boundary as B
from kdjax.analysis.probes import crop as C
from kdjax.analysis.probes import shift as S
from kdjax.errors import UserError


def _vecs(seed=0, shape=(8, 8, 3)):
  rs = np.random.RandomState(seed)
  return [rs.randn(*shape).astype(np.float32) for _ in range(3)]


def test_plane_basis_is_orthonormal_and_places_the_three_points():
  x1, x2, x3 = _vecs()
  a, b, coords = (np.asarray(v) for v in B.plane_basis(*map(jnp.asarray, (x1, x2, x3))))
  np.testing.assert_allclose([np.sum(a * a), np.sum(b * b)], 1.0, rtol=1e-5)
  assert abs(float(np.sum(a * b))) < 1e-5
  for xi, (u, v) in zip((x1, x2, x3), coords):
    # |x| ~ 1 per entry, 192 entries: float32 rounding ~1e-6, so 1e-4 is loose
    np.testing.assert_allclose(x1 + u * a + v * b, xi, atol=1e-4)
  np.testing.assert_allclose(coords[:2], [[0, 0], [np.linalg.norm(x2 - x1), 0]], rtol=1e-5)


def test_plane_points_match_a_numpy_grid():
  x1, x2, x3 = _vecs(1, (4, 4, 1))
  pts = np.asarray(B.plane_points(*map(jnp.asarray, (x1, x2, x3)), resolution=5, margin=0.1))
  assert pts.shape == (25, 4, 4, 1)
  v1, v2 = (x2 - x1).ravel().astype(np.float64), (x3 - x1).ravel().astype(np.float64)
  a = v1 / np.linalg.norm(v1)
  w = v2 - (a @ v2) * a
  b = w / np.linalg.norm(w)
  cs = np.array([[0, 0], [np.linalg.norm(v1), 0], [a @ v2, b @ v2]])
  lo, hi = cs.min(0), cs.max(0)
  us = np.linspace(lo[0] - 0.1 * (hi - lo)[0], hi[0] + 0.1 * (hi - lo)[0], 5)
  vs = np.linspace(lo[1] - 0.1 * (hi - lo)[1], hi[1] + 0.1 * (hi - lo)[1], 5)
  ref = np.array([x1.ravel() + u * a + v * b for u in us for v in vs]).reshape(pts.shape)
  np.testing.assert_allclose(pts, ref, atol=1e-4)


def test_triplets_and_iou():
  labels = np.array([0, 0, 1, 1, 2, 2, 3])
  t = B.sample_triplets(labels, 20, seed=0)
  assert t.shape == (20, 3) and all(len(set(labels[r])) == 3 for r in t)
  np.testing.assert_array_equal(t, B.sample_triplets(labels, 20, seed=0))
  assert not np.array_equal(t, B.sample_triplets(labels, 20, seed=1))
  with pytest.raises(UserError):
    B.sample_triplets(np.array([0, 1, 0, 1]), 3, seed=0)
  assert B.prediction_iou([0, 1, 2, 3], [0, 1, 0, 3]) == 0.75


def _run(name, role, seed, width=8):
  model = kdjax.models.get("tiny_cnn", num_classes=5, width=width)
  variables = model.init(jax.random.PRNGKey(seed), jnp.zeros((1, 8, 8, 3)), train=False)
  return base.Run(name, role, f"/nowhere/{name}", model, variables, {"num_classes": 5})


@pytest.fixture(scope="module")
def ctx_parts():
  rs = np.random.RandomState(0)
  images = rs.randint(0, 256, (24, 8, 8, 3)).astype(np.uint8)
  labels = np.arange(24) % 5
  teacher = _run("teacher", "teacher", 0)
  self_kd = base.Run(
    "self", "distilled", "/nowhere/self", teacher.module, teacher.variables, teacher.meta
  )
  ind = _run("independent", "independent", 1)
  return images, labels, teacher, [self_kd, ind]


def _ctx(ctx_parts, tmp_path):
  images, labels, teacher, students = ctx_parts
  return base.Context(
    teacher=teacher,
    students=students,
    info=kdata.info("cifar10"),
    images=images,
    labels=labels,
    batch_size=16,
    out_dir=str(tmp_path),
    seed=0,
    num_examples=len(labels),
  )


def test_boundary_probe_self_is_one_and_matches_a_direct_computation(ctx_parts, tmp_path):
  ctx = _ctx(ctx_parts, tmp_path)
  probe = B.Boundary("boundary", dict(triplets=3, resolution=6))
  res = probe.compute(ctx)
  assert res["iou"]["self"] == 1.0
  # direct: normalise the triplet, build the grid with numpy, classify with model.apply
  images, labels, teacher, (_, ind) = ctx_parts
  info = kdata.info("cifar10")
  same = []
  for t in B.sample_triplets(labels, 3, 0):
    x = [np.asarray(kdata.normalize(images[i], info.mean, info.std), np.float64) for i in t]
    v1, v2 = (x[1] - x[0]).ravel(), (x[2] - x[0]).ravel()
    a = v1 / np.linalg.norm(v1)
    w = v2 - (a @ v2) * a
    b = w / np.linalg.norm(w)
    cs = np.array([[0, 0], [np.linalg.norm(v1), 0], [a @ v2, b @ v2]])
    lo, hi = cs.min(0) - 0.1 * np.ptp(cs, 0), cs.max(0) + 0.1 * np.ptp(cs, 0)
    pts = np.array(
      [
        x[0].ravel() + u * a + v * b
        for u in np.linspace(lo[0], hi[0], 6)
        for v in np.linspace(lo[1], hi[1], 6)
      ]
    ).reshape((-1, 8, 8, 3))
    pts = pts.astype(np.float32)
    pt = np.asarray(teacher.module.apply(teacher.variables, pts, train=False)[0]).argmax(-1)
    pi = np.asarray(ind.module.apply(ind.variables, pts, train=False)[0]).argmax(-1)
    same.append(pt == pi)
  ref = float(np.mean(np.concatenate(same)))
  # float32 grid points differ by ~1e-6 between the two constructions: at most a point or two
  # on a decision boundary could flip (1 / 108 each)
  assert abs(res["iou"]["independent"] - ref) <= 2 / 108
  assert res["iou"]["independent"] < 1.0
  assert [d["student"] for d in ctx.directions] == ["self"] and ctx.directions[0]["holds"]
  assert probe.markdown(ctx, res)[0].startswith("| student")
  with pytest.raises(UserError):
    B.Boundary("boundary", dict(triplets=0))


def test_random_resized_crops_known_answers():
  rows = np.broadcast_to(np.arange(8, dtype=np.float32)[None, :, None, None], (16, 8, 8, 1))
  key = jax.random.PRNGKey(0)
  np.testing.assert_allclose(
    C.random_resized_crops(rows, key, scale=1.0),
    np.broadcast_to(rows, (2,) + rows.shape),
    atol=1e-5,
  )
  v = np.asarray(C.random_resized_crops(rows, key, scale=0.25))  # 4x4 crops of a row ramp
  assert v.shape == (2, 16, 8, 8, 1)
  np.testing.assert_allclose(v, np.broadcast_to(v[:, :, :, :1], v.shape), atol=1e-5)  # rows only
  lo, hi = v.min(axis=(2, 3, 4)), v.max(axis=(2, 3, 4))
  assert np.all(hi - lo <= 3 + 1e-5) and np.all(hi - lo >= 2.5)  # spans a 4-row window
  assert len(np.unique(np.round(lo, 3))) > 1  # random positions


def test_shifted_pairs_are_crops_of_the_padded_image():
  rs = np.random.RandomState(0)
  x = rs.rand(6, 8, 8, 2).astype(np.float32)
  m = 3
  v = np.asarray(S.shifted_pairs(x, jax.random.PRNGKey(2), max_shift=m, pad_mode="constant"))
  xp = np.pad(x, ((0, 0), (1, 2), (1, 2), (0, 0)))
  offs = set()
  for k in range(2):
    for i in range(6):
      hits = [
        (oy, ox)
        for oy in range(m + 1)
        for ox in range(m + 1)
        if np.array_equal(v[k, i], xp[i, oy : oy + 8, ox : ox + 8])
      ]
      assert hits, (k, i)
      offs.add(hits[0])
  assert len(offs) > 2
  assert S.shift_pixels(8 / 224, 224) == 8 and S.shift_pixels(8 / 224, 28) == 1


def test_crop_and_shift_probes(ctx_parts, tmp_path):
  ctx = _ctx(ctx_parts, tmp_path)
  cr = C.Crop("crop", dict(scales=(1.0, 0.4))).compute(ctx)
  assert all(cr["agreement"][n][0] == 100.0 for n in cr["agreement"])  # identical views
  assert cr["agreement"]["self"] == cr["agreement"]["teacher"]
  assert all(0.0 <= a <= 100.0 for a in cr["agreement"]["independent"])
  sh = S.Shift("shift", dict(shifts=(0.125, 0.25))).compute(ctx)
  assert sh["shift_pixels"] == [1, 2]
  assert sh["agreement"]["self"] == sh["agreement"]["teacher"]
  assert all(0.0 <= a <= 100.0 for n in sh["agreement"] for a in sh["agreement"][n])
  with pytest.raises(UserError):
    S.Shift("shift", dict(pad_mode="wrap"))
  with pytest.raises(UserError):
    C.Crop("crop", dict(scales=(0.0,)))
