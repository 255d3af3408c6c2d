"""The calibration-paper population configs (configs/{cifar100,cifar10,tiny_imagenet}/
calibration_population.py): every teacher holds a validation split out, the schedules, datasets
and workdirs of the three datasets, and every cell passes the config schema and builds its method."""

import importlib

import pytest

from kdjax.config import validate
from kdjax.methods import build_method

DATASETS = {"cifar100": 5000, "cifar10": 5000, "tiny_imagenet": 10000}


def _mod(ds):
  return importlib.import_module(f"configs.{ds}.calibration_population")


@pytest.mark.parametrize("ds", sorted(DATASETS))
def test_population_teachers_hold_a_validation_split_out(ds):
  m = _mod(ds)
  assert m.PUBLISHED == {}  # nothing transcribed: no cell may claim a paper number
  for arch in m.CAPACITY:
    for sched in m.SCHEDULES:
      c = m.get_config(f"teacher:{arch},{sched}")
      validate(c)
      assert c.dataset.name == ds and c.model == arch
      assert (c.dataset.val_examples, c.dataset.val_seed) == (DATASETS[ds], 0)
      assert c.teacher.workdir == "" and c.method.name == "supervised"
      if sched == "short100":  # the paper: 100 epochs, decay after epoch 50
        assert c.num_epochs == 100 and min(c.optim.milestones) == 50
      else:
        assert c.num_epochs == 240


@pytest.mark.parametrize("ds", sorted(DATASETS))
def test_population_students(ds):
  m = _mod(ds)
  for loss in m.LOSSES:
    c = m.get_config(f"resnet8x4,{loss},MobileNetV2,short100")
    validate(c)
    build_method(c.method)
    assert c.dataset.name == ds and c.dataset.val_examples == 0  # students see all of train
    assert c.teacher.workdir == f"runs/{ds}/calib_teacher_MobileNetV2_short100"
    assert c.method.ce_weight == 0.0 and list(c.method.terms) == [loss]
    assert (c.num_epochs, c.optim.lr) == (200, 0.03)
  with pytest.raises(ValueError):
    m.get_config("teacher:resnet9,full")
