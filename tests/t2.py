import os, sys
os.environ["JAX_PLATFORMS"]="cpu"
import jax, numpy as np
pid=int(sys.argv[1]); port=sys.argv[2]
jax.distributed.initialize(f"localhost:{port}", 2, pid, initialization_timeout=60)
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
mesh = Mesh(np.array(jax.devices()), ("data",))
a = jax.make_array_from_process_local_data(NamedSharding(mesh, P("data")), np.array([pid+1.0], np.float32), (2,))
s, t = jax.jit(lambda a: (a.sum(), a*2))(a)
print(pid, s.sharding, t.sharding)
try: print(pid, "np.asarray repl", np.asarray(s), jax.device_get({"s": s}))
except Exception as e: print(pid, "ERR", e)
try: print(pid, "np.asarray sharded", np.asarray(t))
except Exception as e: print(pid, "ERR2", str(e)[:200])
# device_put of a local committed array to global sharding
loc = jax.device_put(np.arange(3.0), jax.local_devices()[0])
try: r = jax.device_put(loc, NamedSharding(mesh, P())); print(pid, "dp local->global ok", r.addressable_data(0))
except Exception as e: print(pid, "ERR3", str(e)[:300])
try: r = jax.device_put(jax.numpy.arange(3.0), NamedSharding(mesh, P())); print(pid, "dp uncommitted ok")
except Exception as e: print(pid, "ERR4", str(e)[:300])
jax.distributed.shutdown()
