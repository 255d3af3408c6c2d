r"""Evaluates a run's model checkpoint on its dataset's test split.

  python -m launch.evaluate --workdir runs/cifar100/kd_r32x4_r8x4 [--which best|final|epoch:60]
      [--teacher_workdir runs/cifar100/resnet32x4] [--data_dir DIR]
Prints top-1/top-5/NLL (and agreement with the teacher) and writes ``eval_<which>.json``.
"""

from absl import app, flags

from kdjax import cli
from kdjax.experiments import evaluate_run

_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory to evaluate.")
_WHICH = flags.DEFINE_string("which", "final", "final | best | step:<n> | epoch:<n>")
_TEACHER = flags.DEFINE_string("teacher_workdir", "", "Optional teacher run for agreement.")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "TFDS data_dir override.")
_IDX_DIR = flags.DEFINE_string("idx_dir", None, "(Fashion-)MNIST IDX directory override.")


def main(argv):
  del argv
  cli.guarded(
    evaluate_run,
    cli.require(_WORKDIR.value, "workdir"),
    which=_WHICH.value,
    teacher_workdir=_TEACHER.value,
    data_dir=_DATA_DIR.value,
    idx_dir=_IDX_DIR.value,
  )


if __name__ == "__main__":
  app.run(main, flags_parser=cli.parse_flags)
