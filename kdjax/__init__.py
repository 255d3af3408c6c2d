"""kdjax: knowledge distillation for JAX/Flax.

Public API::

  kdjax.models.get(name, num_classes=...), kdjax.models.names()
  kdjax.losses.kd(student_logits, teacher_logits, *, temperature)  (and the other losses)
  kdjax.methods.build_method(config.method)
  kdjax.train.train_and_evaluate(config, workdir)
  kdjax.data.load_arrays(name, split), kdjax.data.info(name)
"""

__version__ = "0.1.0"
