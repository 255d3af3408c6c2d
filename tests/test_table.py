"""The table runner (kdjax.tables, launch/table.py) on the tiny Fashion-MNIST family."""

import csv
import importlib.util
import json
import os
import shutil

import pytest

from conftest import ROOT
from kdjax.errors import UserError
from kdjax.tables import cell_dir, check_family, published_numbers, run_table


def _family(path="configs/fmnist_tiny.py", arg=""):
  spec = importlib.util.spec_from_file_location("fam", os.path.join(ROOT, path))
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  return (mod.get_config(arg) if arg else mod.get_config()), mod.__doc__


def test_published_numbers_parsed_from_a_real_docstring():
  from configs.cifar100 import kd

  nums = published_numbers(kd.__doc__)
  assert nums["resnet32x4-resnet8x4"] == 73.33
  assert nums["wrn_40_2-wrn_40_1"] == 73.54
  assert published_numbers("resnet8x4: 72.50 and x = 3") == {"resnet8x4": 72.5}


def test_tiny_family_table_runs_resumes_and_skips_finished(tmp_path, fmnist_dir, monkeypatch):
  monkeypatch.setenv("KDJAX_FASHION_MNIST_DIR", fmnist_dir)
  fam, doc = _family()
  out = str(tmp_path / "t")
  logs = []
  res = run_table(fam, out, module_doc=doc, command="python -m launch.table ...", log=logs.append)
  rows = {r["cell"]: r for r in res["rows"]}
  assert list(rows) == ["teacher", "student", "kd"]
  assert rows["teacher"]["seeds"] == [0] and rows["kd"]["seeds"] == [0, 1]
  assert rows["kd"]["teacher_top1_mean"] == pytest.approx(rows["teacher"]["last_top1_mean"])
  assert rows["kd"]["last_agreement_mean"] is not None and rows["student"]["published"] is None
  assert rows["kd"]["last_top1_std"] is not None
  # kd's seeds were members of one vmapped run whose member dirs are the seed dirs
  assert any("members" in m for m in logs)
  with open(os.path.join(cell_dir(out, "kd", 1), "summary.json")) as fh:
    assert json.load(fh)["members"]["seeds"] == [0, 1]
  for ext in ("md", "csv", "json"):
    assert os.path.exists(os.path.join(out, f"table.{ext}"))
  md = open(os.path.join(out, "table.md")).read()
  assert "student + KD" in md and "Setting: " in md and "2/2" in md
  with open(os.path.join(out, "table.csv")) as fh:
    assert [r["cell"] for r in csv.DictReader(fh)] == ["teacher", "student", "kd"]
  # relaunch: nothing to train
  logs.clear()
  run_table(fam, out, module_doc=doc, log=logs.append)
  assert logs == []
  # a lost seed is retrained alone, the others are kept
  shutil.rmtree(cell_dir(out, "student", 1))
  logs.clear()
  res2 = run_table(fam, out, module_doc=doc, log=logs.append)
  assert logs == ["[table] student seed 1"]
  assert res2["rows"][1]["last_top1_mean"] == pytest.approx(rows["student"]["last_top1_mean"])


def test_family_errors():
  fam, _ = _family()
  fam.order = ("kd", "teacher")
  with pytest.raises(UserError, match="before it"):
    check_family(fam)
  fam.order = ("nope",)
  with pytest.raises(UserError, match="unknown cells"):
    check_family(fam)
