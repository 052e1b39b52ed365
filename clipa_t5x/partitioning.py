"""t5x-style partitioner on ``jax.sharding`` and flax logical axis rules.

A t5x user keeps the names they know: ``PjitPartitioner(num_partitions=…,
logical_axis_rules=…)``, ``standard_logical_axis_rules()``, a ``('data', 'model')``
mesh, and ``partition(fn, in_axis_resources, out_axis_resources)``. Underneath it
is plain ``jax.jit`` with pinned in/out shardings: t5x's own partitioner relies
on APIs that current jax deprecated (``pjit``, ``thread_resources``).

Parameters carry *logical* axis names (``embed``, ``mlp``, ``heads``, …); the
rules map them to mesh axes, so data parallelism, FSDP or tensor parallelism is
a gin binding, not a code change.
"""

import contextlib
import dataclasses
import math
from typing import Any, Callable, Optional, Sequence, Tuple

import flax.linen as nn
import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

LogicalAxisRules = Sequence[Tuple[str, Optional[str]]]

DATA_AXIS = "data"
MODEL_AXIS = "model"


def standard_logical_axis_rules(
    activation_partitioning_dims: int = 1,
    parameter_partitioning_dims: int = 1,
    additional_rules: Optional[LogicalAxisRules] = None,
) -> LogicalAxisRules:
  """t5x's default rules: batch on ``data``; MLP, heads and vocab on ``model``.

  Args:
    activation_partitioning_dims: 1, or 2 to also shard activations' ``embed``
      dimension over ``model``.
    parameter_partitioning_dims: 1, or 2 to also shard parameters' ``embed``
      dimension over ``data`` (ZeRO-3/FSDP-style).
    additional_rules: rules placed *before* the standard ones, so they win.

  Returns:
    A list of ``(logical_name, mesh_axis_or_None)`` pairs. Earlier rules take
    priority; a mesh axis is used at most once per array.
  """
  if activation_partitioning_dims not in (1, 2):
    raise ValueError(
        f"activation_partitioning_dims must be 1 or 2, got {activation_partitioning_dims}")
  if parameter_partitioning_dims not in (1, 2):
    raise ValueError(
        f"parameter_partitioning_dims must be 1 or 2, got {parameter_partitioning_dims}")
  rules = [
      ("batch", DATA_AXIS),
      ("vocab", MODEL_AXIS),
      ("mlp", MODEL_AXIS),
      ("heads", MODEL_AXIS),
      ("kv", None),
      ("joined_kv", MODEL_AXIS),
      ("proj", None),
      ("length", None),
      ("layers", None),
      ("stack", None),
      ("mlp_activations", None),
  ]
  if activation_partitioning_dims == 2:
    rules.append(("embed", MODEL_AXIS))
  if parameter_partitioning_dims == 2:
    rules.append(("embed", DATA_AXIS))
  rules.append(("embed", None))
  return list(additional_rules or []) + rules


def data_parallel_logical_axis_rules() -> LogicalAxisRules:
  """Pure data parallelism: only the batch is split, every parameter replicated."""
  return [("batch", DATA_AXIS)] + [
      (name, None) for name in ("vocab", "mlp", "heads", "kv", "joined_kv",
                                "embed", "proj", "length", "layers", "stack")]


