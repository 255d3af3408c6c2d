r"""WTTM on CIFAR-100: an alias of ``configs/cifar100/ttm.py:wttm:<pair>``, kept so that
``--config configs/cifar100/wttm.py:<pair>`` keeps working (same config, same published table).

  python -m launch.distill --config configs/cifar100/wttm.py:resnet32x4-resnet8x4 \
      --workdir runs/cifar100/wttm_resnet32x4-resnet8x4 \
      --config.teacher.workdir runs/cifar100/teacher_resnet32x4
"""

from configs.cifar100 import ttm

__doc__ += "\nFrom configs/cifar100/ttm.py:\n\n" + ttm.__doc__
PAIRS = ttm.WTTM_PAIRS


def get_config(pair: str = "resnet32x4-resnet8x4"):
  return ttm.get_config(f"wttm:{pair}")
