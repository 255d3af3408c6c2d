r"""RepDistiller's CIFAR-100 benchmark: 13 methods x 13 teacher-student pairs.

Citation: Tian, Krishnan, Isola, "Contrastive Representation Distillation", ICLR 2020, and its
benchmark code HobbitLong/RepDistiller (``train_student.py``, ``scripts/run_cifar_distill.sh``,
``README.md``). Wiring ``loss = r·CE + a·KD_T4 + b·L_method`` (methods.md §0.4); the flags below
are the ``-r/-a/-b`` of ``scripts/run_cifar_distill.sh`` (verified against that script and
methods.md §7.1; RepDistiller tuned them on resnet32x4->resnet8x4 and reuses them for every
pair):

  method  --distill     r    a    b       kdjax term (loss)          extra
  kd      kd            0.1  0.9  0       kd (T = 4)                 -
  fitnet  hint          1    0    100     fitnet (hint_layer 2)      ConvReg connector
  at      attention     1    0    1000    at (p = 2, all stages)     -
  sp      similarity    1    0    3000    sp (last stage)            -
  cc      correlation   1    0    0.02    cc                         2 x LinearEmbed(128)
  vid     vid           1    0    1       vid (all stages)           VIDRegressor per stage
  rkd     rkd           1    0    1       rkd (25, 50)               -
  pkt     pkt           1    0    30000   pkt                        -
  ab      abound        1    0    (1)     ab (preact stages)         init stage, see below
  ft      factor        1    0    200     ft (last stage)            init stage, see below
  fsp     fsp           1    0    (50)    fsp (stem + stages)        init stage, see below
  nst     nst           1    0    50      nst (all stages)           -
  crd     crd           1    0    0.8     crd                        2 x Embed(128), memory banks

The recipes are the library's presets (``kdjax.methods.preset(method)``, one per family module).
"All stages" is RepDistiller's ``feat[1:-1]``: ``stage1..N`` with N the pair's common stage count
(3 for CIFAR ResNet / WRN / ShuffleNet, 4 for VGG, MobileNetV2, ResNet50; resolved when the method
is bound to the models, ``layers='all'``), "last stage" its ``feat[-2]`` (``layer='last'``). CRD:
feat_dim 128, nce_k 16384, nce_t 0.07, nce_m 0.5, ``mode='exact'`` (train_student.py defaults);
negatives ``'other_class'`` (approximates ``CIFAR100InstanceSample``: other-class indices; kdjax
draws with replacement and learns the labels of the index space during the first epoch; the
reference draws without replacement from the known labels).

Recipe: the canonical RepDistiller schedule (methods.md §1): SGD 0.9, wd 5e-4, batch 64,
240 epochs, lr x0.1 at 150/180/210; lr 0.05, or 0.01 when the student is MobileNetV2, ShuffleV1
or ShuffleV2 (silent override in train_student.py). RepDistiller reports the LAST-epoch top-1 of
one run (kdjax records last and best).

Two-stage methods (methods.md §7.3; RepDistiller ``helper/pretrain.py:init``, ``--init_epochs
30``): ab, ft and fsp run a 30-epoch INIT stage (``config.method.init``, its own masked SGD at a
constant lr, same momentum and weight decay) before the 240 main epochs (fresh optimiser state,
lr schedule counted from the main stage's first epoch; 270 epochs in all):

* ab: init = the AB hinge (weight 1: β not applied) trains the AB connectors + the student's
  feature modules (``trainable = 'student_features+connectors'``: everything but the
  classifier), lr = optim.lr; main = CE alone (``loss_kd = 0``: no method term, b unused), the
  connector unused and not optimised (``method.trainable = 'student'``).
* fsp: init = the FSP loss (weight 1) trains the student's feature modules
  (``'student_features'``), lr = optim.lr; main = CE alone (b unused).
* ft: init = the Paraphraser alone (``'connectors/ft/paraphraser'``) by MSE reconstruction of
  the teacher's last stage (term ``ft_paraphraser`` under the same key ``ft``: one shared
  connector), lr 0.01 for resnet/WRN students (pretrain.py's list), else optim.lr; main = CE +
  200·FT with the Translator + student trainable and the Paraphraser frozen
  (``method.trainable = 'student+connectors/ft/translator'``; ``paraphraser_recon_weight = 0``).
* fsp is N/A (RepDistiller raises: channel counts differ) for wrn_40_2-wrn_40_1 (README prints
  0.00) and for every cross-architecture pair (no README row): ``get_config`` raises.

Launch (``ARG`` = ``METHOD:TEACHER-STUDENT``)::

  python -m launch.distill --config configs/cifar100/repdistiller.py:crd:resnet32x4-resnet8x4 \
      --workdir runs/cifar100/repdistiller/crd_resnet32x4-resnet8x4 \
      --config.teacher.workdir runs/cifar100/teacher_resnet32x4

Published top-1 (RepDistiller README = anchors.md §5.1 / §5.2; "-" = N/A):
  pair                   teach  stud   KD     FitNet AT     SP     CC     VID    RKD    PKT    AB     FT     FSP    NST    CRD
  wrn_40_2-wrn_16_2      75.61  73.26  74.92  73.58  74.08  73.83  73.56  74.11  73.35  74.54  72.50  73.25  72.91  73.68  75.48
  wrn_40_2-wrn_40_1      75.61  71.98  73.54  72.24  72.77  72.43  72.21  73.30  72.22  73.45  72.38  71.59  -      72.24  74.14
  resnet56-resnet20      72.34  69.06  70.66  69.21  70.55  69.67  69.63  70.38  69.61  70.34  69.47  69.84  69.95  69.60  71.16
  resnet110-resnet20     74.31  69.06  70.67  68.99  70.22  70.04  69.48  70.16  69.25  70.25  69.53  70.22  70.11  69.53  71.46
  resnet110-resnet32     74.31  71.14  73.08  71.06  72.31  72.69  71.48  72.61  71.82  72.61  70.98  72.37  71.89  71.96  73.48
  resnet32x4-resnet8x4   79.42  72.50  73.33  73.50  73.44  72.94  72.97  73.09  71.90  73.64  73.17  72.86  72.62  73.30  75.51
  vgg13-vgg8             74.64  70.36  72.98  71.02  71.43  72.68  70.71  71.23  71.48  72.88  70.94  70.58  70.23  71.53  73.94
  vgg13-MobileNetV2      74.64  64.60  67.37  64.14  59.40  66.30  64.86  65.56  64.52  67.13  66.06  61.78  -      58.16  69.73
  ResNet50-MobileNetV2   79.34  64.60  67.35  63.16  58.58  68.08  65.43  67.57  64.43  66.52  67.20  60.99  -      64.96  69.11
  ResNet50-vgg8          79.34  70.36  73.81  70.69  71.84  73.34  70.25  70.30  71.50  73.01  70.65  70.29  -      71.28  74.30
  resnet32x4-ShuffleV1   79.42  70.50  74.07  73.59  71.73  73.48  71.14  73.38  72.28  74.10  73.55  71.75  -      74.12  75.11
  resnet32x4-ShuffleV2   79.42  71.82  74.45  73.54  72.73  74.56  71.29  73.40  73.21  74.69  74.31  72.50  -      74.68  75.65
  wrn_40_2-ShuffleV1     75.61  70.50  74.83  73.73  73.32  74.52  71.38  73.61  72.21  73.89  73.34  72.03  -      74.89  76.05
Runtime: 240 x 782 steps per run (270 x 782 for ab, ft, fsp); use a GPU.
"""

