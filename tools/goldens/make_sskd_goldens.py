r"""Golden values for SSKD (torch, float64): ``tests/golden/sskd.npz``.

  /path/to/python-with-torch tools/goldens/make_sskd_goldens.py

Our transcription of xuguodong03/SSKD ``student.py``: the student's loss parts (``loss1`` CE on
the normal views, ``loss2`` KD_T4 on them, ``loss3`` KD_T4 on the error-filtered rotated views,
``loss4`` KL_T0.5 on the error-filtered similarity rows) and the teacher head's self-supervision
CE of its first 60 epochs, on fixed random logits / projection-head outputs in SSKD's layout
(``(4B, ...)``, row ``b*4 + v``). Stores inputs, every part, the kept-row masks and the gradients
of ``loss3`` / ``loss4`` / the head CE w.r.t. the student logits / student reps / teacher reps.

The selection uses torch's own ``argsort`` as SSKD does; each case is also checked to give the
same kept rows with a stable sort (kdjax's tie rule), so the fixture never depends on torch's
unspecified tie order.
"""

import os

import numpy as np
import torch
import torch.nn.functional as F

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _keep(rank, ratio, stable):
  index = torch.argsort(rank, stable=True) if stable else torch.argsort(rank)
  wrong = torch.nonzero(rank, as_tuple=True)[0].numel()
  correct = rank.numel() - wrong
  index = index[: correct + int(wrong * ratio)]
  return torch.sort(index)[0]


def _rank(scores, target):
  order = torch.argsort(scores, dim=1, descending=True)
  return torch.argmax(torch.eq(order, target.unsqueeze(1)).long(), dim=1)


def _simi(rep, nor_index, aug_index, batch):
  nor = rep[nor_index].unsqueeze(2).expand(-1, -1, 3 * batch).transpose(0, 2)
  aug = rep[aug_index].unsqueeze(2).expand(-1, -1, 1 * batch)
  return F.cosine_similarity(aug, nor, dim=1)


def case(
  rng, batch, classes, s_dim, t_dim, ratio_tf, ratio_ss, tag, out, kd_t=4.0, tf_t=4.0, ss_t=0.5
):
  n = 4 * batch
  target = torch.tensor(rng.integers(0, classes, batch))
  t_logits = rng.standard_normal((n, classes)) * 2.0
  t_logits[0::4, :] += 3.0 * np.eye(classes)[target.numpy()]  # normal views mostly right
  t_logits[1::4, :] += 1.5 * np.eye(classes)[target.numpy()]  # rotated: some wrong
  t_logits = torch.tensor(t_logits)
  s_logits = torch.tensor(rng.standard_normal((n, classes)), requires_grad=True)
  base = rng.standard_normal((batch, t_dim))
  t_rep = torch.tensor(
    np.repeat(base, 4, axis=0) * 0.6 + rng.standard_normal((n, t_dim)), requires_grad=True
  )
  s_rep = torch.tensor(rng.standard_normal((n, s_dim)), requires_grad=True)

  nor_index = torch.arange(n) % 4 == 0
  aug_index = torch.arange(n) % 4 != 0
  log_nor = F.log_softmax(s_logits[nor_index] / kd_t, dim=1)
  log_aug = F.log_softmax(s_logits[aug_index] / tf_t, dim=1)
  nor_k = F.softmax(t_logits[nor_index] / kd_t, dim=1)
  aug_k = F.softmax(t_logits[aug_index] / tf_t, dim=1)
  aug_target = target.unsqueeze(1).expand(-1, 3).contiguous().view(-1).long()
  rank_tf = _rank(aug_k, aug_target)
  idx_tf = _keep(rank_tf, ratio_tf, stable=False)
  assert torch.equal(idx_tf, _keep(rank_tf, ratio_tf, stable=True)), "tie at the boundary"

  s_simi = _simi(s_rep, nor_index, aug_index, batch)
  t_simi = _simi(t_rep, nor_index, aug_index, batch).detach()
  ss_target = torch.arange(batch).unsqueeze(1).expand(-1, 3).contiguous().view(-1).long()
  rank_ss = _rank(t_simi, ss_target)
  idx_ss = _keep(rank_ss, ratio_ss, stable=False)
  assert torch.equal(idx_ss, _keep(rank_ss, ratio_ss, stable=True)), "tie at the boundary"
  log_simi = F.log_softmax(s_simi / ss_t, dim=1)
  simi_k = F.softmax(t_simi / ss_t, dim=1)

  loss1 = F.cross_entropy(s_logits[nor_index], target)
  loss2 = F.kl_div(log_nor, nor_k, reduction="batchmean") * kd_t * kd_t
  loss3 = F.kl_div(log_aug[idx_tf], aug_k[idx_tf], reduction="batchmean") * tf_t * tf_t
  loss4 = F.kl_div(log_simi[idx_ss], simi_k[idx_ss], reduction="batchmean") * ss_t * ss_t

  g3 = torch.autograd.grad(loss3, s_logits, retain_graph=True)[0]
  g4 = torch.autograd.grad(loss4, s_rep, retain_graph=True)[0]
  # Teacher head's self-supervision task (student.py, first 60 epochs).
  head_simi = _simi(t_rep, nor_index, aug_index, batch)
  head_ce = F.cross_entropy(head_simi, ss_target)
  g_head = torch.autograd.grad(head_ce, t_rep)[0]

  for k, v in dict(
    s_logits=s_logits, t_logits=t_logits, s_rep=s_rep, t_rep=t_rep, target=target
  ).items():
    out[f"{tag}/{k}"] = v.detach().numpy()
  for k, v in dict(ce=loss1, kd=loss2, tf=loss3, ss=loss4, head_ce=head_ce).items():
    out[f"{tag}/{k}"] = np.array(v.item())
  keep_tf = np.zeros(3 * batch, bool)
  keep_tf[idx_tf.numpy()] = True
  keep_ss = np.zeros(3 * batch, bool)
  keep_ss[idx_ss.numpy()] = True
  out[f"{tag}/keep_tf"], out[f"{tag}/keep_ss"] = keep_tf, keep_ss
  out[f"{tag}/grad_tf_s_logits"] = g3.numpy()
  out[f"{tag}/grad_ss_s_rep"] = g4.numpy()
  out[f"{tag}/grad_head_t_rep"] = g_head.numpy()
  out[f"{tag}/hparams"] = np.array([ratio_tf, ratio_ss, kd_t, tf_t, ss_t])
  print(
    tag,
    "kept tf",
    keep_tf.sum(),
    "/",
    3 * batch,
    "kept ss",
    keep_ss.sum(),
    "/",
    3 * batch,
    "parts",
    [round(float(out[f"{tag}/{k}"]), 6) for k in ("ce", "kd", "tf", "ss", "head_ce")],
  )


def main():
  torch.set_default_dtype(torch.float64)
  out = {}
  for args in (
    (8, 10, 12, 16, 1.0, 0.75, "default"),  # SSKD's ratios
    (16, 7, 20, 20, 0.5, 0.4, "filtered"),
  ):
    for seed in range(100):  # the first seed whose kept rows have no tie at the boundary
      try:
        case(np.random.default_rng(seed), *args, out)
        break
      except AssertionError:
        continue
  path = os.path.join(ROOT, "tests", "golden", "sskd.npz")
  np.savez(path, **out)
  print("wrote", path)


if __name__ == "__main__":
  main()
