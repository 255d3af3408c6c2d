"""RCO anchor schedules (kdjax.teachers.rco) and the RCO config."""

import os
import sys

import pytest

from kdjax.errors import UserError
from kdjax.teachers.rco import Anchor, equal_epoch_anchor_epochs, rco_anchors, teacher_epoch_at

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
  sys.path.insert(0, ROOT)
from configs.cifar100 import rco as rco_cfg  # noqa: E402

KEPT = tuple(range(20, 241, 20))


def test_equal_epoch_interval_default():
  a = rco_anchors(KEPT, 4, 240)
  assert a == (
    Anchor(0, 60, 60),
    Anchor(60, 120, 120),
    Anchor(120, 180, 180),
    Anchor(180, 240, 240),
  )
  # segments tile the student's epochs; anchors increase and end at the final teacher
  for n in range(1, 13):
    for total in (n, 200, 241):
      s = rco_anchors(KEPT, n, total)
      assert s[0].start == 0 and s[-1].end == total
      assert all(x.end == y.start for x, y in zip(s, s[1:]))
      assert all(x.end > x.start for x in s)
      eps = [x.teacher_epoch for x in s]
      assert eps == sorted(set(eps)) and eps[-1] == 240 and set(eps) <= set(KEPT)


def test_nearest_kept_and_remainder():
  # targets 80, 160, 240 over kept 50/100/150/200/240 -> nearest 100 (|20|) ... ties to earlier
  assert equal_epoch_anchor_epochs((50, 100, 150, 200, 240), 3) == (100, 150, 240)
  assert equal_epoch_anchor_epochs((10, 30, 50), 2) == (30, 50)  # target 25: 30 is nearer
  assert equal_epoch_anchor_epochs((20, 40), 2) == (20, 40)
  # crowded early targets still give distinct anchors
  assert equal_epoch_anchor_epochs((1, 2, 3, 100), 4) == (1, 2, 3, 100)
  s = rco_anchors(KEPT, 3, 10)  # 3 + 3 + 4 epochs
  assert [(x.start, x.end) for x in s] == [(0, 3), (3, 6), (6, 10)]
  assert [teacher_epoch_at(s, e) for e in (1, 3, 4, 7, 10)] == [80, 80, 160, 240, 240]


def test_explicit_and_errors():
  s = rco_anchors(KEPT, 2, 100, strategy="explicit", anchor_epochs=(40, 240))
  assert s == (Anchor(0, 50, 40), Anchor(50, 100, 240))
  for kw in (
    dict(kept_epochs=(), num_anchors=1, total_epochs=10),
    dict(kept_epochs=(20, 40), num_anchors=3, total_epochs=10),
    dict(kept_epochs=KEPT, num_anchors=0, total_epochs=10),
    dict(kept_epochs=KEPT, num_anchors=4, total_epochs=3),
    dict(kept_epochs=KEPT, num_anchors=2, total_epochs=10, strategy="greedy"),
    dict(
      kept_epochs=KEPT, num_anchors=2, total_epochs=10, strategy="explicit", anchor_epochs=(30, 240)
    ),
    dict(kept_epochs=KEPT, num_anchors=2, total_epochs=10, anchor_epochs=(40, 240)),
  ):
    with pytest.raises(UserError):
      rco_anchors(**kw)
  with pytest.raises(UserError, match="outside"):
    teacher_epoch_at(rco_anchors(KEPT, 2, 10), 11)


def test_rco_config_schedule():
  c = rco_cfg.get_config("resnet32x4-resnet8x4")
  assert c.teacher.rco.num_anchors == 4 and c.teacher.rco.strategy == "equal_epoch"
  assert c.method.terms.kd.temperature == 4.0
  assert [a.teacher_epoch for a in rco_cfg.schedule(c.num_epochs)] == [60, 120, 180, 240]
