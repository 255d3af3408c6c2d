r"""Proposed CPU-sized converging benchmark on offline Fashion-MNIST (issue 13 item 3): a table
family for the table runner. NOT yet verified to converge: see docs/converge_fmnist/README.md.

  nice -n 10 python -m launch.table --config configs/fmnist_converge.py \
      --out runs/converge          # resumable; relaunch to continue

Teacher: resnet14 on all 60,000 training images, 15 epochs (7,035 steps of batch 128), SGD lr 0.1
cosine, wd 5e-4, crop + flip, a kept checkpoint every 5 epochs (checkpoint-KD teachers), seed 0.
Students: resnet8 on the first 5,000 training images, 60 epochs (2,400 steps of batch 128), alone
(CE) vs KD (0.1 CE + 0.9 T^2 KL, T = 4, RepDistiller's weights; and 0.5 CE + 0.5 KD, the
quickstart's) from the final teacher, seeds 0, 1, 2, evaluated on the
full 10,000-image test set every 5 epochs (the curves are ``test/top1`` in each run's
metrics.jsonl). No published number (Fashion-MNIST is not in the papers' tables).
"""

import ml_collections

from configs.fmnist_quickstart import kd_method, run_config


def get_config(arg: str = ""):
  del arg
  f = ml_collections.ConfigDict()
  f.name = "fmnist_converge"
  f.setting = (
    "Fashion-MNIST: teacher resnet14 on 60,000 images x 15 epochs; student resnet8 on "
    "the first 5,000 images x 60 epochs, alone vs KD (0.1 CE + 0.9 KD, T=4), same "
    "budget and seeds; full 10k test set"
  )
  f.seeds = (0, 1, 2)
  f.order = ("teacher", "student", "kd", "kd_half")
  teacher = run_config("resnet14", train_limit=0, epochs=15, eval_every=1)
  teacher.keep_every_epochs = 5
  teacher.checkpoint_every_steps = 200
  student = run_config("resnet8", train_limit=5000, epochs=60, eval_every=5)
  student.checkpoint_every_steps = 200
  f.cells = ml_collections.ConfigDict()
  f.cells.teacher = ml_collections.ConfigDict(dict(run=teacher, seeds=(0,), label="teacher"))
  f.cells.student = ml_collections.ConfigDict(dict(run=student, label="student alone"))
  f.cells.kd = ml_collections.ConfigDict(
    dict(
      run=kd_method(student.copy_and_resolve_references()),
      teacher_cell="teacher",
      label="student + KD",
    )
  )
  f.cells.kd_half = ml_collections.ConfigDict(
    dict(
      run=kd_method(student.copy_and_resolve_references(), ce_weight=0.5, kd_weight=0.5),
      teacher_cell="teacher",
      label="student + KD (0.5 CE + 0.5 KD)",
    )
  )
  return f
