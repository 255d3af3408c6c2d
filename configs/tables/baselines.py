r"""The teacher / student alone / KD cells every logit-method family starts with (not a family).

``logit_family(name, setting, pair, tiny, extra)`` builds ``teacher``, ``student``, ``kd`` and
then the ``extra`` cells ``{cell: (CIFAR-100 config, published top-1 or None, source)}``; on
``fmnist`` the same cells on ``configs/tables/common.py``'s Fashion-MNIST runs.
"""

from configs.cifar100 import kd, repdistiller
from configs.tables import common

LABELS = {
  "dkd": "DKD",
  "dist": "DIST",
  "ttm": "TTM",
  "wttm": "WTTM",
  "wttm_crd": "WTTM + CRD",
  "wttm_itrd": "WTTM + ITRD",
  "itrd": "ITRD",
  "wttm_noce": "WTTM w/o CE",
  "sskd": "SSKD",
}


def kd_published(pair: str):
  """RepDistiller's KD top-1 for ``pair`` (its README), or None where it has no row."""
  row = repdistiller.PAIRS.get(pair)
  return row[4]["kd"] if row is not None else None


def kd_config(pair: str):
  """RepDistiller's KD (0.1 CE + 0.9 KD, T 4) on ``pair``: ``configs/cifar100/kd.py`` when it
  lists the pair, else the same preset through ``configs/cifar100/repdistiller.py``."""
  if pair in kd.PAIRS:
    return kd.get_config(pair)
  return repdistiller.get_config(f"kd:{pair}")


def logit_family(name: str, setting: str, pair: str, tiny: bool, extra: dict):
  teacher, student = pair.split("-")
  cells = {}
  if setting == "cifar100":
    cells["teacher"] = common.cifar_teacher_cell(teacher)
    cells["student"] = common.cifar_student_cell(student)
    cells["kd"] = common.cell(
      kd_config(pair),
      label="KD",
      teacher_cell="teacher",
      published=kd_published(pair),
      source="configs/cifar100/repdistiller.py PAIRS (RepDistiller README)",
    )
    for k, (cfg, pub, src) in extra.items():
      label = LABELS.get(k, k)
      cells[k] = common.cell(cfg, label=label, teacher_cell="teacher", published=pub, source=src)
    return common.family(
      f"{name}_{pair}", f"CIFAR-100 {pair}, the configs' recipes (configs/cifar100/)", cells
    )
  cells["teacher"] = common.fmnist_teacher_cell()
  cells["student"] = common.fmnist_student_cell()
  cells["kd"] = common.fmnist_distill_cell(kd_config("resnet32x4-resnet8x4"), "KD")
  for k, (cfg, _, _) in extra.items():
    cells[k] = common.fmnist_distill_cell(cfg, LABELS.get(k, k))
  return common.family(f"{name}_fmnist", common.FMNIST_SETTING, cells, tiny=tiny)
