"""Multi-process (multi-host) JAX: initialisation from flags or the environment, and feeding each
process's shard of the global batch.

``initialize()`` resolves ``(coordinator, num_processes, process_id)`` in this order, per value:

1. explicit arguments (``--coordinator``, ``--num_processes``, ``--process_id`` of a launcher);
2. ``KDJAX_COORDINATOR`` (``host:port``), ``KDJAX_NUM_PROCESSES``, ``KDJAX_PROCESS_ID``
   (and jax's own ``JAX_COORDINATOR_ADDRESS``);
3. SLURM, inside an ``srun`` step (the variables jax's own detection requires are all set):
   ``SLURM_NTASKS``, ``SLURM_PROCID``, ``SLURM_LOCALID``, the first host of
   ``SLURM_STEP_NODELIST`` and the port jax's own SLURM detection derives from ``SLURM_JOB_ID``
   (``JAX_COORDINATOR_PORT`` / ``KDJAX_COORDINATOR_PORT`` override it);
4. Open MPI (``mpirun``): ``OMPI_COMM_WORLD_SIZE``, ``OMPI_COMM_WORLD_RANK``,
   ``OMPI_COMM_WORLD_LOCAL_RANK``; the coordinator from ``OMPI_MCA_orte_hnp_uri`` (Open MPI < 5,
   as jax does) or ``KDJAX_COORDINATOR`` (Open MPI 5 has no such URI);
5. otherwise one process: nothing is initialised.

``cluster='jax'`` (or ``KDJAX_CLUSTER=jax``) instead hands everything to jax's own detection
(``jax.distributed.initialize()`` without arguments: TPU pods, Kubernetes, mpi4py, ...).

Why not always jax's detection: on SLURM/Open MPI it always restricts each process to GPU number
``local_rank`` (one process per GPU). With one task per node driving all 8 GPUs that leaves 7
idle (jax-ml/jax#16788); with ``--gpus-per-task=1`` (each task sees one GPU, numbered 0) local
ranks > 0 name a device that does not exist (jax-ml/jax#23452). kdjax picks the devices so both
layouts work: one process per GPU when several tasks share a node and each sees every GPU of the
node, else all visible devices (``KDJAX_LOCAL_DEVICE_IDS`` / ``JAX_LOCAL_DEVICE_IDS`` override).
"""

from __future__ import annotations

import dataclasses
import os
import re
from typing import Mapping, Optional

import numpy as np

from kdjax.errors import UserError

ENV_COORDINATOR = "KDJAX_COORDINATOR"
ENV_NUM_PROCESSES = "KDJAX_NUM_PROCESSES"
ENV_PROCESS_ID = "KDJAX_PROCESS_ID"
ENV_LOCAL_DEVICE_IDS = "KDJAX_LOCAL_DEVICE_IDS"
ENV_CLUSTER = "KDJAX_CLUSTER"
_SLURM_STEP_VARS = (
  "SLURM_JOB_ID",
  "SLURM_STEP_NODELIST",
  "SLURM_NTASKS",
  "SLURM_PROCID",
  "SLURM_LOCALID",
)


@dataclasses.dataclass(frozen=True)
class ClusterSpec:
  """What :func:`initialize` passes to ``jax.distributed.initialize``.

  ``source`` says where the values came from: 'flags', 'env', 'slurm', 'ompi', 'jax' or 'single'.
  ``local_device_ids`` None means every device the process can see."""

  coordinator: Optional[str]
  num_processes: int
  process_id: int
  local_device_ids: Optional[tuple] = None
  local_process_id: Optional[int] = None
  source: str = "single"

  @property
  def multi_process(self) -> bool:
    return self.num_processes > 1 or self.source == "jax"


def _int(env: Mapping[str, str], key: str) -> Optional[int]:
  v = env.get(key)
  if v is None or v == "":
    return None
  try:
    return int(v)
  except ValueError:
    raise UserError(
      f"${key}={v!r} is not an integer: set it to a whole number or unset it."
    ) from None


