import os, sys
os.environ["JAX_PLATFORMS"]="cpu"
import jax, numpy as np
pid=int(sys.argv[1]); port=sys.argv[2]
jax.distributed.initialize(f"localhost:{port}", 2, pid, initialization_timeout=60)
print(pid, jax.config.jax_cpu_collectives_implementation, jax.devices(), jax.local_devices())
from jax.experimental import multihost_utils as mu
x = mu.process_allgather(np.array([pid+1.0]))
print(pid, "allgather", x)
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
mesh = Mesh(np.array(jax.devices()), ("data",))
a = jax.make_array_from_process_local_data(NamedSharding(mesh, P("data")), np.array([pid+1.0], np.float32), (2,))
s = jax.jit(lambda a: a.sum(), out_shardings=NamedSharding(mesh,P()))(a)
print(pid, "sum", s.addressable_data(0))
r = jax.device_put(np.arange(3.0), NamedSharding(mesh, P()))
print(pid, "repl", r.is_fully_addressable, r.addressable_data(0))
mu.sync_global_devices("x")
jax.distributed.shutdown()
