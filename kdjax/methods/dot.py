r"""DOT, the Distillation-Oriented Trainer (Zhao, Cui, Song, Liang, ICCV 2023, "DOT: A
Distillation-Oriented Trainer", arXiv:2307.08436; megvii-research/mdistiller
``mdistiller/engine/dot.py``, ``mdistiller/engine/trainer.py:DOT``).

DOT changes the optimiser, not the loss: the task loss (CE) and the distillation loss get
separate SGD momentum buffers, ``β − Δ`` for the task gradient and ``β + Δ`` for the
distillation gradient (mdistiller: ``m_task = MOMENTUM − DOT.DELTA``, ``m_kd = MOMENTUM +
DOT.DELTA``), the weight decay joining the task gradient. In kdjax that is ``optim.name =
'dot'`` with ``optim.dot_delta = Δ`` (:func:`kdjax.train.optim.dot_sgd`), a grouped optimiser:
the train step hands it one gradient per gradient group, the CE being ``'task'`` and every term
``'distill'`` unless it says otherwise (``group=`` in its config; :mod:`kdjax.methods.core`).

The method block is the KD of mdistiller's ``configs/cifar100/dot/*.yaml`` (``DISTILLER.TYPE:
KD`` with ``CFG.KD``'s defaults: ``0.1 · CE + 0.9 · KD(T = 4)``), its term tagged ``'distill'``
explicitly. Under ``optim.name = 'sgd'`` the same block is plain KD, bit for bit (the groups
only matter to a grouped optimiser). Recipes and published numbers: ``configs/cifar100/dot.py``.
"""

from __future__ import annotations

from kdjax.methods.core import DEFAULT_GROUP


def dot_preset(*, ce_weight: float = 0.1, weight: float = 0.9, temperature: float = 4.0):
  """KD + DOT's method block (mdistiller ``CFG.KD``: CE 0.1, KD 0.9, T 4), the KD term in the
  gradient group ``'distill'``; run it with ``optim.name = 'dot'``."""
  return dict(
    name="dot",
    ce_weight=ce_weight,
    terms=dict(kd=dict(weight=weight, temperature=temperature, t2_scale=True, group=DEFAULT_GROUP)),
  )


PRESETS = {"dot": dot_preset}
