"""The paper-table families of configs/tables/ (kdjax.tables format, launch/table.py).

Every family loads in each of its settings (CIFAR-100 for every pair it offers, Fashion-MNIST,
the tiny smoke size), every cell validates and builds its method (no model, no training), every
CIFAR-100 published number is the one printed in its cell config's docstring on the pair's line,
the Fashion-MNIST variants use configs/fmnist_converge.py's teacher and student settings, and one
2-cell family runs for real on 128 Fashion-MNIST images through ``launch.table.run``.
"""

import importlib
import json
import os

import pytest

from kdjax.config import validate
from kdjax.methods import build_method
from kdjax.tables import cell_dir, check_family

FAMILIES = ("repdistiller", "dkd", "dist", "ttm", "sskd", "sftn", "checkpoint_kd", "calibration")
# family -> the pair table its cifar100 argument takes
PAIR_TABLES = {
  "repdistiller": ("configs.cifar100.repdistiller", "PAIRS"),
  "dkd": ("configs.cifar100.dkd", "PAIRS"),
  "dist": ("configs.cifar100.dist", "PAIRS"),
  "ttm": ("configs.cifar100.ttm", "PAIRS"),
  "sskd": ("configs.cifar100.sskd", "PAIRS"),
  "sftn": ("configs.sftn", "PAIRS"),
  "checkpoint_kd": ("configs.cifar100.ckd", "PAIRS"),
  "calibration": ("configs.cifar100.calibration_population", "STUDENTS"),
}
# where each family's published numbers come from: cell config module per cell-name prefix
SOURCES = {
  "kd": "configs.cifar100.repdistiller",
  "dkd": "configs.cifar100.dkd",
  "dist": "configs.cifar100.dist",
  "ttm": "configs.cifar100.ttm",
  "wttm": "configs.cifar100.ttm",
  "wttm_crd": "configs.cifar100.wttm_crd",
  "wttm_itrd": "configs.cifar100.wttm_itrd",
  "itrd": "configs.cifar100.wttm_itrd",
  "wttm_noce": "configs.cifar100.wttm_noce",
  "sskd": "configs.cifar100.sskd",
}


def _family(name, arg):
  return importlib.import_module(f"configs.tables.{name}").get_config(arg)


def _args(name):
  mod, table = PAIR_TABLES[name]
  pairs = getattr(importlib.import_module(mod), table)
  if name == "calibration":  # 127 cells per student, which differ in the student model only
    pairs = ("resnet8x4", "MobileNetV2", "wrn_16_2")
  return [f"cifar100,{p}" for p in pairs] + ["cifar100", "fmnist", "fmnist,tiny"]


@pytest.mark.parametrize("name", FAMILIES)
def test_every_family_loads_and_every_cell_builds(name):
  n_cells = 0
  for arg in _args(name):
    fam = _family(name, arg)
    order = check_family(fam)  # teacher cells first, every name known
    assert len(order) >= 4 and len(set(order)) == len(order), (name, arg)
    assert order[0].startswith("t") and fam.setting
    for cell_name in order:
      cell = fam.cells[cell_name]
      validate(cell.run)
      method = build_method(cell.run.method)
      if method.needs_teacher:  # the runner points it at its teacher cell's run
        assert cell.teacher_cell in order[: order.index(cell_name)], (arg, cell_name)
      want = "fashion_mnist" if arg.startswith("fmnist") else "cifar100"
      assert cell.run.dataset.name == want, (arg, cell_name)
      n_cells += 1
  assert n_cells > 0


def _doc_number(module, pair, number):
  """``number`` is printed on a line of ``module``'s docstring that names ``pair``."""
  lines = [l for l in importlib.import_module(module).__doc__.splitlines() if pair in l]
  return any(f"{number:.2f}" in l for l in lines)


@pytest.mark.parametrize("name", ["repdistiller", "dkd", "dist", "ttm", "sskd"])
def test_published_numbers_resolve_to_the_cell_configs_docstrings(name):
  mod, table = PAIR_TABLES[name]
  for pair in getattr(importlib.import_module(mod), table):
    fam = _family(name, f"cifar100,{pair}")
    for cell_name in fam.order:
      cell = fam.cells[cell_name]
      if cell_name in ("teacher", "student"):
        source = "configs.cifar100.teacher"
        arch = cell.run.model
        assert cell.published is not None and 60 < cell.published < 81, (pair, cell_name)
        teacher = importlib.import_module(source)
        assert teacher.PUBLISHED[arch] == pytest.approx(cell.published) or name == "repdistiller"
        continue
      source = "configs.cifar100.repdistiller" if name == "repdistiller" else SOURCES[cell_name]
      if cell.published is None:  # only where the source prints no number for the pair
        assert name != "repdistiller" and cell_name == "kd", (pair, cell_name)
        assert pair not in importlib.import_module(source).PAIRS
        continue
      assert 55 < cell.published < 81 and cell.published_source, (pair, cell_name)
      assert _doc_number(source, pair, cell.published), (name, pair, cell_name, cell.published)
  # the table runner carries the number into the rows (nothing trained: no seed finished)
  from kdjax.tables import aggregate

  fam = _family(name, "cifar100")
  rows = {r["cell"]: r for r in aggregate(fam, "/nonexistent", {})}
  assert rows["kd"]["published"] == 73.33 and rows["kd"]["seeds"] == []


def test_families_without_published_numbers_say_so():
  for name in ("sftn", "checkpoint_kd", "calibration"):
    mod = importlib.import_module(f"configs.tables.{name}")
    assert "NONE" in mod.__doc__
    fam = mod.get_config("cifar100")
    # only the standard teacher and the student alone carry RepDistiller's baselines
    baselines = ("teacher", "student")
    assert all(fam.cells[n].published is None for n in fam.order if n not in baselines)


