r"""SFTN stage 1: train a student-friendly teacher (teacher + student branches, jointly).

Citation: Park, Cho, Wang, Han, Kim, Kim, Han. "Learning Student-Friendly Teacher Networks for
Knowledge Distillation", NeurIPS 2021 (methods.md §4). No official code; defaults and loss
reduction from the unofficial reimplementation kimyuji/SFTN_kd (``train_student_aware_teacher.py``,
``helper/loops.py:train_sftn``).

``get_config('<teacher>-<student>')`` for the CIFAR-100 pairs of ``PAIRS``: the RepDistiller
teacher recipe (``configs/cifar100/teacher.py``: SGD 0.9, wd 5e-4, lr 0.05 x0.1 at 150/180/210,
240 epochs, batch 64; kimyuji/SFTN_kd uses lr 0.05 for every pair, so do we) with
``config.model = 'sftn'`` and the loss of methods.md §4.2/§4.3 at its defaults::

  L = λ_T CE(z_T, y) + λ_R^CE mean_i CE(z_R^i, y) + λ_R^KL mean_i τ² KL(p_T^τ ‖ p_R^{i,τ})
  λ_T = 1 (method.ce_weight), λ_R^CE = 1, λ_R^KL = 3, τ = 1 (method.terms.sftn)

Design-decision options (methods.md §4.2 table; the paper's choices are unverified) are config
keys: ``model_kwargs.{branch_points, share_student_blocks, detach_branch_input}`` and
``method.terms.sftn.{kl_direction, detach_teacher_logits_in_kl, branch_reduce, t2_scale}``.

``get_config('fmnist:resnet20-resnet8')``: the offline Fashion-MNIST evidence run, on exactly the
schedule of ``configs/fashion_mnist.py:teacher`` (resnet20, 10,000 examples, 2 epochs, cosine);
not a paper setting.

The control is a standard CE-only teacher of the same architecture on the same schedule:
``configs/cifar100/teacher.py:<teacher arch>`` (``configs/fashion_mnist.py:teacher`` for the
Fashion-MNIST run); stage 2 uses identical student settings for both teachers.

Launch (CIFAR-100, ``PAIR`` a key of ``PAIRS``, e.g. resnet32x4-resnet8x4)::

  # stage 1: SFTN teacher (and the control teacher)
  python -m launch.train_teacher --config configs/sftn.py:resnet32x4-resnet8x4 \
      --workdir runs/cifar100/sftn_resnet32x4-resnet8x4
  python -m launch.train_teacher --config configs/cifar100/teacher.py:resnet32x4 \
      --workdir runs/cifar100/teacher_resnet32x4
  # stage 3: drop the branches
  python -m launch.export_teacher --workdir runs/cifar100/sftn_resnet32x4-resnet8x4 \
      --out runs/cifar100/sftn_teacher_resnet32x4-resnet8x4
  # stage 4: any distiller, unchanged (and again with the control teacher)
  python -m launch.distill --config configs/cifar100/kd.py:resnet32x4-resnet8x4 \
      --workdir runs/cifar100/kd_sftn_resnet32x4-resnet8x4 \
      --config.teacher.workdir runs/cifar100/sftn_teacher_resnet32x4-resnet8x4

Fashion-MNIST::

  python -m launch.train_teacher --config configs/sftn.py:fmnist:resnet20-resnet8 \
      --workdir runs/fm/sftn_resnet20-resnet8
  python -m launch.export_teacher --workdir runs/fm/sftn_resnet20-resnet8 --out runs/fm/sftn_teacher
  python -m launch.distill --config configs/fashion_mnist.py:kd --workdir runs/fm/kd_sftn \
      --config.teacher.workdir runs/fm/sftn_teacher
  # control: configs/fashion_mnist.py:teacher -> runs/fm/teacher, then the same distill command

Fine-tune mode (methods.md §4.3 step 5, unverified: our reading): start from a trained standard
teacher with ``--config.model_kwargs.init_teacher_from runs/cifar100/teacher_resnet32x4`` and a
60-epoch schedule (``--config.num_epochs 60`` and matching ``optim.milestones``); needs the train
loop to call ``kdjax.teachers.sftn.load_pretrained_teacher``.

Published numbers (methods.md §4.4). Per-pair accuracies (paper Tables 1-3) are not transcribed
yet, so none is cited here. For orientation only (unverified: our reading of the paper): average
student gains of +1.58 % on CIFAR-100 (Table 1), +1.51 % for heterogeneous pairs (Table 2),
+0.52 % ImageNet top-1 (Table 3); teacher-student KL down by more than 50 % and CKA up by about 7
points (Table 10). Expected teacher accuracy: an SFTN teacher is *less* accurate than a standard
one; kimyuji/SFTN_kd's committed logs (unofficial reimplementation) show an SFTN resnet32x4 at
77.96 and 78.40 (epoch 240) vs 79.42 for the standard RepDistiller teacher.
Runtime: a resnet32x4 teacher plus two resnet8x4 branches, 240 x 782 steps: use a GPU.
"""

