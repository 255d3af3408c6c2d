"""SSKD: knowledge distillation meets self-supervision (Xu et al., ECCV 2020; xuguodong03/SSKD).

Every training image is seen in its four rotations (:data:`ROTATION_VIEWS`); three terms
(``sskd_tf``, ``sskd_ss``, and the teacher head's pre-training ``sskd_head``) and the preset
``'sskd'`` (0.1 CE + 0.9 KD + 2.7 tf + 10 ss, a 60-epoch teacher-head init stage).
"""

from __future__ import annotations

import flax.linen as nn

from kdjax import checks
from kdjax.data import augment
from kdjax.losses import connectors as conn_lib
from kdjax.losses import selfsup
from kdjax.methods.registry import ViewSpec, register_term

# SSKD's four rotations (0/90/180/270 degrees) of every training image; one object, so that every
# SSKD term of a method declares the same view set.
ROTATION_VIEWS = ViewSpec(
  "rotation", 4, lambda images, rng, transform: augment.rotation_views(images, rng, transform)
)


class ProjHead(nn.Module):
  """SSKD's projection head (``wrapper.proj_head``): ``Linear(d, d) → ReLU → Linear(d, d)`` on
  the pooled feature (``d`` its width), PyTorch default init. Parameters ``fc1/``, ``fc2/``."""

  @nn.compact
  def __call__(self, x):
    dim = int(x.shape[-1])
    for i in (1, 2):
      x = nn.Dense(
        dim,
        kernel_init=conn_lib.torch_default_kernel,
        bias_init=conn_lib.torch_default_bias(dim),
        name=f"fc{i}",
      )(x)
      if i == 1:
        x = nn.relu(x)
    return x


class SSKDHeads(nn.Module):
  """The student's and the teacher's SSKD projection heads (``student_head/``,
  ``teacher_head/``): ``__call__((f_s,), (f_t,))`` -> both representations; with no student tap
  (``((), (f_t,))``) ``(None, teacher's)`` (its self-supervision pre-training, term
  ``sskd_head``). The teacher head is trained in the init stage and frozen afterwards."""

  @nn.compact
  def __call__(self, s_taps, t_taps, train: bool = False):
    del train
    (f_t,) = t_taps
    r_s = ProjHead(name="student_head")(s_taps[0]) if s_taps else None
    return r_s, ProjHead(name="teacher_head")(f_t)


def _sskd_heads(term):
  def make(**hp):
    if "temperature" in hp:
      checks.positive(f"term {term}: temperature", hp["temperature"])
    if "ratio" in hp:
      checks.in_range(f"term {term}: ratio", hp["ratio"], 0, 1)
    return SSKDHeads()

  return make


@register_term("sskd_tf", views=ROTATION_VIEWS)
def sskd_tf_term(s, t, batch, *, temperature: float = 4.0, ratio: float = 1.0):
  """SSKD's KD on the rotated views (xuguodong03/SSKD ``loss3``, weight 2.7):
  ``T² · batchmean_kept KL(p_t^T ‖ p_s^T)`` over the 3 rotated views of every example, a view
  kept when the teacher ranks its label first, or among the ``ratio`` share of wrong views with
  the best label rank (:func:`kdjax.losses.selfsup.sskd_transform_kd`). Trains on the four
  rotations (the method's CE and other terms see the normal view)."""
  checks.positive("term sskd_tf: temperature", temperature)
  checks.in_range("term sskd_tf: ratio", ratio, 0, 1)
  return selfsup.sskd_transform_kd(
    s.logits,
    t.logits,
    batch.labels,
    temperature=temperature,
    ratio=ratio,
    num_views=ROTATION_VIEWS.num_views,
  )


@register_term(
  "sskd_ss",
  student_taps=("pooled",),
  teacher_taps=("pooled",),
  connector=_sskd_heads("sskd_ss"),
  views=ROTATION_VIEWS,
)
def sskd_ss_term(s, t, batch, *, connector=None, temperature: float = 0.5, ratio: float = 0.75):
  """SSKD's self-supervision KD (xuguodong03/SSKD ``loss4``, weight 10): cosine similarities of
  each rotated view's projection to the batch's normal-view projections, student vs. teacher,
  ``T² · batchmean_kept KL`` with error-level filtering (``ratio``)
  (:func:`kdjax.losses.selfsup.sskd_similarity`). Connector :class:`SSKDHeads`: the student head
  trains with the student; the teacher head comes from the init stage (term ``sskd_head`` under
  the same key) and is frozen (``method.trainable = 'student+connectors/<key>/student_head'``)."""
  del batch
  r_s, r_t = connector((s.taps["pooled"],), (t.taps["pooled"],))
  return selfsup.sskd_similarity(
    r_s, r_t, temperature=temperature, ratio=ratio, num_views=ROTATION_VIEWS.num_views
  )


@register_term(
  "sskd_head", teacher_taps=("pooled",), connector=_sskd_heads("sskd_head"), views=ROTATION_VIEWS
)
def sskd_head_term(s, t, batch, *, connector=None):
  """SSKD's teacher self-supervision head pre-training (``student.py``, 60 epochs, backbone
  frozen, eval mode): each rotated view's projection must find its own example's normal view
  among the batch, ``CE(cosine row, own index)`` (:func:`kdjax.losses.selfsup.sskd_head_ce`).
  Reads no student output; its connector is the ``sskd_ss`` term's :class:`SSKDHeads` (same key:
  one shared module), of which it applies the teacher head only."""
  del s, batch
  _, r_t = connector((), (t.taps["pooled"],))
  return selfsup.sskd_head_ce(r_t, num_views=ROTATION_VIEWS.num_views)


def sskd_preset(*, head_epochs: int = 60, head_lr: float = 0.05, head_milestones=(30, 45)):
  """SSKD's loss and its teacher-head init stage (``student.py``): ``0.1 CE + 0.9 KD_T4 + 2.7
  tf(T 4, ratio 1) + 10 ss(T 0.5, ratio 0.75)``; init: the teacher head (key ``ss``, shared
  connector) for ``head_epochs`` at ``head_lr``, × decay at ``head_milestones``."""
  return dict(
    name="sskd",
    ce_weight=0.1,
    terms=dict(
      kd=dict(weight=0.9, temperature=4.0),
      tf=dict(loss="sskd_tf", weight=2.7, temperature=4.0, ratio=1.0),
      ss=dict(loss="sskd_ss", weight=10.0, temperature=0.5, ratio=0.75),
    ),
    trainable="student+connectors/ss/student_head",
    init=dict(
      epochs=head_epochs,
      ce_weight=0.0,
      terms=dict(ss=dict(loss="sskd_head", weight=1.0)),
      trainable="connectors/ss/teacher_head",
      lr=head_lr,
      milestones=tuple(head_milestones),
    ),
  )


PRESETS = {"sskd": sskd_preset}
