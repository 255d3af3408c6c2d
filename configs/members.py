r"""Run configs for ``launch/members.py`` (N seeds of one run in one vmapped step).

  python -m launch.members --config configs/members.py:fmnist_student --seeds 0,1,2,3 \
      --workdir runs/fm/student_members
  python -m launch.members --config configs/members.py:fmnist_kd --seeds 0,1,2,3 \
      --workdir runs/fm/kd_members --config.teacher.workdir runs/fm/teacher
  python -m launch.members --config configs/members.py:cifar100_kd:resnet32x4-resnet8x4 \
      --seeds 0,1,2 --workdir runs/cifar100/kd_r32x4_r8x4_members \
      --config.teacher.workdir runs/cifar100/teacher_resnet32x4

Any run config works with ``launch/members.py``; these are the Fashion-MNIST quickstart's student
runs (``configs/fmnist_quickstart.py``) and the CIFAR-100 KD pairs of ``configs/cifar100/kd.py``
(published numbers there; RepDistiller reports one run, kdjax the mean ± std over members).
"""

from configs import fmnist_quickstart
from configs.cifar100 import kd


def get_config(arg: str = "fmnist_kd"):
  name, _, rest = arg.partition(":")
  if name in ("fmnist_kd", "fmnist_student"):
    fam = fmnist_quickstart.get_config()
    return fam.cells["kd" if name == "fmnist_kd" else "student"].run
  if name == "cifar100_kd":
    return kd.get_config(rest or "resnet32x4-resnet8x4")
  raise ValueError(
    f"configs/members.py: unknown config {arg!r}; use fmnist_kd, fmnist_student "
    "or cifar100_kd:<pair>."
  )
