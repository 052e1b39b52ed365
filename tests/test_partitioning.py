"""Tests of clipa_t5x.partitioning on the 4 fake CPU devices of conftest.py."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

from clipa_t5x import partitioning


def test_four_fake_devices():
  assert jax.device_count() == 4


@pytest.mark.parametrize("num_partitions, shape", [(1, (4, 1)), (2, (2, 2)), (4, (1, 4))])
def test_mesh_shapes(num_partitions, shape):
  partitioner = partitioning.PjitPartitioner(num_partitions=num_partitions)
  mesh = partitioner.mesh
  assert mesh.axis_names == ("data", "model")
  assert mesh.devices.shape == shape
  assert partitioner.data_parallel_size == shape[0]
  assert partitioner.num_partitions == num_partitions
  assert sorted(d.id for d in mesh.devices.flat) == sorted(d.id for d in jax.devices())


def test_mesh_on_a_device_subset():
  partitioner = partitioning.PjitPartitioner(devices=jax.devices()[:2])
  assert partitioner.mesh.devices.shape == (2, 1)


@pytest.mark.parametrize("num_partitions", [3, 0, 8])
def test_non_divisor_raises(num_partitions):
  with pytest.raises(ValueError, match=f"num_partitions={num_partitions} does not divide the 4"):
    partitioning.PjitPartitioner(num_partitions=num_partitions)


# ---------------------------------------------------------------------- rules
def _first_rule(rules, name):
  return next(axis for logical, axis in rules if logical == name)


def test_standard_rules_default():
  rules = partitioning.standard_logical_axis_rules()
  assert _first_rule(rules, "batch") == "data"
  for name in ("mlp", "heads", "vocab", "joined_kv"):
    assert _first_rule(rules, name) == "model"
  assert _first_rule(rules, "embed") is None
  assert [axis for name, axis in rules if name == "embed"] == [None]


def test_standard_rules_two_dims():
  params_2d = partitioning.standard_logical_axis_rules(parameter_partitioning_dims=2)
  assert [axis for name, axis in params_2d if name == "embed"] == ["data", None]
  acts_2d = partitioning.standard_logical_axis_rules(activation_partitioning_dims=2)
  assert [axis for name, axis in acts_2d if name == "embed"] == ["model", None]
  both = partitioning.standard_logical_axis_rules(2, 2)
  assert [axis for name, axis in both if name == "embed"] == ["model", "data", None]


@pytest.mark.parametrize("kwargs", [{"activation_partitioning_dims": 3},
                                    {"parameter_partitioning_dims": 0}])
def test_standard_rules_invalid_dims(kwargs):
  with pytest.raises(ValueError, match="must be 1 or 2"):
    partitioning.standard_logical_axis_rules(**kwargs)


def test_additional_rules_take_precedence():
  rules = partitioning.standard_logical_axis_rules(
      additional_rules=[("mlp", None), ("embed", "model")])
  assert rules[:2] == [("mlp", None), ("embed", "model")]
  partitioner = partitioning.PjitPartitioner(num_partitions=2, logical_axis_rules=rules)
  sharding = partitioner.logical_to_mesh_sharding(P("embed", "mlp"))
  assert sharding.spec == P("model", None)


def test_data_parallel_rules_replicate_parameters():
  partitioner = partitioning.PjitPartitioner(
      num_partitions=2, logical_axis_rules=partitioning.data_parallel_logical_axis_rules())
  specs = {"k": P("embed", "mlp"), "x": P("batch", "length", "embed")}
  shardings = partitioner.logical_to_mesh_sharding(specs)
  assert shardings["k"].spec == P(None, None)
  assert shardings["x"].spec == P("data", None, None)


def test_logical_to_mesh_sharding():
  partitioner = partitioning.PjitPartitioner(
      num_partitions=2,
      logical_axis_rules=partitioning.standard_logical_axis_rules(parameter_partitioning_dims=2))
  specs = {
      "qkv": P("embed", "heads", "kv"),
      "mlp_out": P("mlp", "embed"),
      "activations": P("batch", "length", "embed"),
      "scalar": P(),
  }
  shardings = partitioner.logical_to_mesh_sharding(specs)
  assert all(isinstance(s, NamedSharding) and s.mesh == partitioner.mesh
             for s in shardings.values())
  assert shardings["qkv"].spec == P("data", "model", None)
  assert shardings["mlp_out"].spec == P("model", "data")
  # 'data' is taken by the batch, so embed falls through to the next rule (None).
  assert shardings["activations"].spec == P("data", None, None)
  assert shardings["scalar"].spec == P()


def test_named_shardings():
  partitioner = partitioning.PjitPartitioner(num_partitions=2)
  assert partitioner.replicated.spec == P()
  assert partitioner.data_sharding.spec == P("data")
  assert partitioner.sharding("data", "model").spec == P("data", "model")
  assert partitioner.logical_axis_rules == tuple(
      tuple(r) for r in partitioning.standard_logical_axis_rules())


# ----------------------------------------------------------------------- data
@pytest.mark.parametrize("num_partitions", [1, 2, 4])
def test_data_layout_single_process(num_partitions):
  partitioner = partitioning.PjitPartitioner(num_partitions=num_partitions)
  layout = partitioner.get_data_layout(16)
  assert layout == partitioning.DataLayout(batch_size=16, shard_id=0, num_shards=1,
                                           is_first_host_in_replica_set=True)


def test_data_layout_batch_not_divisible():
  partitioner = partitioning.PjitPartitioner(num_partitions=1)
  with pytest.raises(ValueError, match="batch size 6 is not divisible by the data-parallel size 4"):
    partitioner.get_data_layout(6)
  # With 2-way data parallelism, 6 is fine.
  assert partitioning.PjitPartitioner(num_partitions=2).get_data_layout(6).batch_size == 6


def test_shard_batch():
  partitioner = partitioning.PjitPartitioner(num_partitions=2)
  host = {"image": np.arange(8 * 3, dtype=np.float32).reshape(8, 3),
          "text": np.arange(8, dtype=np.int32)}
  batch = partitioner.shard_batch(host)
  for name, value in host.items():
    array = batch[name]
    assert isinstance(array, jax.Array)
    assert array.shape == value.shape and array.dtype == value.dtype
    assert array.sharding.is_equivalent_to(partitioner.data_sharding, value.ndim)
    assert array.sharding.spec == P("data")
    np.testing.assert_array_equal(np.asarray(array), value)
    # Each of the 2 data rows holds half of the batch, replicated over 'model'.
    for shard in array.addressable_shards:
      assert shard.data.shape[0] == 4
      np.testing.assert_array_equal(np.asarray(shard.data), value[shard.index])


# -------------------------------------------------------------------- jitting
def _constrained(x):
  # Resolves only when the partitioner's axis rules are in scope.
  y = nn.with_logical_constraint(x * 2.0, ("batch", "mlp"))
  return y + 1.0


def test_partition_resolves_logical_constraints():
  partitioner = partitioning.PjitPartitioner(num_partitions=2)
  x = partitioner.shard_batch(np.ones((4, 6), np.float32))
  step = partitioner.partition(_constrained, in_axis_resources=(partitioner.data_sharding,),
                               out_axis_resources=None)
  hlo = step.lower(x).as_text()
  assert "sharding" in hlo
  out = step(x)
  np.testing.assert_array_equal(np.asarray(out), np.full((4, 6), 3.0))
  # Output left free: it follows the constraint ('batch' → data, 'mlp' → model).
  assert out.sharding.is_equivalent_to(partitioner.sharding("data", "model"), 2)


def test_partition_respects_out_shardings():
  partitioner = partitioning.PjitPartitioner(num_partitions=2)
  x = partitioner.shard_batch(np.ones((4, 6), np.float32))
  step = partitioner.partition(_constrained, in_axis_resources=(partitioner.data_sharding,),
                               out_axis_resources=partitioner.replicated)
  out = step(x)
  np.testing.assert_array_equal(np.asarray(out), np.full((4, 6), 3.0))
  assert out.sharding.is_fully_replicated
  assert out.sharding.is_equivalent_to(partitioner.replicated, 2)


def test_partition_static_argnums_and_pytrees():
  partitioner = partitioning.PjitPartitioner(num_partitions=1)

  def fn(tree, power):
    return {"y": tree["a"] ** power + tree["b"]}

  tree = {"a": jnp.arange(4.0), "b": jnp.ones(4)}
  step = partitioner.partition(
      fn, in_axis_resources=({"a": partitioner.data_sharding, "b": partitioner.replicated},),
      out_axis_resources={"y": partitioner.data_sharding}, static_argnums=(1,))
  out = step(tree, 2)
  np.testing.assert_array_equal(np.asarray(out["y"]), np.arange(4.0) ** 2 + 1)
  assert out["y"].sharding.spec == P("data")


# ---------------------------------------------------------------------- misc
def test_num_params():
  tree = {"a": jnp.zeros((3, 4)), "b": [jax.ShapeDtypeStruct((5,), jnp.float32)],
          "c": jnp.zeros(()), "d": np.zeros((2, 2, 2))}
  assert partitioning.num_params(tree) == 12 + 5 + 1 + 8
  assert partitioning.num_params({}) == 0
