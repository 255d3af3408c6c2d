r"""SFTN stage 2: every distiller **jointly with KD**, from the SFTN teacher or the standard
control, on the SFTN pairs; and the unknown-student setting.

Citation: Park et al., "Learning Student-Friendly Teacher Networks for Knowledge Distillation",
NeurIPS 2021 (methods.md §4.3 step 4; mission_audit A.3). The paper runs each feature distiller
*together with* KD, which RepDistiller's configs do not (they set ``-a 0``). Wiring here (our
reading, unverified: the paper's per-method weights are NF): RepDistiller's "X + KD" combination
``loss = 1·CE + 1·KD_T4 + b·L_X`` (the CRD README's ``--distill crd -a 1 -b 0.8`` form, r = 1),
with X's own term and ``b`` from ``configs/cifar100/repdistiller.py`` (its presets, init stages
included) and ``KD_T4 = T²·KL(p_t^4 ‖ p_s^4)``; ``kd`` alone is RepDistiller's KD (r 0.1, a 0.9).
OH is ``configs/cifar100/oh.py``'s term plus KD. Schedule: the canonical RepDistiller student
recipe (lr 0.01 for the ShuffleNet / MobileNetV2 students).

Argument ``<method>:<pair>[,<teacher>]`` with ``method`` in ``METHODS`` and ``pair`` in
``configs/sftn.py``'s ``PAIRS``:
  (default)      the SFTN teacher of this pair (stage 1 ``configs/cifar100/sftn_stage1.py:<pair>``,
                 exported to ``runs/cifar100/sftn_teacher_<pair>``).
  ``standard``   the control: a standard teacher (``configs/cifar100/teacher.py:<teacher>``).
  ``branch:<A>`` the **unknown-student** setting: the SFTN teacher was trained with the branches
                 of student A (``runs/cifar100/sftn_teacher_<teacher>-<A>``) and distils into the
                 pair's student B (B ≠ A; the SFTN paper's "student-unknown" experiment).

Launch::

  python -m launch.distill --config configs/cifar100/sftn_stage2.py:at:resnet32x4-resnet8x4 \
      --workdir runs/cifar100/sftn2_at_resnet32x4-resnet8x4
  python -m launch.distill \
      --config configs/cifar100/sftn_stage2.py:kd:resnet32x4-ShuffleV2,branch:resnet8x4 \
      --workdir runs/cifar100/sftn2_kd_resnet32x4-ShuffleV2_from_resnet8x4

Published numbers: NONE for any cell. SFTN has no official code or README, and its per-pair
Tables 1/2 (standard vs SFTN teacher per distiller) are not in methods.md or mission_audit.md
(methods.md §4.4: still to be copied from the paper's PDF). The ``,standard`` cells' numbers are
not the paper's either (RepDistiller's "X + KD" numbers are not published). Orientation only:
SFTN teachers add about +1.58 points on average on CIFAR-100 (Table 1) and +1.51 for
heterogeneous pairs (Table 2), unverified.
"""

from configs import sftn
from configs.cifar100 import common, oh, repdistiller

# the SFTN paper's stage-2 distillers (SSKD: configs/cifar100/sskd.py with the SFTN teacher)
METHODS = ("kd", "fitnet", "at", "sp", "vid", "rkd", "pkt", "ab", "ft", "crd", "oh")
PAIRS = sftn.PAIRS
KD_T = 4.0
PUBLISHED = {}


def sftn_teacher_workdir(pair: str) -> str:
  return f"runs/cifar100/sftn_teacher_{pair}"


def _na(method: str, pair: str) -> bool:
  if method == "oh":
    return pair not in oh.PAIRS
  row = repdistiller.PAIRS.get(pair)
  return row is None or row[4][method] is None


def get_config(arg: str = "at:resnet32x4-resnet8x4"):
  head, _, opt = str(arg).partition(",")
  method, _, pair = head.partition(":")
  if method not in METHODS:
    raise ValueError(f"sftn_stage2: unknown method {method!r}; choose one of {list(METHODS)}.")
  teacher, student = common.parse_pair(pair, PAIRS, "sftn_stage2")
  if _na(method, pair):
    raise ValueError(
      f"sftn_stage2: {method} is N/A for {pair} (RepDistiller / OH do not support this pair)."
    )
  if method == "oh":
    c = common.recipe(student, teacher)
    oh.apply_oh(c.method)
  else:
    c = repdistiller.get_config(f"{method}:{pair}")
  if method != "kd":  # X + KD: r = 1, a = 1, b = X's weight
    c.method.ce_weight = 1.0
    c.method.terms.kd = dict(weight=1.0, temperature=KD_T, t2_scale=True)
  c.method.name = f"sftn2_{method}"
  if opt == "standard":
    c.teacher.workdir = common.teacher_workdir(teacher)
  elif opt.startswith("branch:"):
    a = opt[len("branch:") :]
    if f"{teacher}-{a}" not in PAIRS or a == student:
      raise ValueError(
        f"sftn_stage2: branch student {a!r} must be another student of an SFTN "
        f"pair with teacher {teacher} ({sorted(p for p in PAIRS if p.startswith(teacher + '-'))})."
      )
    c.teacher.workdir = sftn_teacher_workdir(f"{teacher}-{a}")
  elif opt == "":
    c.teacher.workdir = sftn_teacher_workdir(pair)
  else:
    raise ValueError(f"sftn_stage2: unknown teacher option {opt!r}; use standard or branch:<A>.")
  return c
