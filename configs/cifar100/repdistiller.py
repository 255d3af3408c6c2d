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
  at      attention     1    0    1000    at@n (p = 2)               -
  sp      similarity    1    0    3000    sp@n (last stage)          -
  cc      correlation   1    0    0.02    cc                         2 x LinearEmbed(128)
  vid     vid           1    0    1       vid@n                      VIDRegressor per stage
  rkd     rkd           1    0    1       rkd (25, 50)               -
  pkt     pkt           1    0    30000   pkt                        -
  ab      abound        1    0    (1)     ab@n (preact stages)       init stage, see below
  ft      factor        1    0    200     ft@n (last stage)          init stage, see below
  fsp     fsp           1    0    (50)    fsp@n (stem + stages)      init stage, see below
  nst     nst           1    0    50      nst@n                      -
  crd     crd           1    0    0.8     crd                        2 x Embed(128), memory banks

``n`` is the number of stages of the pair (3 for CIFAR ResNet / WRN / ShuffleNet, 4 for VGG,
MobileNetV2, ResNet50; ``kdjax.methods.terms.staged_term``). CRD: feat_dim 128, nce_k 16384,
nce_t 0.07, nce_m 0.5, ``mode='exact'`` (train_student.py defaults); negatives
``'other_class'`` (approximates ``CIFAR100InstanceSample``: other-class indices; kdjax draws
with replacement and learns the labels of the index space during the first epoch; the reference
draws without replacement from the known labels).

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
from kdjax import models
from kdjax.config import base_config
from kdjax.methods.terms import staged_term

LOW_LR = ("MobileNetV2", "ShuffleV1", "ShuffleV2")
METHOD_ORDER = ("kd", "fitnet", "at", "sp", "cc", "vid", "rkd", "pkt", "ab", "ft", "fsp", "nst",
                "crd")

# method -> (r = ce_weight, a = KD weight, b = method weight, staged?, term hyper-parameters)
METHODS = {
    "kd": (0.1, 0.9, 0.0, False, {}),
    "fitnet": (1.0, 0.0, 100.0, False, {}),
    "at": (1.0, 0.0, 1000.0, True, dict(p=2.0)),
    "sp": (1.0, 0.0, 3000.0, True, {}),
    "cc": (1.0, 0.0, 0.02, False, dict(feat_dim=128)),
    "vid": (1.0, 0.0, 1.0, True, dict(init_pred_var=5.0, eps=1e-5)),
    "rkd": (1.0, 0.0, 1.0, False, dict(w_dist=25.0, w_angle=50.0)),
    "pkt": (1.0, 0.0, 30000.0, False, {}),
    "ab": (1.0, 0.0, 1.0, True, dict(margin=1.0)),
    "ft": (1.0, 0.0, 200.0, True, dict(k=0.5, p1=2, p2=1, paraphraser_recon_weight=0.0)),
    "fsp": (1.0, 0.0, 50.0, True, {}),
    "nst": (1.0, 0.0, 50.0, True, {}),
    "crd": (1.0, 0.0, 0.8, False, dict(feat_dim=128, nce_k=16384, nce_t=0.07, nce_m=0.5,
                                       negatives="other_class")),
}


# Two-stage methods: RepDistiller's init stage (helper/pretrain.py:init, --init_epochs 30).
# method -> (init term (loss name, its hparams), init trainable, main-stage trainable); the init
# term has weight 1 (beta is not applied) and the method's key (FT: shares the ft connector).
INIT_EPOCHS = 30
INIT_STAGE = {
    "ab": ("ab", dict(margin=1.0), "student_features+connectors", "student"),
    "ft": ("ft_paraphraser", dict(k=0.5), "connectors/ft/paraphraser",
           "student+connectors/ft/translator"),
    "fsp": ("fsp", {}, "student_features", "student"),
}
# pretrain.py: lr 0.01 for the factor (FT) init stage with these students, else the main lr.
FT_INIT_LR_001 = ("resnet8", "resnet14", "resnet20", "resnet32", "resnet44", "resnet56",
                  "resnet110", "resnet8x4", "resnet32x4", "wrn_16_1", "wrn_16_2", "wrn_40_1",
                  "wrn_40_2")


def _row(*values):
  return {m: v for m, v in zip(METHOD_ORDER, values)}


