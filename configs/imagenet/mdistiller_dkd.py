r"""mdistiller's ImageNet DKD table: KD and DKD for ResNet-34 -> ResNet-18 and ResNet-50 ->
MobileNetV1, with mdistiller's own yaml files.

Citation: Zhao, Cui, Song, Qiu, Liang. "Decoupled Knowledge Distillation", CVPR 2022
(megvii-research/mdistiller ``configs/imagenet/r34_r18/{kd,dkd}.yaml``,
``configs/imagenet/r50_mv1/{kd,dkd}.yaml``, ``mdistiller/distillers/{KD,DKD}.py``).

* ``kd``: ``0.5·CE + 0.5·T²·KL`` at T 1 (``KD.TEMPERATURE 1``, ``CE_WEIGHT 0.5``,
  ``KD_WEIGHT 0.5``); term ``kd``.
* ``dkd``: ``CE + min(epoch / 1, 1)·(α·TCKD + β·NCKD)`` with CE 1, α 1 (cfg default), T 1,
  warm-up 1 epoch, β 0.5 (R34 -> R18) / 2.0 (R50 -> MBv1); term ``dkd``.
* Schedule (both): batch 512, SGD lr 0.2, momentum 0.9, wd 1e-4, 100 epochs, x0.1 at 30/60/90;
  teachers are torchvision's pretrained ResNet-34 / ResNet-50; the student MobileNetV1 is
  mdistiller's (``mobilenetv1_imagenet``).

Launch (``CELL`` is ``method:teacher-student``, a key of ``CELLS``)::

  python -m launch.distill --config configs/imagenet/mdistiller_dkd.py:dkd:resnet34-resnet18 \
      --workdir runs/imagenet/mdistiller_dkd_resnet34-resnet18 \
      --config.dataset.data_dir ~/tensorflow_datasets

(the teacher: ``python -m launch.import_teacher --arch resnet34_imagenet --pth
resnet34-b627a593.pth --workdir runs/imagenet/teacher_resnet34 --dataset imagenet2012``).

Published top-1 (%), ImageNet val (mdistiller README, "On ImageNet"):

  cell                       top-1
  kd:resnet34-resnet18       71.03
  dkd:resnet34-resnet18      71.70
  kd:resnet50-mobilenetv1    70.50
  dkd:resnet50-mobilenetv1   72.05

Runtime: 100 x 2503 steps (batch 512); use GPUs.
"""

from configs.imagenet import common
from configs.imagenet import ttm

CELLS = {
  ("kd", ttm.R34_R18): 71.03,
  ("dkd", ttm.R34_R18): 71.70,
  ("kd", ttm.R50_MV1): 70.50,
  ("dkd", ttm.R50_MV1): 72.05,
}


def get_config(cell: str = "dkd:resnet34-resnet18"):
  method, teacher, student, _ = common.parse(cell, CELLS, "configs/imagenet/mdistiller_dkd.py")
  c = common.recipe(student, teacher, "mdistiller_512")
  return ttm.method_block(c, method, teacher, student)  # same kd / dkd blocks as mdistiller