from configs import quickstart
from configs.cifar100 import teacher as teacher_cfg

# pair -> (teacher, student); every pair has equal stage counts (methods.md §4.2).
PAIRS = {
  "resnet32x4-resnet8x4": ("resnet32x4", "resnet8x4"),
  "wrn_40_2-wrn_16_2": ("wrn_40_2", "wrn_16_2"),
  "vgg13-vgg8": ("vgg13", "vgg8"),
  "resnet32x4-ShuffleV1": ("resnet32x4", "ShuffleV1"),
  "resnet32x4-ShuffleV2": ("resnet32x4", "ShuffleV2"),
  "ResNet50-MobileNetV2": ("ResNet50", "MobileNetV2"),
}
FMNIST_PAIRS = {"resnet20-resnet8": ("resnet20", "resnet8")}

# methods.md §4.2/§4.3 defaults (kimyuji/SFTN_kd: -r 1 -a 3 -b 1 --kd_T 1).
LAMBDA_T, LAMBDA_R_CE, LAMBDA_R_KL, TAU = 1.0, 1.0, 3.0, 1.0


def _sftn(c, teacher: str, student: str):
  c.model = "sftn"
  mk = c.model_kwargs
  mk.teacher = teacher
  mk.student = student
  mk.share_student_blocks = False
  mk.detach_branch_input = False
  mk.init_teacher_from = ""
  # branch_points: unset = every stage boundary 1..N-1; a subset, e.g. (2,), in Python configs.
  c.method.name = "sftn"
  c.method.ce_weight = LAMBDA_T
  c.method.terms.sftn = dict(
    weight=1.0,
    ce_weight=LAMBDA_R_CE,
    kl_weight=LAMBDA_R_KL,
    temperature=TAU,
    kl_direction="teacher_to_branch",
    t2_scale=True,
    detach_teacher_logits_in_kl=False,
    branch_reduce="mean",
  )
  return c


def get_config(arg: str = "resnet32x4-resnet8x4"):
  if arg.startswith("fmnist:"):
    pair = arg[len("fmnist:") :]
    if pair not in FMNIST_PAIRS:
      raise ValueError(
        f"configs/sftn.py: unknown Fashion-MNIST pair {pair!r}; choose one of "
        f"{sorted(FMNIST_PAIRS)}."
      )
    t, s = FMNIST_PAIRS[pair]
    c = quickstart.get_config().teacher  # the control's exact schedule
    if c.model != t:
      raise ValueError(f"configs/fashion_mnist.py:teacher trains {c.model!r}, not {t!r}.")
    return _sftn(c, t, s)
  if arg not in PAIRS:
    raise ValueError(
      f"configs/sftn.py: unknown pair {arg!r}; choose one of {sorted(PAIRS)} or "
      f"'fmnist:<pair>' with <pair> in {sorted(FMNIST_PAIRS)}."
    )
  t, s = PAIRS[arg]
  return _sftn(teacher_cfg.get_config(t), t, s)
