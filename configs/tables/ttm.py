r"""Table family: TTM, WTTM, WTTM + CRD, WTTM + ITRD, ITRD and WTTM without CE (Zheng & Yang,
"Knowledge Distillation Based on Transformed Teacher Matching", ICLR 2024, Tables 1-3, 6, 8, 9).

Cells: the teacher, the student alone, KD (RepDistiller's), TTM and WTTM
(``configs/cifar100/ttm.py``), WTTM + CRD (``wttm_crd.py``), WTTM + ITRD and ITRD
(``wttm_itrd.py``) and, on the seven same-architecture pairs, WTTM without CE (Table 6,
``wttm_noce.py``). Published numbers: each config's ``PAIRS`` table (TTM paper / zkxufo/TTM
README; ITRD as the TTM paper prints it; Table 6's WTTM-without-CE column).

  python -m launch.table --config configs/tables/ttm.py:cifar100 --out runs/tables/ttm     # GPU
  python -m launch.table --config configs/tables/ttm.py:fmnist --out runs/tables/ttm_fmnist

``ARG``: ``cifar100[,PAIR]`` (one of the 13 pairs of ``configs/cifar100/ttm.py``), ``fmnist`` or
``fmnist,tiny``.
"""

from configs.cifar100 import ttm, wttm_crd, wttm_itrd, wttm_noce
from configs.tables import baselines, common


def extra_cells(pair: str) -> dict:
  """``{cell: (config, published, source)}`` of the TTM-paper methods on ``pair``."""
  out = {
    "ttm": (ttm.get_config(f"ttm:{pair}"), ttm.PAIRS[pair][4], "configs/cifar100/ttm.py PAIRS"),
    "wttm": (
      ttm.get_config(f"wttm:{pair}"),
      ttm.WTTM_PAIRS[pair][4],
      "configs/cifar100/ttm.py WTTM_PAIRS",
    ),
    "wttm_crd": (
      wttm_crd.get_config(pair),
      wttm_crd.PAIRS[pair][4],
      "configs/cifar100/wttm_crd.py PAIRS",
    ),
    "wttm_itrd": (
      wttm_itrd.get_config(pair),
      wttm_itrd.PAIRS[pair][2],
      "configs/cifar100/wttm_itrd.py PAIRS",
    ),
    "itrd": (
      wttm_itrd.get_config(f"itrd:{pair}"),
      wttm_itrd.PAIRS[pair][3],
      "configs/cifar100/wttm_itrd.py PAIRS (ITRD column)",
    ),
  }
  if pair in wttm_noce.PAIRS:
    out["wttm_noce"] = (
      wttm_noce.get_config(pair),
      wttm_noce.PUBLISHED[pair],
      "configs/cifar100/wttm_noce.py PUBLISHED (Table 6)",
    )
  return out


def get_config(arg: str = "cifar100"):
  setting, pair, tiny = common.parse(arg, ttm.PAIRS, "resnet32x4-resnet8x4", "tables/ttm")
  src = pair if setting == "cifar100" else "resnet32x4-resnet8x4"
  return baselines.logit_family("ttm", setting, pair, tiny, extra_cells(src))
