r"""Single-run Fashion-MNIST configs (offline data): ``teacher``, ``student`` or ``kd``.

Not a paper setting; the small offline stand-in for CIFAR used by examples and end-to-end tests.
Optional second field ``,quick`` shrinks the run to a 2,000-example, 1-epoch smoke test.

  python -m launch.train_teacher --config configs/fashion_mnist.py:teacher --workdir runs/fm/teacher
  python -m launch.train_teacher --config configs/fashion_mnist.py:student --workdir runs/fm/student
  python -m launch.distill --config configs/fashion_mnist.py:kd --workdir runs/fm/kd \
      --config.teacher.workdir runs/fm/teacher
No published number: Fashion-MNIST is not in the papers' tables.
"""

from configs import quickstart


def get_config(arg: str = "kd"):
  role, _, size = arg.partition(",")
  qs = quickstart.get_config()
  if role not in ("teacher", "student", "kd"):
    raise ValueError(f"configs/fashion_mnist.py: unknown role {role!r}; use teacher|student|kd.")
  return quickstart.apply_size(qs[role], size, "configs/fashion_mnist.py")
