"""CIFAR-100 logit-method configs (TTM, WTTM, DKD, DIST, calibration KD): load, validate, build.

No model is built: only configs, the method builder (tiny dry run) and the model registry names.
"""

import importlib.util
import os

import pytest

from kdjax.config import validate
from kdjax.methods import build_method
from kdjax.models import names as model_names

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LOW_LR = ("MobileNetV2", "ShuffleV1", "ShuffleV2")
SAME_ARCH = (
  "wrn_40_2-wrn_16_2",
  "wrn_40_2-wrn_40_1",
  "resnet56-resnet20",
  "resnet110-resnet20",
  "resnet110-resnet32",
  "resnet32x4-resnet8x4",
  "vgg13-vgg8",
)
CROSS_ARCH = (
  "vgg13-MobileNetV2",
  "ResNet50-MobileNetV2",
  "ResNet50-vgg8",
  "resnet32x4-ShuffleV1",
  "resnet32x4-ShuffleV2",
  "wrn_40_2-ShuffleV1",
)
ALL_13 = SAME_ARCH + CROSS_ARCH
DKD_11 = tuple(p for p in ALL_13 if p not in ("resnet110-resnet20", "ResNet50-vgg8"))
# config -> (expected pairs, method term key, index of the published number in a PAIRS entry)
PAIR_CONFIGS = {
  "ttm": (ALL_13, "ttm", 4),
  "wttm": (ALL_13, "wttm", 4),
  "dkd": (DKD_11, "dkd", 3),
  "dist": (ALL_13, "dist", 2),
}

_MODULES = {}


def _load(name):
  if name not in _MODULES:
    spec = importlib.util.spec_from_file_location(
      f"cfg_{name}", os.path.join(ROOT, "configs", "cifar100", f"{name}.py")
    )
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    _MODULES[name] = mod
  return _MODULES[name]


def _pair_cases():
  return [(n, p) for n, (pairs, _, _) in PAIR_CONFIGS.items() for p in pairs]


@pytest.mark.parametrize("name", sorted(PAIR_CONFIGS))
def test_pairs_table_is_exactly_the_expected_set(name):
  assert set(_load(name).PAIRS) == set(PAIR_CONFIGS[name][0])


@pytest.mark.parametrize("name,pair", _pair_cases())
def test_pair_config_loads_validates_and_builds(name, pair):
  mod = _load(name)
  _, term, pub_idx = PAIR_CONFIGS[name]
  cfg = mod.get_config(pair)
  validate(cfg)
  method = build_method(cfg.method)
  assert [t.key for t in method.terms] == [term] and method.needs_teacher
  teacher, student = pair.split("-")
  registered = set(model_names())
  assert cfg.model == student and student in registered and teacher in registered
  assert mod.PAIRS[pair][:2] == (teacher, student)
  assert cfg.teacher.workdir == f"runs/cifar100/teacher_{teacher}"
  assert cfg.optim.lr == (0.01 if student in LOW_LR else 0.05)
  assert cfg.num_epochs == 240 and tuple(cfg.optim.milestones) == (150, 180, 210)
  assert cfg.batch_size == 64 and cfg.dataset.name == "cifar100"
  published = mod.PAIRS[pair][pub_idx]
  assert isinstance(published, float) and 60 < published < 80
  doc_lines = [l for l in mod.__doc__.splitlines() if pair in l]
  assert any(f"{published:.2f}" in l for l in doc_lines), (name, pair, published)


@pytest.mark.parametrize("name", ["ttm", "wttm"])
def test_ttm_wiring_r1_no_kd_term(name):
  mod = _load(name)
  for pair in ALL_13:
    cfg = mod.get_config(pair)
    _, _, gamma, beta, _, _ = mod.PAIRS[pair]
    assert cfg.method.ce_weight == 1.0 and "kd" not in cfg.method.terms
    assert dict(cfg.method.terms[name]) == dict(weight=beta, gamma=gamma)
  # spot checks against the zkxufo/TTM README commands and Tables 8/9
  assert _load("ttm").PAIRS["vgg13-vgg8"][2:4] == (0.1, 45.0)
  assert _load("wttm").PAIRS["resnet32x4-ShuffleV2"][2:4] == (0.4, 16.0)


def test_dkd_and_dist_hparams():
  dkd = _load("dkd")
  for pair in DKD_11:
    c = dkd.get_config(pair)
    t = dict(c.method.terms.dkd)
    assert c.method.ce_weight == 1.0 and t["alpha"] == 1.0 and t["temperature"] == 4.0
    assert t["warmup_epochs"] == 20 and t["weight"] == 1.0 and t["beta"] == dkd.PAIRS[pair][2]
  assert dkd.PAIRS["resnet56-resnet20"][2] == 2.0 and dkd.PAIRS["vgg13-vgg8"][2] == 6.0
  c = _load("dist").get_config("resnet32x4-resnet8x4")
  assert dict(c.method.terms.dist) == dict(weight=2.0, beta=1.0, gamma=1.0, temperature=4.0)
  assert c.method.ce_weight == 1.0


@pytest.mark.parametrize("name", sorted(PAIR_CONFIGS))
def test_unknown_pair_raises(name):
  with pytest.raises(ValueError):
    _load(name).get_config("resnet9000-resnet1")
  with pytest.raises(ValueError):  # reversed order is not a pair
    _load(name).get_config("resnet8x4-resnet32x4")


@pytest.mark.parametrize("pair", ["resnet110-resnet20", "ResNet50-vgg8"])
def test_dkd_pairs_without_mdistiller_config_raise(pair):
  with pytest.raises(ValueError, match="no DKD config"):
    _load("dkd").get_config(pair)


@pytest.mark.parametrize("loss", ["kl", "listmle", "pairwise_ranking", "pld"])
def test_calibration_kd_variants(loss):
  mod = _load("calibration_kd")
  cfg = mod.get_config(f"resnet8x4,{loss}")
  validate(cfg)
  method = build_method(cfg.method)
  assert [t.key for t in method.terms] == [loss] and method.needs_teacher
  assert cfg.method.ce_weight == 0.0 and method.terms[0].weight == 1.0
  assert cfg.model == "resnet8x4" and cfg.model in model_names()
  assert cfg.num_epochs == 200 and cfg.optim.lr == 0.03
  assert cfg.teacher.workdir == ""
  if loss == "kl":
    hp = dict(cfg.method.terms.kl)
    assert hp["teacher_temperature"] == hp["student_temperature"] == 1.8 and hp["t2_scale"]
  c2 = mod.get_config(f"MobileNetV2,{loss},resnet32x4")
  assert c2.teacher.workdir == "runs/cifar100/teacher_resnet32x4" and c2.optim.lr == 0.03


def test_calibration_kd_students_registered_and_bad_args():
  mod = _load("calibration_kd")
  assert set(mod.STUDENTS) <= set(model_names())
  assert not mod.PUBLISHED and "NONE" in mod.__doc__ and "§2.5" in mod.__doc__
  assert "unverified" in mod.__doc__
  for bad in ["resnet8x4", "resnet8x4,kd", "resnet1,kl", "resnet8x4,kl,nope", "a,b,c,d"]:
    with pytest.raises(ValueError):
      mod.get_config(bad)
