r"""Golden values for KDSVD (torch, float64): ``tests/golden/kdsvd.npz``.

  $KDJAX_TORCH_PYTHON tools/goldens/make_kdsvd_goldens.py

Our transcription, in NCHW PyTorch, of HobbitLong/RepDistiller ``distiller_zoo/KDSVD.py``
(= megvii-research/mdistiller ``kdsvd_loss`` up to mdistiller's ``view(B, C·H, W)``): per tap the
SVD of the ``(B, H·W, C)`` map (``torch.svd``), the teacher's top ``k`` right singular vectors and
L2-normalised singular values, the student's top ``k + extra`` vectors aligned to the teacher's by
the max-``|cos|`` sign mask, both weighted by the teacher's values, and the summed squared RBF
differences ``exp(-d²/8)`` of consecutive taps divided by the batch size (teacher RBF detached).
One addition, kdjax's documented convention: the teacher's vectors are sign-fixed so that their
entries sum to >= 0 (the reference leaves the sign to LAPACK). The script also stores the loss
with torch's own signs (``<case>/loss_lapack_sign``) and says whether it agrees.

Inputs are built so that nothing is ambiguous at float64: student maps ``Q₁ diag(σ) Q₂ᵀ`` with
well-separated σ (relative gaps >= 10 %, so the SVD gradient is well conditioned), teacher maps
non-negative (post-ReLU-like; the top vector's entries share one sign, far from the sign rule's
boundary), and the script asserts the margins it relies on (distinct σ, a unique max-``|cos|``
choice, teacher vector sums away from 0). Stored per case (NHWC): ``student__<l>``,
``teacher__<l>``, ``k``, ``extra``, ``per_example`` (B,), ``loss`` (their mean) and
``grad__<l>`` = d loss / d student tap l.
"""

import os

import numpy as np
import torch

torch.set_default_dtype(torch.float64)
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def svd_parts(feat, n):
  """``(s, v)``: the top-n singular values (B, n) and right singular vectors (B, C, n) of the
  NCHW map viewed as (B, H·W, C); non-finite entries zeroed, both L2-normalised (RepDistiller)."""
  b, c, h, w = feat.shape
  x = feat.reshape(b, c, h * w).transpose(-2, -1)
  _, s, v = torch.svd(x)
  s = torch.where(torch.isfinite(s), s, torch.zeros_like(s))
  v = torch.where(torch.isfinite(v), v, torch.zeros_like(v))
  s = torch.nn.functional.normalize(s[:, :n], dim=1)
  v = torch.nn.functional.normalize(v[:, :, :n], dim=1)
  return s, v


def align(v_s, v_t):
  cos = v_s.transpose(-2, -1) @ v_t
  best = cos.abs().max(dim=1, keepdim=True).values
  mask = torch.where(best == cos.abs(), torch.sign(cos), torch.zeros_like(cos))
  return v_s @ mask, cos


def kdsvd_ref(g_s, g_t, k, extra, fix_teacher_sign=True):
  """Per-example values (B,) whose mean is RepDistiller's ``sum(KDSVD(k)(g_s, g_t))``."""
  prev = None
  per = torch.zeros(g_s[0].shape[0])
  for f_s, f_t in zip(g_s, g_t):
    s_t, v_t = svd_parts(f_t, k)
    if fix_teacher_sign:
      v_t = v_t * torch.where(v_t.sum(1, keepdim=True) >= 0, 1.0, -1.0)
    _, v_s = svd_parts(f_s, k + extra)
    v_s, _ = align(v_s, v_t)
    v_t = v_t * s_t.unsqueeze(1)
    v_s = v_s * s_t.unsqueeze(1)
    if prev is not None:
      s_rbf = torch.exp(-(v_s.unsqueeze(2) - prev[0].unsqueeze(1)).pow(2) / 8)
      t_rbf = torch.exp(-(v_t.unsqueeze(2) - prev[1].unsqueeze(1)).pow(2) / 8)
      l2 = (s_rbf - t_rbf.detach()).pow(2)
      l2 = torch.where(torch.isfinite(l2), l2, torch.zeros_like(l2))
      per = per + l2.sum(dim=(1, 2, 3))
    prev = (v_s, v_t)
  return per


def orth(rng, n, m):
  q, _ = np.linalg.qr(rng.standard_normal((n, m)))
  return q