def test_fmnist_variants_use_the_converge_settings():
  from configs import fmnist_converge

  conv = fmnist_converge.get_config()
  t, s = conv.cells.teacher.run, conv.cells.student.run
  for name in FAMILIES:
    fam = _family(name, "fmnist")
    for cell_name in fam.order:
      run = fam.cells[cell_name].run
      ref = t if fam.cells[cell_name].get("seeds", None) == (0,) else s
      for key in ("train_limit", "crop_pad", "flip"):
        assert run.dataset[key] == ref.dataset[key], (name, cell_name, key)
      assert (run.num_epochs, run.batch_size, run.optim.lr) == (
        ref.num_epochs,
        ref.batch_size,
        ref.optim.lr,
      ), (name, cell_name)
    # the method blocks are the CIFAR-100 cells' (epoch counts scaled 60/240)
  rd = _family("repdistiller", "fmnist")
  assert rd.cells.ab.run.method.init.epochs == 8 and rd.cells.crd.run.method.terms.crd.weight == 0.8
  assert _family("dkd", "fmnist").cells.dkd.run.method.terms.dkd.warmup_epochs == 5
  head = _family("sskd", "fmnist").cells.sskd.run.method.init  # SSKD's 60 / (30, 45) head epochs
  assert (head.epochs, tuple(head.milestones)) == (15, (8, 11))


def test_unknown_arguments_raise():
  for arg in ("imagenet", "cifar100,nope-nope", "cifar100,tiny", "fmnist,a,b"):
    with pytest.raises(ValueError):
      _family("dkd", arg)


def test_tiny_family_runs_through_launch_table(tmp_path, fmnist_dir, monkeypatch):
  """teacher + DKD of the DKD family, 128 Fashion-MNIST images, 1 epoch, one seed."""
  from launch import table

  monkeypatch.setenv("KDJAX_FASHION_MNIST_DIR", fmnist_dir)
  out = str(tmp_path / "dkd")
  logs = []
  res = table.run(
    "configs/tables/dkd.py:fmnist,tiny",
    out,
    cells=("teacher", "dkd"),
    overrides={"seeds": (0,)},
    log=logs.append,
  )
  rows = {r["cell"]: r for r in res["rows"]}
  assert rows["teacher"]["seeds"] == [0] and rows["dkd"]["seeds"] == [0]
  assert rows["student"]["seeds"] == [] and rows["kd"]["seeds"] == []  # not asked for
  assert rows["dkd"]["method"] == "dkd" and rows["dkd"]["published"] is None
  assert rows["dkd"]["teacher_top1_mean"] == pytest.approx(rows["teacher"]["last_top1_mean"])
  with open(os.path.join(cell_dir(out, "dkd", 0), "summary.json")) as fh:
    s = json.load(fh)
  assert s["finished"] and 0 <= s["last_top1"] <= 100
  md = open(os.path.join(out, "table.md")).read()
  assert "launch.table --config configs/tables/dkd.py:fmnist,tiny" in md
  logs.clear()  # relaunch: both finished, nothing trained
  table.run(
    "configs/tables/dkd.py:fmnist,tiny",
    out,
    cells=("teacher", "dkd"),
    log=logs.append,
    overrides={"seeds": (0,)},
  )
  assert not any(l.startswith("[table] ") for l in logs)


def test_snapshot_members_name_the_teacher_cells_checkpoints():
  from kdjax.tables import _run_config

  fam = _family("checkpoint_kd", "fmnist")
  cfg = _run_config(fam, "/out", "snapshot", 2)
  t = cell_dir("/out", "teacher", 0)  # the teacher cell has seed 0 only: it teaches every seed
  assert cfg.teacher.workdir == t and tuple(cfg.teacher.members) == (f"{t}@epoch:6", f"{t}@final")
  assert cfg.seed == 2 and build_method(cfg.method).name == "ckd"
  kl = _run_config(fam, "/out", "snapshot_kl_mean", 0)
  assert build_method(kl.method).name == "ckd_kl_mean" and len(kl.teacher.members) == 2
  assert _run_config(fam, "/out", "epoch_9", 0).teacher.which == "epoch:9"


def test_sftn_teacher_is_exported_then_distilled(tmp_path, fmnist_dir, monkeypatch):
  """The SFTN family's stage 1 (tiny_cnn teacher with tiny_cnn branches) and one stage-2 cell
  from its exported teacher, on 128 Fashion-MNIST images."""
  from launch import table

  monkeypatch.setenv("KDJAX_FASHION_MNIST_DIR", fmnist_dir)
  out = str(tmp_path / "sftn")
  logs = []
  res = table.run(
    "configs/tables/sftn.py:fmnist,tiny",
    out,
    cells=("sftn_teacher", "kd_sftn"),
    overrides={"seeds": (0,)},
    log=logs.append,
  )
  exported = os.path.join(cell_dir(out, "sftn_teacher", 0), "sftn_teacher")
  with open(os.path.join(exported, "export.json")) as fh:
    meta = json.load(fh)
  assert meta["arch"] == "tiny_cnn" and meta["source"] == "sftn"
  with open(os.path.join(cell_dir(out, "kd_sftn", 0), "summary.json")) as fh:
    s = json.load(fh)
  assert s["finished"] and os.path.abspath(s["teacher"]["workdir"]) == os.path.abspath(exported)
  rows = {r["cell"]: r for r in res["rows"]}
  assert rows["kd_sftn"]["seeds"] == [0] and any("exporting" in l for l in logs)