def first_slurm_host(nodelist: str) -> str:
  """The first host name of a SLURM node list: 'node[001-004,7],gpu2' -> 'node001'."""
  nodelist = nodelist.strip()
  m = re.match(r"([^,\[]+)(\[([^\]]*)\])?", nodelist)
  if not m or not m.group(1):
    raise UserError(
      f"Cannot parse the SLURM node list {nodelist!r}: set {ENV_COORDINATOR}=host:port explicitly."
    )
  prefix, ranges = m.group(1), m.group(3)
  if ranges is None:
    return prefix
  first = re.split(r"[,-]", ranges)[0]
  return prefix + first


def slurm_tasks_per_node(env: Mapping[str, str]) -> Optional[int]:
  """Tasks on this node: SLURM_STEP_TASKS_PER_NODE / SLURM_TASKS_PER_NODE ('4(x2),3' -> the
  first entry) or SLURM_NTASKS / SLURM_STEP_NUM_NODES."""
  for key in ("SLURM_STEP_TASKS_PER_NODE", "SLURM_TASKS_PER_NODE", "SLURM_NTASKS_PER_NODE"):
    v = env.get(key)
    if v:
      m = re.match(r"(\d+)", v)
      if m:
        return int(m.group(1))
  n, nodes = (
    _int(env, "SLURM_NTASKS"),
    _int(env, "SLURM_STEP_NUM_NODES") or _int(env, "SLURM_NNODES"),
  )
  if n and nodes:
    return max(1, n // nodes)
  return None


def slurm_port(env: Mapping[str, str]) -> str:
  """jax's SLURM port: SLURM_JOB_ID mod 4096 in the ephemeral range [61440, 65535]."""
  override = env.get("KDJAX_COORDINATOR_PORT") or env.get("JAX_COORDINATOR_PORT")
  if override:
    return str(override)
  return str(int(env.get("SLURM_JOB_ID", "0")) % 2**12 + (65535 - 2**12 + 1))


def ompi_coordinator(env: Mapping[str, str]) -> Optional[str]:
  """host:port for Open MPI < 5, as jax's OmpiCluster derives it from the ORTE URI
  ('1531576320.0;tcp://10.96.0.1,10.148.0.1:34911'): the launcher's first IP and a port from
  the job id (job_id // 4096 mod 4096 in [61440, 65535]; the URI's own port is mpirun's, in
  use). None when there is no URI (Open MPI 5)."""
  uri = env.get("OMPI_MCA_orte_hnp_uri")
  if not uri:
    return None
  m = re.search(r"tcp://(.+?)[,:]|tcp6://\[(.+?)[,\]]", uri)
  if m is None:
    raise UserError(f"Cannot parse the Open MPI URI {uri!r}: set {ENV_COORDINATOR}=host:port.")
  host = next(g for g in m.groups() if g is not None)
  port = env.get("KDJAX_COORDINATOR_PORT") or env.get("JAX_COORDINATOR_PORT")
  if not port:
    try:
      port = str(int(uri.split(".", 1)[0]) // 2**12 % 2**12 + (65535 - 2**12 + 1))
    except ValueError:
      raise UserError(
        f"Cannot read the job id of the Open MPI URI {uri!r}: set KDJAX_COORDINATOR_PORT."
      ) from None
  return f"{host}:{port}"


def _visible_gpu_count(env: Mapping[str, str]) -> Optional[int]:
  v = env.get("CUDA_VISIBLE_DEVICES", env.get("ROCR_VISIBLE_DEVICES"))
  if v is None:
    return None
  return len([x for x in v.split(",") if x.strip() != ""])


def _device_ids(
  env: Mapping[str, str], local_process_id: Optional[int], tasks_per_node: Optional[int]
) -> Optional[tuple]:
  override = env.get(ENV_LOCAL_DEVICE_IDS) or env.get("JAX_LOCAL_DEVICE_IDS")
  if override:
    try:
      return tuple(int(x) for x in override.split(",") if x.strip())
    except ValueError:
      raise UserError(f"Local device ids {override!r} must be comma-separated integers.") from None
  if local_process_id is None or not tasks_per_node or tasks_per_node <= 1:
    return None  # one process per node: all its devices
  visible = _visible_gpu_count(env)
  if visible is not None and visible < tasks_per_node:
    return None  # the launcher bound GPUs to tasks already
  return (local_process_id,)  # one process per GPU, as jax's detection


def resolve(
  coordinator: Optional[str] = None,
  num_processes: Optional[int] = None,
  process_id: Optional[int] = None,
  *,
  env: Optional[Mapping[str, str]] = None,
  cluster: Optional[str] = None,
) -> ClusterSpec:
  """The cluster layout from arguments and ``env`` (default ``os.environ``) without touching jax.
  See the module docstring for the order. Raises ``UserError`` for an incomplete layout."""
  env = os.environ if env is None else env
  cluster = cluster or env.get(ENV_CLUSTER) or None
  if cluster == "jax":
    return ClusterSpec(coordinator, num_processes or 0, process_id or 0, source="jax")
  if cluster not in (None, "", "auto", "slurm", "ompi", "none"):
    raise UserError(f"Unknown cluster {cluster!r}: use auto, slurm, ompi, jax or none.")
  source = (
    "flags" if any(v is not None for v in (coordinator, num_processes, process_id)) else "single"
  )
  coord = coordinator
  n, pid = num_processes, process_id
  local_pid = tasks_per_node = None
  # 2. kdjax / jax variables.
  if coord is None:
    coord = env.get(ENV_COORDINATOR) or env.get("JAX_COORDINATOR_ADDRESS") or None
    source = "env" if coord and source == "single" else source
  if n is None and _int(env, ENV_NUM_PROCESSES) is not None:
    n, source = _int(env, ENV_NUM_PROCESSES), ("env" if source == "single" else source)
  if pid is None and _int(env, ENV_PROCESS_ID) is not None:
    pid, source = _int(env, ENV_PROCESS_ID), ("env" if source == "single" else source)
  # 3./4. launcher environments fill what is still unset.
  # As jax's SlurmCluster: only inside an srun step (a batch script running python directly
  # has SLURM_NTASKS of the whole job but no step node list, and is one process).
  slurm = all(k in env for k in _SLURM_STEP_VARS) and cluster in (None, "", "auto", "slurm")
  ompi = all(k in env for k in ("OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_RANK")) and cluster in (
    None,
    "",
    "auto",
    "ompi",
  )
  if cluster == "none":
    slurm = ompi = False
  if slurm and None in (coord, n, pid):
    n = _int(env, "SLURM_NTASKS") if n is None else n
    pid = _int(env, "SLURM_PROCID") if pid is None else pid
    local_pid = _int(env, "SLURM_LOCALID")
    tasks_per_node = slurm_tasks_per_node(env)
    if coord is None and n is not None and n > 1:
      coord = f"{first_slurm_host(env['SLURM_STEP_NODELIST'])}:{slurm_port(env)}"
    source = "slurm" if source == "single" else source
  elif ompi and None in (coord, n, pid):
    n = _int(env, "OMPI_COMM_WORLD_SIZE") if n is None else n
    pid = _int(env, "OMPI_COMM_WORLD_RANK") if pid is None else pid
    local_pid = _int(env, "OMPI_COMM_WORLD_LOCAL_RANK")
    tasks_per_node = _int(env, "OMPI_COMM_WORLD_LOCAL_SIZE")
    if coord is None and n is not None and n > 1:
      coord = ompi_coordinator(env)
      if coord is None:
        raise UserError(
          "Open MPI job without OMPI_MCA_orte_hnp_uri (Open MPI >= 5): set "
          f"{ENV_COORDINATOR}=<host of rank 0>:<free port> for every rank, or "
          "use KDJAX_CLUSTER=jax with mpi4py installed."
        )
    source = "ompi" if source == "single" else source
  if n is None and pid is None and coord is None:
    return ClusterSpec(None, 1, 0, source="single")
  if n is None or pid is None:
    raise UserError(
      f"Incomplete multi-process layout (coordinator={coord!r}, num_processes={n}, "
      f"process_id={pid}): give all of --coordinator, --num_processes and "
      f"--process_id (or ${ENV_COORDINATOR}, ${ENV_NUM_PROCESSES}, "
      f"${ENV_PROCESS_ID})."
    )
  if n < 1 or not 0 <= pid < n:
    raise UserError(f"process_id={pid} must be in [0, num_processes={n}).")
  if n > 1 and not coord:
    raise UserError(
      f"{n} processes need a coordinator: pass --coordinator host:port (the host "
      f"of process 0 and a free port) or set ${ENV_COORDINATOR}."
    )
  if coord and not re.match(r"^.+:\d+$", coord):
    raise UserError(f"coordinator {coord!r} must be host:port (e.g. node001:61234).")
  return ClusterSpec(coord, n, pid, _device_ids(env, local_pid, tasks_per_node), local_pid, source)


def initialize(
  coordinator: Optional[str] = None,
  num_processes: Optional[int] = None,
  process_id: Optional[int] = None,
  *,
  cluster: Optional[str] = None,
  env: Optional[Mapping[str, str]] = None,
  initialization_timeout: int = 300,
) -> ClusterSpec:
  """Calls ``jax.distributed.initialize`` for the layout :func:`resolve` finds (nothing for one
  process) and returns it. Call it first, before any other jax call (jax requires it before the
  backends start). Idempotent: a second call returns the layout without re-initialising."""
  import jax  # pylint: disable=g-import-not-at-top

  spec = resolve(coordinator, num_processes, process_id, env=env, cluster=cluster)
  if not spec.multi_process:
    return spec
  if _is_initialized():
    return spec
  if spec.source == "jax":
    jax.distributed.initialize(
      coordinator_address=spec.coordinator,
      num_processes=spec.num_processes or None,
      process_id=spec.process_id if spec.num_processes else None,
      initialization_timeout=initialization_timeout,
    )
    return dataclasses.replace(
      spec, num_processes=jax.process_count(), process_id=jax.process_index()
    )
  jax.distributed.initialize(
    coordinator_address=spec.coordinator,
    num_processes=spec.num_processes,
    process_id=spec.process_id,
    local_device_ids=list(spec.local_device_ids) if spec.local_device_ids else None,
    # Everything is resolved: keep jax's detection from overriding local_device_ids.
    cluster_detection_method="deactivate",
    initialization_timeout=initialization_timeout,
  )
  return spec


def _is_initialized() -> bool:
  try:
    from jax._src import distributed as _dist  # pylint: disable=g-import-not-at-top

    return _dist.global_state.client is not None
  except Exception:  # pylint: disable=broad-except
    return False


def is_main_process() -> bool:
  """True on process 0 (write metrics, logs and summaries there only)."""
  import jax  # pylint: disable=g-import-not-at-top

  return jax.process_index() == 0


def sync(name: str) -> None:
  """A barrier of every process (``multihost_utils.sync_global_devices``); nothing on one
  process. Every process must call it with the same ``name`` at the same point."""
  import jax  # pylint: disable=g-import-not-at-top

  if jax.process_count() > 1:
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top

    multihost_utils.sync_global_devices(name)


def all_processes(flag: bool) -> bool:
  """``flag`` and-ed over every process (a collective: every process must call it); ``flag`` on
  one process. Used so that every process takes the same branch (e.g. a checkpoint that fails
  verification on any process is rejected by all)."""
  import jax  # pylint: disable=g-import-not-at-top

  if jax.process_count() == 1:
    return bool(flag)
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top

  return bool(np.all(multihost_utils.process_allgather(np.asarray([bool(flag)], np.int32))))


def all_processes_equal(value: int) -> bool:
  """Whether every process passed the same integer (e.g. a CRC-32 of a value that must be the
  same everywhere); a collective; True on one process."""
  import jax  # pylint: disable=g-import-not-at-top

  if jax.process_count() == 1:
    return True
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top

  v = int(value) & 0xFFFFFFFF
  got = np.asarray(multihost_utils.process_allgather(np.asarray([v >> 16, v & 0xFFFF], np.int32)))
  return bool(np.all(got == got.reshape(-1, 2)[0]))


def gather_rows(x) -> np.ndarray:
  """The whole of a global ``jax.Array`` (e.g. predictions sharded along the batch) as numpy on
  every process (a collective when it spans several processes)."""
  import jax  # pylint: disable=g-import-not-at-top

  if not isinstance(x, jax.Array) or x.is_fully_addressable or x.is_fully_replicated:
    return np.asarray(x)
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top

  return np.asarray(multihost_utils.process_allgather(x, tiled=True))


# ---------------------------------------------------------------- the global batch


def _data_sharding(mesh):
  from jax.sharding import NamedSharding, PartitionSpec as P  # pylint: disable=g-import-not-at-top

  return NamedSharding(mesh, P(mesh.axis_names[0]))


def process_rows(global_batch_size: int, mesh) -> slice:
  """The rows ``[start, stop)`` of a global batch of ``global_batch_size`` that this process's
  devices hold when the batch is sharded along the mesh's first axis. Raises ``UserError`` if
  they are not one contiguous block (a mesh not ordered by process)."""
  sharding = _data_sharding(mesh)
  if global_batch_size % mesh.devices.size:
    raise UserError(
      f"Global batch {global_batch_size} is not divisible by the "
      f"{mesh.devices.size} devices of the mesh: use a multiple of "
      f"{mesh.devices.size}."
    )
  idx = sharding.addressable_devices_indices_map((global_batch_size,))
  spans = sorted(
    {(s[0].start or 0, global_batch_size if s[0].stop is None else s[0].stop) for s in idx.values()}
  )
  start, stop = spans[0][0], spans[-1][1]
  covered = sum(b - a for a, b in spans)
  if covered != stop - start:
    raise UserError(
      "This process's devices hold non-contiguous rows of the batch: build the "
      "mesh from jax.devices() (ordered by process), e.g. kdjax.distributed."
      "global_mesh()."
    )
  return slice(start, stop)


def process_batch_slice(global_batch, mesh):
  """The global ``jax.Array`` batch (sharded along the mesh's first axis) built from this
  process's rows of ``global_batch`` (a numpy pytree every process computes identically, e.g.
  the index vector of an in-memory dataset): each process copies only its own rows to its own
  devices with ``jax.make_array_from_process_local_data``. On one process this equals
  ``jax.device_put(global_batch, sharding)``."""
  import jax  # pylint: disable=g-import-not-at-top

  sharding = _data_sharding(mesh)

  def one(x):
    x = np.asarray(x)
    rows = process_rows(x.shape[0], mesh)
    return jax.make_array_from_process_local_data(sharding, x[rows], x.shape)

  return jax.tree_util.tree_map(one, global_batch)


def put_process_local(local_batch, mesh, global_batch_size: Optional[int] = None):
  """The global ``jax.Array`` batch from the rows this process read itself (a feed that reads
  only its shard, like :class:`kdjax.data.grain_feed.GrainFeed`). ``global_batch_size`` defaults
  to the local size times the process count."""
  import jax  # pylint: disable=g-import-not-at-top

  sharding = _data_sharding(mesh)

  def one(x):
    x = np.asarray(x)
    n = global_batch_size or x.shape[0] * jax.process_count()
    return jax.make_array_from_process_local_data(sharding, x, (n,) + x.shape[1:])

  return jax.tree_util.tree_map(one, local_batch)


def global_mesh(axis: str = "data"):
  """A 1-D mesh over every device of every process, ordered by process then local device."""
  import jax  # pylint: disable=g-import-not-at-top
  from jax.sharding import Mesh  # pylint: disable=g-import-not-at-top

  devices = sorted(jax.devices(), key=lambda d: (d.process_index, d.id))
  return Mesh(np.asarray(devices), (axis,))


def local_batch_size(global_batch_size: int, process_count: Optional[int] = None) -> int:
  """Rows each process feeds: ``global_batch_size / process_count`` (UserError unless exact)."""
  if process_count is None:
    import jax  # pylint: disable=g-import-not-at-top

    process_count = jax.process_count()
  if global_batch_size % process_count:
    raise UserError(
      f"batch_size={global_batch_size} is not divisible by the {process_count} "
      f"processes: use a multiple of {process_count}."
    )
  return global_batch_size // process_count


__all__ = [
  "ClusterSpec",
  "resolve",
  "initialize",
  "is_main_process",
  "sync",
  "all_processes",
  "all_processes_equal",
  "gather_rows",
  "process_rows",
  "process_batch_slice",
  "put_process_local",
  "global_mesh",
  "local_batch_size",
  "first_slurm_host",
]
