r"""Checkpoint-KD optimal intermediate teacher selection (Wang et al., NeurIPS 2022, Algorithm 1).

  python -m launch.select_teacher --workdir runs/cifar100/teacher_wrn_40_2 [--num_examples 2000]
Writes selection.{json,csv,png} into the workdir; then distil from the selected checkpoint with
``--config.teacher.which=selected``.
"""

from absl import app, flags

from kdjax import cli
from kdjax.teachers.selection import select_teacher

_WORKDIR = flags.DEFINE_string("workdir", None, "Teacher run with kept checkpoints.")
_N = flags.DEFINE_integer("num_examples", 2000, "Training examples for the MI probes.")
_OUT = flags.DEFINE_string("out_dir", "", "Where to write the table (default: the workdir).")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "TFDS data_dir override.")
_IDX_DIR = flags.DEFINE_string("idx_dir", None, "(Fashion-)MNIST IDX directory override.")
_EVAL_LIMIT = flags.DEFINE_integer("eval_limit", 0, "Use only the first N test examples.")


def main(argv):
  del argv
  res = cli.guarded(
    select_teacher,
    cli.require(_WORKDIR.value, "workdir"),
    num_examples=_N.value,
    out_dir=_OUT.value,
    data_dir=_DATA_DIR.value,
    idx_dir=_IDX_DIR.value,
    eval_limit=_EVAL_LIMIT.value,
  )
  print("epoch  step  top1   nll    ece    I(X;F)  I(Y;F)  score")
  for r in res["rows"]:
    print(
      f"{r['epoch']:5d} {r['step']:5d} {r['test_top1']:6.2f} {r['test_nll']:6.3f} "
      f"{r['test_ece']:6.3f} {r['mi_x']:7.3f} {r['mi_y']:7.3f} {r['score']:6.3f}"
    )
  print(f"selected: epoch {res['selected']['epoch']} (step {res['selected']['step']})")


if __name__ == "__main__":
  app.run(main, flags_parser=cli.parse_flags)
