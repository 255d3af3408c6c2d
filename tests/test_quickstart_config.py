"""The quickstart family's fairness: student alone and KD student differ only in the method."""

import pytest

from configs import fmnist_quickstart
from kdjax.config import validate
from kdjax.methods import build_method
from kdjax.tables import check_family


@pytest.mark.parametrize("arg", ["", "quick"])
def test_students_have_equal_budgets_and_seeds(arg):
  f = fmnist_quickstart.get_config(arg)
  assert check_family(f) == ["teacher", "student", "kd"]
  s, k = f.cells.student.run.to_dict(), f.cells.kd.run.to_dict()
  for c in (s, k):
    c.pop("method")
    c.pop("teacher")
  assert s == k  # same data, schedule, batch, optimiser, evals
  assert f.cells.student.get("seeds", None) is None and f.cells.kd.get("seeds", None) is None
  assert not build_method(f.cells.student.run.method).needs_teacher
  assert build_method(f.cells.kd.run.method).needs_teacher
  assert f.cells.kd.teacher_cell == "teacher" and tuple(f.cells.teacher.seeds) == (0,)
  for c in f.cells.values():
    validate(c.run)
  assert str(f.cells.student.run.dataset.train_limit // 1000) in f.setting.replace(",", "")


def test_full_setting_is_data_scarce_student_and_full_data_teacher():
  f = fmnist_quickstart.get_config()
  assert f.cells.teacher.run.dataset.train_limit == 0  # all 60,000 images
  assert 0 < f.cells.student.run.dataset.train_limit <= 2000
  assert len(f.seeds) >= 3