def student_map(rng, teacher, k, positions):
  """NCHW map whose (H·W, C) matrix is Q₁ diag(σ) Q₂ᵀ with σ_i = 3 · 0.8^i (times a per-example
  scale; relative gaps of 20 %). Column ``positions[j]`` of Q₂ is a noisy, randomly signed copy
  of the teacher's j-th top right singular vector, so that the alignment has a clear choice
  (not always the student's first vector)."""
  b, c, h, w = teacher["shape"]
  kk = min(h * w, c)
  out = np.empty((b, c, h, w))
  for i in range(b):
    sig = 3.0 * (1.0 + 0.3 * i) * 0.8 ** np.arange(kk)
    m = 0.3 * rng.standard_normal((c, kk))
    for j, p in enumerate(positions[:k]):
      m[:, p] += rng.choice([-1.0, 1.0]) * teacher["v"][i, :, j]
    q2, _ = np.linalg.qr(m)
    x = orth(rng, h * w, kk) @ np.diag(sig) @ q2.T  # (HW, C)
    out[i] = x.T.reshape(c, h, w)
  return out


def teacher_map(rng, b, h, w, c, k):
  """A non-negative NCHW map; redrawn until each of its top-k right singular vectors has an
  entry sum of magnitude > 0.3 (so the sign rule is far from its boundary)."""
  while True:
    f = np.abs(rng.standard_normal((b, c, h, w))) + 0.2 * rng.random((b, c, 1, 1))
    _, v = svd_parts(torch.tensor(f), k)
    if float(v.sum(1).abs().min()) > 0.3:
      return f


def check_margins(g_s, g_t, k, extra):
  for f_s, f_t in zip(g_s, g_t):
    f_s = f_s.detach()
    b, c, h, w = f_s.shape
    sv = torch.linalg.svdvals(f_s.reshape(b, c, h * w).transpose(-2, -1))
    gaps = (sv[:, :-1] - sv[:, 1:]) / sv[:, :-1]
    assert float(gaps.min()) > 0.1, "student singular values not well separated"
    _, v_t = svd_parts(f_t, k)
    assert float(v_t.sum(1).abs().min()) > 0.3, "teacher vector sum too close to 0"
    _, v_s = svd_parts(f_s, k + extra)
    cos = (v_s.transpose(-2, -1) @ v_t).abs()
    top2 = cos.topk(2, dim=1).values
    assert float((top2[:, 0] - top2[:, 1]).min()) > 0.02, "alignment choice ambiguous"


def case(rng, tag, b, s_hw, t_hwc, k, extra, positions, out):
  g_t = [torch.tensor(teacher_map(rng, b, *hwc, k)) for hwc in t_hwc]
  g_s = []
  for (h, w), f_t in zip(s_hw, g_t):
    _, v_t = svd_parts(f_t, k)
    spec = dict(shape=(b, f_t.shape[1], h, w), v=v_t.numpy())
    g_s.append(torch.tensor(student_map(rng, spec, k, positions), requires_grad=True))
  check_margins(g_s, g_t, k, extra)
  per = kdsvd_ref(g_s, g_t, k, extra)
  loss = per.mean()
  loss.backward()
  raw = kdsvd_ref(g_s, g_t, k, extra, fix_teacher_sign=False).mean()
  nhwc = lambda a: a.detach().permute(0, 2, 3, 1).numpy().copy()
  for i, (f_s, f_t) in enumerate(zip(g_s, g_t)):
    out[f"{tag}/student__{i}"] = nhwc(f_s)
    out[f"{tag}/teacher__{i}"] = nhwc(f_t)
    out[f"{tag}/grad__{i}"] = nhwc(f_s.grad)
  out[f"{tag}/k"] = np.array(k)
  out[f"{tag}/extra"] = np.array(extra)
  out[f"{tag}/num_taps"] = np.array(len(g_s))
  out[f"{tag}/per_example"] = per.detach().numpy()
  out[f"{tag}/loss"] = np.array(loss.item())
  out[f"{tag}/loss_lapack_sign"] = np.array(raw.item())
  same = np.isclose(raw.item(), loss.item(), rtol=1e-12)
  print(f"{tag}: loss {loss.item():.6e}; with LAPACK's teacher signs {raw.item():.6e} ({same})")


def main():
  rng = np.random.Generator(np.random.PCG64(2018))
  out = {}
  # RepDistiller's setting (k 1, extra 3), three stage-like taps; the last has H·W < C (the
  # SVD gradient's (I − VVᵀ) term) and the teacher's first tap a larger spatial size.
  taps = [(16, 16, 4), (4, 4, 8), (2, 2, 16)]
  case(rng, "k1", 3, [(8, 8), (4, 4), (2, 2)], taps, 1, 3, (2,), out)
  # two teacher vectors (normalised singular-value weights) and SSKD_SVD's one extra vector
  case(rng, "k2", 2, [(6, 6), (4, 4)], [(6, 6, 5), (3, 3, 6)], 2, 1, (1, 0), out)
  path = os.path.join(ROOT, "tests", "golden", "kdsvd.npz")
  np.savez_compressed(path, **out)
  print("wrote", path)


if __name__ == "__main__":
  main()