from configs.cifar100 import common
from kdjax.methods import apply_preset, ft, presets

LOW_LR = common.LOW_LR
METHOD_ORDER = presets.REPDISTILLER
INIT_EPOCHS = 30  # --init_epochs 30 (ab, ft, fsp; kdjax.methods.preset)
FT_INIT_LR_001 = ft.INIT_LR_001_STUDENTS  # pretrain.py: FT's init stage at lr 0.01 for these


def _row(*values):
  return {m: v for m, v in zip(METHOD_ORDER, values)}


# pair -> (teacher, student, published teacher, published student, {method: published top-1})
PAIRS = {
  "wrn_40_2-wrn_16_2": (
    "wrn_40_2",
    "wrn_16_2",
    75.61,
    73.26,
    _row(74.92, 73.58, 74.08, 73.83, 73.56, 74.11, 73.35, 74.54, 72.50, 73.25, 72.91, 73.68, 75.48),
  ),
  "wrn_40_2-wrn_40_1": (
    "wrn_40_2",
    "wrn_40_1",
    75.61,
    71.98,
    _row(73.54, 72.24, 72.77, 72.43, 72.21, 73.30, 72.22, 73.45, 72.38, 71.59, None, 72.24, 74.14),
  ),
  "resnet56-resnet20": (
    "resnet56",
    "resnet20",
    72.34,
    69.06,
    _row(70.66, 69.21, 70.55, 69.67, 69.63, 70.38, 69.61, 70.34, 69.47, 69.84, 69.95, 69.60, 71.16),
  ),
  "resnet110-resnet20": (
    "resnet110",
    "resnet20",
    74.31,
    69.06,
    _row(70.67, 68.99, 70.22, 70.04, 69.48, 70.16, 69.25, 70.25, 69.53, 70.22, 70.11, 69.53, 71.46),
  ),
  "resnet110-resnet32": (
    "resnet110",
    "resnet32",
    74.31,
    71.14,
    _row(73.08, 71.06, 72.31, 72.69, 71.48, 72.61, 71.82, 72.61, 70.98, 72.37, 71.89, 71.96, 73.48),
  ),
  "resnet32x4-resnet8x4": (
    "resnet32x4",
    "resnet8x4",
    79.42,
    72.50,
    _row(73.33, 73.50, 73.44, 72.94, 72.97, 73.09, 71.90, 73.64, 73.17, 72.86, 72.62, 73.30, 75.51),
  ),
  "vgg13-vgg8": (
    "vgg13",
    "vgg8",
    74.64,
    70.36,
    _row(72.98, 71.02, 71.43, 72.68, 70.71, 71.23, 71.48, 72.88, 70.94, 70.58, 70.23, 71.53, 73.94),
  ),
  "vgg13-MobileNetV2": (
    "vgg13",
    "MobileNetV2",
    74.64,
    64.60,
    _row(67.37, 64.14, 59.40, 66.30, 64.86, 65.56, 64.52, 67.13, 66.06, 61.78, None, 58.16, 69.73),
  ),
  "ResNet50-MobileNetV2": (
    "ResNet50",
    "MobileNetV2",
    79.34,
    64.60,
    _row(67.35, 63.16, 58.58, 68.08, 65.43, 67.57, 64.43, 66.52, 67.20, 60.99, None, 64.96, 69.11),
  ),
  "ResNet50-vgg8": (
    "ResNet50",
    "vgg8",
    79.34,
    70.36,
    _row(73.81, 70.69, 71.84, 73.34, 70.25, 70.30, 71.50, 73.01, 70.65, 70.29, None, 71.28, 74.30),
  ),
  "resnet32x4-ShuffleV1": (
    "resnet32x4",
    "ShuffleV1",
    79.42,
    70.50,
    _row(74.07, 73.59, 71.73, 73.48, 71.14, 73.38, 72.28, 74.10, 73.55, 71.75, None, 74.12, 75.11),
  ),
  "resnet32x4-ShuffleV2": (
    "resnet32x4",
    "ShuffleV2",
    79.42,
    71.82,
    _row(74.45, 73.54, 72.73, 74.56, 71.29, 73.40, 73.21, 74.69, 74.31, 72.50, None, 74.68, 75.65),
  ),
  "wrn_40_2-ShuffleV1": (
    "wrn_40_2",
    "ShuffleV1",
    75.61,
    70.50,
    _row(74.83, 73.73, 73.32, 74.52, 71.38, 73.61, 72.21, 73.89, 73.34, 72.03, None, 74.89, 76.05),
  ),
}