def _make_mesh(num_partitions: int, devices: Sequence[jax.Device]) -> Mesh:
  """A ``('data', 'model')`` mesh with ``num_partitions`` devices per model group.

  Devices are ordered so that the ``model`` groups are made of neighbours
  (same host, fast links), as t5x does; ``data`` spans the rest.
  """
  num_devices = len(devices)
  if num_partitions < 1 or num_devices % num_partitions:
    raise ValueError(
        f"num_partitions={num_partitions} does not divide the {num_devices} available "
        f"devices; choose a divisor of {num_devices}.")
  shape = (num_devices // num_partitions, num_partitions)
  ordered = sorted(devices, key=lambda d: (d.process_index, d.id))
  try:
    from jax.experimental import mesh_utils
    grid = mesh_utils.create_device_mesh(shape, devices=ordered)
  except (ValueError, NotImplementedError, AssertionError):
    grid = np.asarray(ordered, dtype=object).reshape(shape)
  return Mesh(grid, (DATA_AXIS, MODEL_AXIS))


@dataclasses.dataclass(frozen=True)
class DataLayout:
  """How the global batch is split across hosts (t5x's name and fields)."""
  batch_size: int
  shard_id: int
  num_shards: int
  is_first_host_in_replica_set: bool


class PjitPartitioner:
  """Shards state and batches over a ``('data', 'model')`` mesh; jits steps.

  Args:
    num_partitions: devices per model-parallel group (the ``model`` axis size);
      1 means pure data parallelism / FSDP over ``data``.
    logical_axis_rules: ``(logical_name, mesh_axis)`` pairs; defaults to
      ``standard_logical_axis_rules()``.
    devices: devices to use (default: all global devices); tests pass subsets.
  """

  def __init__(self,
               num_partitions: int = 1,
               logical_axis_rules: Optional[LogicalAxisRules] = None,
               devices: Optional[Sequence[jax.Device]] = None):
    self._num_partitions = num_partitions
    self._rules = tuple(tuple(r) for r in (
        logical_axis_rules if logical_axis_rules is not None
        else standard_logical_axis_rules()))
    self._mesh = _make_mesh(num_partitions, list(devices or jax.devices()))

  @property
  def mesh(self) -> Mesh:
    return self._mesh

  @property
  def logical_axis_rules(self) -> LogicalAxisRules:
    return self._rules

  @property
  def num_partitions(self) -> int:
    return self._num_partitions

  @property
  def data_parallel_size(self) -> int:
    return self._mesh.shape[DATA_AXIS]

  @contextlib.contextmanager
  def context(self):
    """Mesh + axis rules in scope, so logical constraints inside a trace resolve."""
    with jax.set_mesh(self._mesh), nn.logical_axis_rules(self._rules):
      yield

  # ----------------------------------------------------------------- shardings
  def logical_to_mesh_sharding(self, logical_specs: Any) -> Any:
    """Maps a pytree of logical ``PartitionSpec``s to ``NamedSharding``s."""
    return nn.logical_to_mesh_sharding(logical_specs, self._mesh, self._rules)

  def sharding(self, *mesh_axes) -> NamedSharding:
    """A ``NamedSharding`` on this mesh from mesh-axis names (``None`` = replicated)."""
    return NamedSharding(self._mesh, PartitionSpec(*mesh_axes))

  @property
  def replicated(self) -> NamedSharding:
    return self.sharding()

  @property
  def data_sharding(self) -> NamedSharding:
    """Leading (batch) dimension split over ``data``, the rest replicated."""
    return self.sharding(DATA_AXIS)

  # ---------------------------------------------------------------------- data
  def get_data_layout(self, batch_size: int) -> DataLayout:
    """Which slice of the global batch this host reads.

    With a ``model`` axis that spans hosts, several hosts feed the same
    replica; they read the same shard (``is_first_host_in_replica_set`` tells
    which one of them saves the data iterator).
    """
    if batch_size % self.data_parallel_size:
      raise ValueError(
          f"batch size {batch_size} is not divisible by the data-parallel size "
          f"{self.data_parallel_size} (devices {jax.device_count()} / num_partitions "
          f"{self._num_partitions}); use a multiple of {self.data_parallel_size}.")
    # Hosts that own devices in the same data row read the same shard.
    rows_of_host = {}
    for row_index, row in enumerate(self._mesh.devices):
      for device in row:
        rows_of_host.setdefault(device.process_index, set()).add(row_index)
    host_first_row = {p: min(rows) for p, rows in rows_of_host.items()}
    distinct_rows = sorted(set(host_first_row.values()))
    num_shards = len(distinct_rows)
    my_row = host_first_row[jax.process_index()]
    shard_id = distinct_rows.index(my_row)
    first_host = min(p for p, r in host_first_row.items() if r == my_row)
    return DataLayout(batch_size=batch_size, shard_id=shard_id, num_shards=num_shards,
                      is_first_host_in_replica_set=jax.process_index() == first_host)

  def shard_batch(self, host_batch: Any) -> Any:
    """Turns this host's numpy batch into global ``jax.Array``s split over ``data``."""
    return jax.tree.map(
        lambda x: jax.make_array_from_process_local_data(self.data_sharding, np.asarray(x)),
        host_batch)

  # ------------------------------------------------------------------ jitting
  def partition(self,
                fn: Callable,
                in_axis_resources: Any,
                out_axis_resources: Any,
                static_argnums: Tuple[int, ...] = (),
                donate_argnums: Tuple[int, ...] = ()) -> Callable:
    """``jax.jit`` with pinned shardings, traced and run under this mesh + rules.

    ``in_axis_resources`` / ``out_axis_resources`` are pytrees of
    ``NamedSharding`` (t5x's argument names). Pinning the outputs matters: left
    free, XLA may pick a different layout for the state than the one it came
    in with, and the next step recompiles or reshards.
    """
    jitted = jax.jit(fn, in_shardings=in_axis_resources, out_shardings=out_axis_resources,
                     static_argnums=static_argnums, donate_argnums=donate_argnums)
    partitioner = self

    class _Partitioned:
      """Callable that enters the mesh context; exposes ``lower`` like jit."""

      def __call__(self, *args, **kwargs):
        with partitioner.context():
          return jitted(*args, **kwargs)

      def lower(self, *args, **kwargs):
        with partitioner.context():
          return jitted.lower(*args, **kwargs)

    return _Partitioned()


def num_params(tree: Any) -> int:
  """Number of scalars in a pytree of arrays or ``ShapeDtypeStruct``s."""
  return sum(math.prod(x.shape) for x in jax.tree.leaves(tree))
