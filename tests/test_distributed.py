"""kdjax.distributed: cluster layout from flags / fake SLURM and Open MPI environments, and a
2-process x 1-CPU-device data-parallel run on localhost against the 1-process run."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import numpy as np
import pytest

from kdjax import distributed as dist
from kdjax.errors import UserError

WORKER = os.path.join(os.path.dirname(__file__), "distributed_worker.py")

SLURM = {
  "SLURM_JOB_ID": "12345",
  "SLURM_NTASKS": "16",
  "SLURM_PROCID": "9",
  "SLURM_LOCALID": "1",
  "SLURM_STEP_NODELIST": "gpu[03-04]",
  "SLURM_STEP_TASKS_PER_NODE": "8(x2)",
  "SLURM_STEP_NUM_NODES": "2",
}
OMPI = {
  "OMPI_COMM_WORLD_SIZE": "4",
  "OMPI_COMM_WORLD_RANK": "3",
  "OMPI_COMM_WORLD_LOCAL_RANK": "1",
  "OMPI_COMM_WORLD_LOCAL_SIZE": "2",
  "OMPI_MCA_orte_hnp_uri": "1531576320.0;tcp://10.96.0.1,10.148.0.1:34911",
}


def test_single_process_and_flags():
  assert dist.resolve(env={}) == dist.ClusterSpec(None, 1, 0, source="single")
  s = dist.resolve("h:1234", 2, 1, env={})
  assert (s.coordinator, s.num_processes, s.process_id, s.source) == ("h:1234", 2, 1, "flags")
  s = dist.resolve(
    env={"KDJAX_COORDINATOR": "n0:999", "KDJAX_NUM_PROCESSES": "3", "KDJAX_PROCESS_ID": "2"}
  )
  assert (s.coordinator, s.num_processes, s.process_id, s.source) == ("n0:999", 3, 2, "env")
  # Flags win over the environment, value by value.
  s = dist.resolve(
    process_id=0,
    env={"KDJAX_COORDINATOR": "n0:999", "KDJAX_NUM_PROCESSES": "3", "KDJAX_PROCESS_ID": "2"},
  )
  assert s.process_id == 0 and s.num_processes == 3
  for bad in [
    dict(num_processes=2, process_id=0),  # no coordinator
    dict(coordinator="h:1", num_processes=2),  # no process id
    dict(coordinator="h:1", num_processes=2, process_id=2),
    dict(coordinator="nohostport", num_processes=2, process_id=0),
  ]:
    with pytest.raises(UserError):
      dist.resolve(env={}, **bad)
  with pytest.raises(UserError, match="KDJAX_NUM_PROCESSES"):
    dist.resolve(env={"KDJAX_NUM_PROCESSES": "two"})


def test_slurm_env():
  s = dist.resolve(env=SLURM)
  # jax's port rule: 12345 % 4096 + 61440.
  assert s == dist.ClusterSpec("gpu03:61497", 16, 9, (1,), 1, "slurm")
  assert dist.first_slurm_host("node[001-004,007],gpu2") == "node001"
  assert dist.first_slurm_host("a1,b2") == "a1"
  assert dist.first_slurm_host("host[7,9]") == "host7"
  # One task per node drives all its GPUs (jax's own detection would pin GPU 0).
  one = dict(
    SLURM, SLURM_NTASKS="2", SLURM_PROCID="1", SLURM_LOCALID="0", SLURM_STEP_TASKS_PER_NODE="1(x2)"
  )
  assert dist.resolve(env=one).local_device_ids is None
  # --gpus-per-task=1: each task already sees one GPU (numbered 0).
  bound = dict(SLURM, CUDA_VISIBLE_DEVICES="5")
  assert dist.resolve(env=bound).local_device_ids is None
  assert dist.resolve(env=dict(SLURM, KDJAX_LOCAL_DEVICE_IDS="0,1")).local_device_ids == (0, 1)
  assert dist.resolve(env=dict(SLURM, JAX_COORDINATOR_PORT="7000")).coordinator == "gpu03:7000"
  # An explicit coordinator wins; SLURM still gives the counts.
  s = dist.resolve(env=dict(SLURM, KDJAX_COORDINATOR="login1:5555"))
  assert (s.coordinator, s.num_processes, s.process_id) == ("login1:5555", 16, 9)
  # A one-task allocation (salloc + python) is a single process.
  assert not dist.resolve(env=dict(SLURM, SLURM_NTASKS="1", SLURM_PROCID="0")).multi_process
  assert dist.resolve(env=SLURM, cluster="none").source == "single"
  # The batch script itself (python run without srun): the job's SLURM_NTASKS but no step.
  batch = {k: v for k, v in SLURM.items() if k != "SLURM_STEP_NODELIST"}
  assert dist.resolve(env=dict(batch, SLURM_PROCID="0")).source == "single"


def test_ompi_env():
  s = dist.resolve(env=OMPI)
  # jax's rule: the launcher's first IP, port (job id // 4096) % 4096 + 61440.
  assert s == dist.ClusterSpec("10.96.0.1:62624", 4, 3, (1,), 1, "ompi")
  v6 = dict(OMPI, OMPI_MCA_orte_hnp_uri="1314521088.0;tcp6://[fe80::b9b,2620:10d::2]:43370")
  assert dist.resolve(env=v6).coordinator.startswith("fe80::b9b:")
  no_uri = {k: v for k, v in OMPI.items() if k != "OMPI_MCA_orte_hnp_uri"}
  with pytest.raises(UserError, match="KDJAX_COORDINATOR"):
    dist.resolve(env=no_uri)
  assert dist.resolve(env=dict(no_uri, KDJAX_COORDINATOR="r0:4444")).coordinator == "r0:4444"


def test_coordinator_matches_jax_own_detection(monkeypatch):
  """Where jax's SLURM / Open MPI detection applies, kdjax derives the same coordinator."""
  slurm_cluster = pytest.importorskip("jax._src.clusters.slurm_cluster")
  ompi_cluster = pytest.importorskip("jax._src.clusters.ompi_cluster")
  for k in list(os.environ):
    if k.startswith(("SLURM_", "OMPI_", "JAX_COORDINATOR")):
      monkeypatch.delenv(k)
  for k, v in dict(SLURM, SLURM_STEP_NODELIST="node[001-004,007],gpu2").items():
    monkeypatch.setenv(k, v)
  sc = slurm_cluster.SlurmCluster
  assert sc.is_env_present()
  assert dist.resolve(env=os.environ).coordinator == sc.get_coordinator_address(None, None)
  assert (sc.get_process_count(), sc.get_process_id()) == (16, 9)
  for k in SLURM:
    monkeypatch.delenv(k)
  for k, v in OMPI.items():
    monkeypatch.setenv(k, v)
  oc = ompi_cluster.OmpiCluster
  assert oc.is_env_present()
  assert dist.resolve(env=os.environ).coordinator == oc.get_coordinator_address(None, None)


