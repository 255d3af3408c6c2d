"""kdjax.eval.predict_logits: padded batches, and one compiled function per (model, transform)."""

import functools

import jax.numpy as jnp
import numpy as np

from kdjax import models
from kdjax.eval import predict
from kdjax.eval import predict_logits


def _scale(x, factor):
  return x * factor


def test_fresh_partials_reuse_one_compiled_function_and_padding_is_trimmed():
  net = models.get("tiny_cnn", num_classes=10, width=4)
  import jax

  v = net.init(jax.random.PRNGKey(0), jnp.zeros((1, 16, 16, 3)))
  x = np.random.RandomState(0).rand(7, 16, 16, 3).astype(np.float32)
  traces = []

  def counted(x, factor):
    traces.append(1)  # runs only while tracing
    return _scale(x, factor)

  a = predict_logits(net, v, x, batch_size=4, preprocess=functools.partial(counted, factor=2.0))
  b = predict_logits(net, v, x, batch_size=4, preprocess=functools.partial(counted, factor=2.0))
  assert len(traces) == 1  # second call: same key, no retrace (batch shape fixed at 4)
  np.testing.assert_array_equal(a, b)
  ref = net.apply(v, x * 2.0, train=False)[0]
  np.testing.assert_allclose(a, ref, rtol=1e-5, atol=1e-5)
  assert a.shape == (7, 10)
  assert predict._cache_key(functools.partial(counted, factor=2.0)) == predict._cache_key(
    functools.partial(counted, factor=2.0)
  )
