r"""Exports the teacher of an SFTN stage-1 run as a plain teacher checkpoint (SFTN stage 3).

  python -m launch.export_teacher --workdir runs/cifar100/sftn_resnet32x4-resnet8x4 \
      --out runs/cifar100/sftn_teacher_resnet32x4-resnet8x4 [--which final|best|epoch:240]
Writes ``<out>/kept/<step>`` (branches and bridges dropped; metadata ``source: sftn``), which any
distiller consumes unchanged: ``--config.teacher.workdir <out>``.
"""

from absl import app, flags

from kdjax import cli

_WORKDIR = flags.DEFINE_string("workdir", None, "The SFTN run (config.model = 'sftn').")
_OUT = flags.DEFINE_string("out", None, "New directory for the exported teacher checkpoint.")
_WHICH = flags.DEFINE_string("which", "final", "final | best | step:<n> | epoch:<n>")


def main(argv):
  del argv
  from kdjax.teachers.sftn import export_teacher

  meta = cli.guarded(
    export_teacher,
    cli.require(_WORKDIR.value, "workdir"),
    cli.require(_OUT.value, "out"),
    which=_WHICH.value,
  )
  print(
    f"[kdjax] exported SFTN teacher {meta['arch']} (epoch {meta['epoch']}, step "
    f"{meta['step']}, test top-1 {meta.get('test_top1')}) to {_OUT.value}"
  )


if __name__ == "__main__":
  app.run(main, flags_parser=cli.parse_flags)