def test_local_batch_size():
  assert dist.local_batch_size(64, 4) == 16
  with pytest.raises(UserError, match="multiple of 3"):
    dist.local_batch_size(64, 3)


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def _run(tmp_path, num_processes: int):
  out = str(tmp_path / f"p{num_processes}.npz")
  port = _free_port()
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=os.path.dirname(os.path.dirname(WORKER)))
  for k in list(env):  # a launcher's variables must not leak into the workers
    if k.startswith(
      (
        "XLA_FLAGS",
        "KDJAX_COORDINATOR",
        "KDJAX_NUM_PROCESSES",
        "KDJAX_PROCESS_ID",
        "SLURM_",
        "OMPI_",
        "JAX_COORDINATOR",
      )
    ):
      env.pop(k)
  procs = []
  for i in range(num_processes):
    # Process 0 gets the layout as flags, the others from KDJAX_* variables.
    env_i = (
      env
      if i == 0
      else dict(
        env,
        KDJAX_COORDINATOR=f"localhost:{port}",
        KDJAX_NUM_PROCESSES=str(num_processes),
        KDJAX_PROCESS_ID=str(i),
      )
    )
    procs.append(
      subprocess.Popen(
        [sys.executable, WORKER, out, str(num_processes), str(i), str(port)],
        env=env_i,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
      )
    )
  return out, procs


