"""DML against torch goldens (tools/goldens/make_online_goldens.py: AberHu train_dml.py's loss,
the K-peer form and a T = 2 case), values and each peer's gradient w.r.t. its own logits."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kdjax.losses import online as L

GOLDEN = np.load(os.path.join(os.path.dirname(__file__), "golden", "online.npz"))


@pytest.mark.parametrize("tag", ["two_peers", "three_peers", "three_peers_t2"])
@pytest.mark.parametrize("x64", [True, False])
def test_dml_matches_torch(tag, x64):
  dtype, rtol = (jnp.float64, 1e-5) if x64 else (jnp.float32, 1e-4)
  with jax.enable_x64(x64):
    z = jnp.asarray(GOLDEN[f"{tag}/logits"], dtype)
    y = jnp.asarray(GOLDEN[f"{tag}/labels"])
    t, lam = (float(v) for v in GOLDEN[f"{tag}/hparams"])
    per_peer = lambda zz: L.dml(zz, y, temperature=t, weight=lam).mean(axis=1)  # (K,)
    np.testing.assert_allclose(per_peer(z), GOLDEN[f"{tag}/loss"], rtol=rtol)
    # d(sum of all peers' losses)/dz_i is peer i's own gradient: the others are stopped.
    g = jax.grad(lambda zz: per_peer(zz).sum())(z)
    np.testing.assert_allclose(g, GOLDEN[f"{tag}/grad"], rtol=rtol, atol=1e-6 if x64 else 1e-5)