def parse(arg: str):
  """``'METHOD:TEACHER-STUDENT'`` -> ``(method, pair)``; raises ValueError on unknown values."""
  method, sep, pair = str(arg).partition(":")
  if not sep or method not in METHOD_ORDER:
    raise ValueError(
      f"Expected 'METHOD:TEACHER-STUDENT' with METHOD in {list(METHOD_ORDER)}; got {arg!r}."
    )
  common.parse_pair(pair, PAIRS)
  return method, pair


def get_config(arg: str = "crd:resnet32x4-resnet8x4"):
  method, pair = parse(arg)
  teacher, student, _, _, published = PAIRS[pair]
  if published[method] is None:
    raise ValueError(
      f"{method} is N/A for {pair} in RepDistiller: FSP needs equal channel counts at every "
      "tap (its FSP matrices are compared elementwise), which holds only for the "
      "same-architecture pairs other than wrn_40_2-wrn_40_1."
    )
  c = common.recipe(student, teacher)
  apply_preset(c.method, method)
  c.method.name = f"repdistiller_{method}"
  if c.method.init.epochs:  # ab, ft, fsp: helper/pretrain.py's lr
    c.method.init.lr = 0.01 if method == "ft" and student in FT_INIT_LR_001 else c.optim.lr
  return c