def _wait(procs, timeout=150):
  logs = []
  try:
    for p in procs:
      logs.append(p.communicate(timeout=timeout)[0].decode(errors="replace"))
  finally:
    for p in procs:  # never leave a worker behind (e.g. its peer died and it waits)
      if p.poll() is None:
        p.kill()
        p.wait()
  for p, log in zip(procs, logs):
    assert p.returncode == 0, log[-3000:]


@pytest.mark.multidevice
def test_two_processes_equal_one_process(tmp_path):
  out2, p2 = _run(tmp_path, 2)
  try:  # the 1-process run, here, on one device, while the two workers start
    import jax  # pylint: disable=g-import-not-at-top
    from jax.sharding import Mesh  # pylint: disable=g-import-not-at-top
    import importlib.util  # pylint: disable=g-import-not-at-top

    spec = importlib.util.spec_from_file_location("distributed_worker", WORKER)
    distributed_worker = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(distributed_worker)
    a = distributed_worker.train(Mesh(np.asarray(jax.local_devices()[:1]), ("data",)))
  finally:
    _wait(p2)
  b = np.load(out2)
  assert sorted(a) == sorted(b.files) and len(a) > 3
  # float32: the 2-process gradient and batch statistics are all-reduces of two partial sums
  # instead of one sum, so values differ by rounding (~1e-7 relative per step); 4 SGD steps
  # (lr 0.1, momentum 0.9) on O(1) parameters keep that below 1e-5 -- far below a one-step
  # change (~1e-2), and a wrong shard (e.g. both processes feeding the same rows) changes the
  # batch statistics by O(1).
  for k in a:
    np.testing.assert_allclose(b[k], a[k], rtol=1e-5, atol=1e-5, err_msg=k)
  assert not np.allclose(a["losses"][0], a["losses"][-1], atol=1e-4)  # it trained


def test_single_process_helpers_are_plain():
  import jax  # pylint: disable=g-import-not-at-top

  from kdjax.train import parallel  # pylint: disable=g-import-not-at-top

  assert not parallel.is_multiprocess() and dist.is_main_process()
  dist.sync("kdjax:test")  # nothing to wait for
  assert dist.all_processes(True) is True and dist.all_processes(False) is False
  mesh = parallel.make_mesh()
  assert list(mesh.devices.flat) == jax.local_devices()
  x = parallel.put_batch(np.arange(2 * mesh.devices.size, dtype=np.int32), mesh)
  np.testing.assert_array_equal(dist.gather_rows(x), np.arange(2 * mesh.devices.size))


def test_decode_stream_rows_are_rows_of_the_host_stream_batch():
  """StreamFeed's per-process decode: any subset of a batch's positions gives exactly those rows
  of HostStream's own batch (the same records and per-(seed, epoch, index) random crops)."""
  from kdjax import data as kdata  # pylint: disable=g-import-not-at-top
  from kdjax.train import runner  # pylint: disable=g-import-not-at-top

  rng = np.random.default_rng(1)
  src = [
    {
      "image": rng.integers(0, 256, (int(rng.integers(20, 40)), 30, 3)).astype(np.uint8),
      "label": int(rng.integers(0, 10)),
    }
    for _ in range(9)
  ]
  for train in (True, False):
    s = kdata.HostStream(
      "imagenet2012", "train", batch_size=4, seed=2, train=train, image_size=8, source=src
    )
    order = kdata.batch_indices(
      s.num_examples, 4, seed=2, epoch=3, shuffle=s.shuffle, drop_remainder=s.drop_remainder
    )
    for positions, want in zip(order, s.iter_epoch(3)):
      for rows in (slice(0, 2), slice(2, 4), slice(1, 3), slice(0, 4)):
        if not len(positions[rows]):  # the eval remainder of 1
          continue
        got = runner.decode_stream_rows(s, positions[rows], 3)
        for k in want:
          np.testing.assert_array_equal(got[k], want[k][rows], err_msg=k)
