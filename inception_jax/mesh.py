"""Data parallelism over a one-axis device mesh: the batch is sharded along ``'data'``, the
training state replicated. The same code serves 1 CPU, simulated CPU devices, one GPU, a TPU pod
and several hosts (each process feeds the rows of the global batch that its devices hold)."""

from __future__ import annotations

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from inception_jax import errors

AXIS = 'data'


def make_mesh(devices=None) -> Mesh:
  """All devices (of every process) on the ``'data'`` axis, process by process, so that process
  ``p`` holds the contiguous rows ``[p * b, (p + 1) * b)`` of a global batch that the input
  pipelines give it (:func:`inception_jax.data.host_rows`)."""
  devices = jax.devices() if devices is None else devices
  devices = sorted(devices, key=lambda d: (d.process_index, d.id))
  return Mesh(np.asarray(devices), (AXIS,))


def initialize_distributed(coordinator_address: str | None = None,
                           num_processes: int | None = None,
                           process_id: int | None = None) -> None:
  """``jax.distributed.initialize`` (arguments detected on TPU pods, SLURM and the like when
  not given); on CPUs, cross-process collectives through gloo."""
  try:  # only the CPU backend's collectives; GPUs and TPUs keep their own
    jax.config.update('jax_cpu_collectives_implementation', 'gloo')
  except (AttributeError, ValueError):  # a jax without the option
    pass
  jax.distributed.initialize(coordinator_address=coordinator_address,
                             num_processes=num_processes, process_id=process_id)


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def batch_sharded(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P(AXIS))


def global_batch(local: dict[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
  """This process' rows -> global arrays sharded along ``'data'``."""
  sharding = batch_sharded(mesh)
  return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, x), local)


def check_divisible(batch_size: int, field: str, mesh: Mesh) -> None:
  """A global batch must split evenly over the devices (and hence over the processes)."""
  if batch_size <= 0 or batch_size % mesh.size:
    raise errors.ConfigError(field.removeprefix('config.'),
                             f'{field}={batch_size} must be a positive multiple of the device '
                             f'count ({mesh.size})')


def local_batch_size(batch_size: int) -> int:
  """This process' share of a global batch."""
  return batch_size // jax.process_count()


__all__ = ['AXIS', 'batch_sharded', 'check_divisible', 'global_batch', 'initialize_distributed',
           'local_batch_size', 'make_mesh', 'replicated']
