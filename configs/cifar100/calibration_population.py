r"""Calibration-and-KD teacher population: teacher capacity x training schedule, and the students
distilled from each population member (CIFAR-100; CIFAR-10: ``configs/cifar10/calibration_population.py``;
Tiny-ImageNet: ``configs/tiny_imagenet/calibration_population.py``).

Citation: Fan et al., "Revisit the Essence of Distilling Knowledge through Calibration", ICML 2024
(no code released; methods.md §2.3-§2.4). The correlation study varies the teacher's calibration
through its **capacity** (ResNet / WRN / MobileNetV2 families) and its **training length**: the
paper's 100-epoch schedule with the learning-rate decay after epoch 50, and the full schedule.

Teacher argument ``teacher:<arch>,<schedule>``:
  ``short100``  100 epochs, lr x0.1 at epochs 50 and 75 (the paper: "decay after epoch 50"; the
                second milestone and the factor are NF, **design decision**), lr 0.05 (0.01 for
                MobileNetV2/ShuffleNets), SGD 0.9, wd 5e-4, batch 64.
  ``full``      the canonical RepDistiller teacher recipe (240 epochs, 150/180/210;
                ``configs/cifar100/teacher.py``).
Both keep a checkpoint every 10 epochs (early-stopped teachers: ``teacher.which=epoch:N``).
Both hold ``VAL_EXAMPLES[dataset]`` training examples out (``dataset.val_examples``: 5,000 of
CIFAR's 50,000, 10,000 of Tiny-ImageNet's 100,000; stratified, seed ``dataset.val_seed`` 0,
``kdjax/data/holdout.py``) and train on the rest: the validation split the temperature-scaled
control fits T on (**design decision**: the paper does not say whether its teachers saw the whole
training split; ``--config.dataset.val_examples=0`` trains on all of it, and the study then
refuses ``--temperature_scaled`` for that teacher).

Student argument ``<student>,<loss>,<arch>,<schedule>``: ``configs/cifar100/calibration_kd.py``'s
student recipe (200 epochs, lr 0.03, CE weight 0, α = 1) distilled from the population teacher
``runs/<dataset>/calib_teacher_<arch>_<schedule>`` with ``loss`` one of ``kl`` (τ = 1.8),
``listmle``, ``pairwise_ranking``, ``pld``, ``spearman``, ``kendall`` (soft rank correlation,
τ_r = 0.1 on the logit scale; :mod:`kdjax.losses.ranking_corr`). Every ranking loss is a
**CANDIDATE** for the paper's calibration-insensitive loss, whose formula is unknown.

Temperature-scaled teacher variants (methods.md §2.3 step 6): ``launch/calibration_study.py
--temperature_scaled`` fits T by NLL on each teacher's own held-out split (rebuilt from the
teacher run's ``config.json``; never on images it trained on) and distils from the scaled teacher
too; or pass ``--config.teacher.temperature`` by hand.

Launch::

  python -m launch.train_teacher \
      --config configs/cifar100/calibration_population.py:teacher:resnet110,short100 \
      --workdir runs/cifar100/calib_teacher_resnet110_short100
  python -m launch.distill \
      --config configs/cifar100/calibration_population.py:resnet8x4,spearman,resnet110,short100 \
      --workdir runs/cifar100/calib_spearman_resnet110_short100-resnet8x4
  python -m launch.calibration_study \
      --config configs/cifar100/calibration_population.py:resnet8x4,kl,resnet110,short100 \
      --teachers runs/cifar100/calib_teacher_resnet110_short100,runs/cifar100/calib_teacher_resnet110_full \
      --out runs/cifar100/calib_study --temperature_scaled

Published numbers: NONE. The paper's results (its Table 1 and correlation figures) have not been
transcribed (methods.md §2.5: no PDF text available to us), so no cell here claims a paper
number; ``PUBLISHED`` stays empty until they are.
"""

from configs.cifar100 import calibration_kd, common

# capacity ladder per family (RepDistiller CIFAR zoo)
CAPACITY = (
  "resnet20",
  "resnet32",
  "resnet56",
  "resnet110",
  "resnet32x4",
  "wrn_16_2",
  "wrn_40_1",
  "wrn_40_2",
  "MobileNetV2",
)
SCHEDULES = ("short100", "full")
RANK_CORR = {"spearman": dict(temperature=0.1), "kendall": dict(temperature=0.1)}
LOSSES = {**calibration_kd.LOSSES, **RANK_CORR}
STUDENTS = calibration_kd.STUDENTS
DATASET = "cifar100"
PUBLISHED = {}
# training examples each population teacher holds out as its validation split (design decision)
VAL_EXAMPLES = {"cifar100": 5000, "cifar10": 5000, "tiny_imagenet": 10000}


def teacher_workdir(arch: str, schedule: str, dataset: str = DATASET) -> str:
  return f"runs/{dataset}/calib_teacher_{arch}_{schedule}"


def _check(value, allowed, what):
  if value not in allowed:
    raise ValueError(
      f"calibration_population: unknown {what} {value!r}; choose one of {list(allowed)}."
    )


def teacher_config(arch: str, schedule: str, dataset: str = DATASET):
  _check(arch, CAPACITY, "teacher")
  _check(schedule, SCHEDULES, "schedule")
  c = common.recipe(arch)
  c.dataset.name = dataset
  if schedule == "short100":
    c.num_epochs = 100
    c.optim.milestones = (50, 75)
    c.optim.epochs = 100
  c.keep_every_epochs = 10
  c.dataset.val_examples = VAL_EXAMPLES[dataset]
  return c


def student_config(student: str, loss: str, arch: str, schedule: str, dataset: str = DATASET):
  _check(loss, LOSSES, "loss")
  _check(arch, CAPACITY, "teacher")
  _check(schedule, SCHEDULES, "schedule")
  base_loss = loss if loss in calibration_kd.LOSSES else "kl"
  c = calibration_kd.get_config(f"{student},{base_loss}")
  c.dataset.name = dataset
  if loss in RANK_CORR:
    c.method.terms = {loss: dict(weight=1.0, **RANK_CORR[loss])}
    c.method.name = f"calibration_{loss}"
  c.teacher.workdir = teacher_workdir(arch, schedule, dataset)
  return c


def get_config(arg: str = "teacher:resnet110,short100", dataset: str = DATASET):
  arg = str(arg)
  if arg.startswith("teacher:"):
    parts = arg.partition(":")[2].split(",")
    if len(parts) != 2:
      raise ValueError(f"Expected 'teacher:<arch>,<schedule>', got {arg!r}.")
    return teacher_config(parts[0].strip(), parts[1].strip(), dataset)
  parts = [p.strip() for p in arg.split(",")]
  if len(parts) != 4:
    raise ValueError(
      f"Expected '<student>,<loss>,<teacher arch>,<schedule>' or "
      f"'teacher:<arch>,<schedule>', got {arg!r}."
    )
  return student_config(*parts, dataset=dataset)
