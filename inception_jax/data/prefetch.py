"""Host batches to global device arrays, a few steps ahead (no TensorFlow here)."""

from __future__ import annotations

import collections
from typing import Iterable, Iterator

import jax

from inception_jax import mesh as mesh_lib


def to_device(batches: Iterable[dict], mesh, size: int = 2) -> Iterator[dict[str, jax.Array]]:
  """The global batches (``jax.make_array_from_process_local_data`` on ``mesh``, sharded along
  ``'data'``) of the host-local ``batches``, ``size`` of them put on the devices ahead of use.

  JAX dispatches asynchronously: while the device runs step ``s``, the host prepares and copies
  the batches of the next steps, so the input overlaps the compute. The order is unchanged.
  """
  it = iter(batches)
  queue: collections.deque = collections.deque()

  def put() -> None:
    for local in it:
      queue.append(mesh_lib.global_batch(local, mesh))
      return

  for _ in range(max(1, size)):
    put()
  while queue:
    yield queue.popleft()
    put()
