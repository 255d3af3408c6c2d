r"""Imports a PyTorch teacher checkpoint (RepDistiller, mdistiller, torchvision) as a kdjax model.

  python -m launch.import_teacher --arch resnet32x4 --pth ckpt_epoch_240.pth \
      --workdir runs/cifar100/resnet32x4_torch [--dataset cifar100] [--num_classes 100]
Writes ``<workdir>/kept/0`` (a model checkpoint that ``config.teacher.workdir`` accepts) after
checking that every tensor maps onto the kdjax model; ``--pth`` may also be a ``.npz`` of
name -> array. Reading ``.pth`` files needs ``pip install kdjax[torch]``.
"""

from absl import app, flags

from kdjax import cli
from kdjax.teachers.import_torch import import_teacher

_ARCH = flags.DEFINE_string(
  "arch", None, "kdjax model name (python -c 'import kdjax.models as m; print(m.names())')."
)
_PTH = flags.DEFINE_string("pth", None, "PyTorch checkpoint (.pth/.pt) or .npz state dict.")
_WORKDIR = flags.DEFINE_string("workdir", None, "New directory for the kdjax model checkpoint.")
_DATASET = flags.DEFINE_string("dataset", "cifar100", "Dataset the teacher was trained on.")
_NUM_CLASSES = flags.DEFINE_integer(
  "num_classes", None, "Output classes (default: read from the checkpoint's fc)."
)


def main(argv):
  del argv
  cli.guarded(
    import_teacher,
    cli.require(_ARCH.value, "arch"),
    cli.require(_PTH.value, "pth"),
    cli.require(_WORKDIR.value, "workdir"),
    dataset=_DATASET.value,
    num_classes=_NUM_CLASSES.value,
  )


if __name__ == "__main__":
  app.run(main, flags_parser=cli.parse_flags)