# pair -> (teacher, student, published teacher, published student, {method: published top-1})
PAIRS = {
    "wrn_40_2-wrn_16_2": ("wrn_40_2", "wrn_16_2", 75.61, 73.26, _row(
        74.92, 73.58, 74.08, 73.83, 73.56, 74.11, 73.35, 74.54, 72.50, 73.25, 72.91, 73.68, 75.48)),
    "wrn_40_2-wrn_40_1": ("wrn_40_2", "wrn_40_1", 75.61, 71.98, _row(
        73.54, 72.24, 72.77, 72.43, 72.21, 73.30, 72.22, 73.45, 72.38, 71.59, None, 72.24, 74.14)),
    "resnet56-resnet20": ("resnet56", "resnet20", 72.34, 69.06, _row(
        70.66, 69.21, 70.55, 69.67, 69.63, 70.38, 69.61, 70.34, 69.47, 69.84, 69.95, 69.60, 71.16)),
    "resnet110-resnet20": ("resnet110", "resnet20", 74.31, 69.06, _row(
        70.67, 68.99, 70.22, 70.04, 69.48, 70.16, 69.25, 70.25, 69.53, 70.22, 70.11, 69.53, 71.46)),
    "resnet110-resnet32": ("resnet110", "resnet32", 74.31, 71.14, _row(
        73.08, 71.06, 72.31, 72.69, 71.48, 72.61, 71.82, 72.61, 70.98, 72.37, 71.89, 71.96, 73.48)),
    "resnet32x4-resnet8x4": ("resnet32x4", "resnet8x4", 79.42, 72.50, _row(
        73.33, 73.50, 73.44, 72.94, 72.97, 73.09, 71.90, 73.64, 73.17, 72.86, 72.62, 73.30, 75.51)),
    "vgg13-vgg8": ("vgg13", "vgg8", 74.64, 70.36, _row(
        72.98, 71.02, 71.43, 72.68, 70.71, 71.23, 71.48, 72.88, 70.94, 70.58, 70.23, 71.53, 73.94)),
    "vgg13-MobileNetV2": ("vgg13", "MobileNetV2", 74.64, 64.60, _row(
        67.37, 64.14, 59.40, 66.30, 64.86, 65.56, 64.52, 67.13, 66.06, 61.78, None, 58.16, 69.73)),
    "ResNet50-MobileNetV2": ("ResNet50", "MobileNetV2", 79.34, 64.60, _row(
        67.35, 63.16, 58.58, 68.08, 65.43, 67.57, 64.43, 66.52, 67.20, 60.99, None, 64.96, 69.11)),
    "ResNet50-vgg8": ("ResNet50", "vgg8", 79.34, 70.36, _row(
        73.81, 70.69, 71.84, 73.34, 70.25, 70.30, 71.50, 73.01, 70.65, 70.29, None, 71.28, 74.30)),
    "resnet32x4-ShuffleV1": ("resnet32x4", "ShuffleV1", 79.42, 70.50, _row(
        74.07, 73.59, 71.73, 73.48, 71.14, 73.38, 72.28, 74.10, 73.55, 71.75, None, 74.12, 75.11)),
    "resnet32x4-ShuffleV2": ("resnet32x4", "ShuffleV2", 79.42, 71.82, _row(
        74.45, 73.54, 72.73, 74.56, 71.29, 73.40, 73.21, 74.69, 74.31, 72.50, None, 74.68, 75.65)),
    "wrn_40_2-ShuffleV1": ("wrn_40_2", "ShuffleV1", 75.61, 70.50, _row(
        74.83, 73.73, 73.32, 74.52, 71.38, 73.61, 72.21, 73.89, 73.34, 72.03, None, 74.89, 76.05)),
}


def num_stages(model_name: str) -> int:
  """The model's number of stages (``num_stages`` class attribute of the kdjax zoo module)."""
  return int(models.get(model_name, num_classes=100).num_stages)


def parse(arg: str):
  """``'METHOD:TEACHER-STUDENT'`` -> ``(method, pair)``; raises ValueError on unknown values."""
  method, sep, pair = str(arg).partition(":")
  if not sep or method not in METHODS:
    raise ValueError(f"Expected 'METHOD:TEACHER-STUDENT' with METHOD in {list(METHOD_ORDER)}; "
                     f"got {arg!r}.")
  if pair not in PAIRS:
    raise ValueError(f"Unknown pair {pair!r}; choose one of {sorted(PAIRS)}.")
  return method, pair


def get_config(arg: str = "crd:resnet32x4-resnet8x4"):
  method, pair = parse(arg)
  teacher, student, _, _, published = PAIRS[pair]
  if published[method] is None:
    raise ValueError(
        f"{method} is N/A for {pair} in RepDistiller: FSP needs equal channel counts at every "
        "tap (its FSP matrices are compared elementwise), which holds only for the "
        "same-architecture pairs other than wrn_40_2-wrn_40_1.")
  r, a, b, staged, hparams = METHODS[method]
  c = base_config()
  c.model = student
  c.dataset.name = "cifar100"
  c.teacher.workdir = f"runs/cifar100/teacher_{teacher}"
  c.method.name = f"repdistiller_{method}"
  c.method.ce_weight = r
  if a:
    c.method.terms.kd = dict(weight=a, temperature=4.0, t2_scale=True)
  if method != "kd":
    if method == "fitnet":
      loss = staged_term("fitnet", 2)                      # --hint_layer 2 (default)
    elif staged:
      loss = staged_term(method, min(num_stages(student), num_stages(teacher)))
    else:
      loss = method
    if method in INIT_STAGE:
      init_loss, init_hp, init_trainable, main_trainable = INIT_STAGE[method]
      n = min(num_stages(student), num_stages(teacher))
      c.method.init.epochs = INIT_EPOCHS
      c.method.init.ce_weight = 0.0
      c.method.init.terms[method] = dict(loss=staged_term(init_loss, n), weight=1.0, **init_hp)
      c.method.init.trainable = init_trainable
      c.method.trainable = main_trainable
    if method not in ("ab", "fsp"):                        # ab, fsp: main stage is CE alone
      c.method.terms[method] = dict(loss=loss, weight=b, **hparams)
  c.optim.lr = 0.01 if student in LOW_LR else 0.05
  if method in INIT_STAGE:
    c.method.init.lr = 0.01 if method == "ft" and student in FT_INIT_LR_001 else c.optim.lr
  c.optim.milestones = (150, 180, 210)
  c.num_epochs = 240
  c.checkpoint_every_steps = 782 * 5
  return c
