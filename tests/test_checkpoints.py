"""Orbax checkpoints: round trip, retention, resharding, stage hand-off."""

import os

import jax
import numpy as np
import pytest

from clipa_t5x import checkpoints
from clipa_t5x import partitioning
from clipa_t5x import train_state
import helpers  # tests/helpers.py


def _state(partitioner, text_length=helpers.TEXT_LENGTH, seed=0):
  model, tx, _, abstract, _, shardings = helpers.tiny_setup(partitioner, text_length=text_length)
  state = train_state.create_train_state(model, tx, jax.random.key(seed), helpers.IMAGE_SIZE,
                                         text_length, partitioner, shardings)
  return state, abstract


def _assert_trees_equal(a, b):
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


@pytest.mark.slow
def test_save_restore_round_trip_onto_another_mesh(tmp_path):
  one = partitioning.PjitPartitioner(devices=jax.devices()[:1])
  state, _ = _state(one)
  state = state.replace(step=state.step + 7)
  ckpt = checkpoints.Checkpointer(str(tmp_path), checkpoints.SaveCheckpointConfig(period=5, keep=2))
  ckpt.save(state, 7, {"stage": "s", "examples_seen": 56})
  assert ckpt.latest_step() == 7
  # Restore on a 2x2 mesh with model parallelism: values identical, new shardings.
  mesh = partitioning.PjitPartitioner(num_partitions=2)
  _, abstract = _state(mesh, seed=1)
  restored, meta = checkpoints.Checkpointer(str(tmp_path)).restore(abstract)
  assert meta == {"stage": "s", "examples_seen": 56, "step": 7}
  assert int(restored.step) == 7
  _assert_trees_equal(state.params, restored.params)
  _assert_trees_equal(state.opt_state, restored.opt_state)
  for leaf, target in zip(jax.tree.leaves(restored.params), jax.tree.leaves(abstract.params)):
    assert leaf.sharding.is_equivalent_to(target.sharding, leaf.ndim)


def test_keep_and_period(tmp_path):
  partitioner = partitioning.PjitPartitioner(devices=jax.devices()[:1])
  state, _ = _state(partitioner)
  ckpt = checkpoints.Checkpointer(str(tmp_path), checkpoints.SaveCheckpointConfig(period=5, keep=2))
  assert ckpt.should_save(10) and not ckpt.should_save(11)
  for step in (5, 10, 15):
    ckpt.save(state, step, {})
  ckpt.save(state, 15, {})  # already saved: a no-op, not an error
  assert sorted(d for d in os.listdir(tmp_path) if d.startswith("checkpoint_")) == [
      "checkpoint_10", "checkpoint_15"]


def test_an_unfinished_save_is_never_picked_up(tmp_path):
  partitioner = partitioning.PjitPartitioner(devices=jax.devices()[:1])
  state, _ = _state(partitioner)
  ckpt = checkpoints.Checkpointer(str(tmp_path))
  ckpt.save(state, 3, {})
  # What an interrupted Orbax save leaves behind: a temporary directory.
  os.makedirs(tmp_path / "checkpoint_9.orbax-checkpoint-tmp-123" / "params")
  assert checkpoints.Checkpointer(str(tmp_path)).latest_step() == 3


@pytest.mark.slow
def test_restore_params_resizes_the_text_position_embedding(tmp_path):
  partitioner = partitioning.PjitPartitioner(num_partitions=2)
  short, _ = _state(partitioner, text_length=8)
  checkpoints.Checkpointer(str(tmp_path)).save(short, 4, {})
  fresh, abstract = _state(partitioner, text_length=32, seed=3)
  params = checkpoints.restore_params(
      checkpoints.RestoreCheckpointConfig(path=str(tmp_path)), abstract.params, fresh.params)
  old = np.asarray(short.params["txt"]["pos_embedding"])
  new = np.asarray(params["txt"]["pos_embedding"])
  assert old.shape[1] == 8 and new.shape[1] == 32
  np.testing.assert_allclose(new, np.asarray(jax.image.resize(old, new.shape, "bilinear")),
                             atol=1e-6)
  # Everything else is copied unchanged.
  flat_old = dict(jax.tree_util.tree_flatten_with_path(short.params)[0])
  for path, value in jax.tree_util.tree_flatten_with_path(params)[0]:
    if "pos_embedding" not in jax.tree_util.keystr(path):
      np.testing.assert_array_equal(np.asarray(value), np.asarray(flat_old[path]))


def test_restore_params_assignment_map_and_errors(tmp_path):
  partitioner = partitioning.PjitPartitioner(devices=jax.devices()[:1])
  saved, _ = _state(partitioner)
  checkpoints.Checkpointer(str(tmp_path)).save(saved, 2, {})
  fresh, abstract = _state(partitioner, seed=5)
  # None keeps the fresh initialisation of the matching parameters.
  params = checkpoints.restore_params(
      checkpoints.RestoreCheckpointConfig(path=str(tmp_path / "checkpoint_2"), mode="specific",
                                          assignment_map=[(r"log_temperature", None)]),
      abstract.params, fresh.params)
  np.testing.assert_array_equal(np.asarray(params["log_temperature"]),
                                np.asarray(fresh.params["log_temperature"]))
  # A rename to a parameter that does not exist is a clear error...
  with pytest.raises(ValueError, match="not in checkpoint"):
    checkpoints.restore_params(
        checkpoints.RestoreCheckpointConfig(path=str(tmp_path),
                                            assignment_map=[(r"log_temperature", "nope")]),
        abstract.params, fresh.params)
  # ... unless fallback_to_scratch says to initialise it.
  params = checkpoints.restore_params(
      checkpoints.RestoreCheckpointConfig(path=str(tmp_path), fallback_to_scratch=True,
                                          assignment_map=[(r"log_temperature", "nope")]),
      abstract.params, fresh.params)
  np.testing.assert_array_equal(np.asarray(params["log_temperature"]),
                                np.asarray(fresh.params["log_temperature"]))
  with pytest.raises(FileNotFoundError, match="no complete checkpoint"):
    checkpoints.restore_params(
        checkpoints.RestoreCheckpointConfig(path=str(tmp_path / "empty")), abstract.params,
        fresh.params)


@pytest.mark.parametrize("damage", ["truncate", "delete"])
def test_a_corrupt_latest_checkpoint_is_set_aside_and_the_previous_used(tmp_path, damage):
  partitioner = partitioning.PjitPartitioner(devices=jax.devices()[:1])
  state, abstract = _state(partitioner)
  ckpt = checkpoints.Checkpointer(str(tmp_path), checkpoints.SaveCheckpointConfig(keep=None))
  ckpt.save(state, 2, {})
  later = state.replace(params=jax.tree.map(lambda x: x + 1, state.params))
  ckpt.save(later, 4, {})
  ckpt.close()
  # Damage the newest checkpoint's array data after the fact.
  files = sorted(p for p in (tmp_path / "checkpoint_4" / "params").rglob("*")
                 if p.is_file() and p.stat().st_size > 0)
  assert files
  for path in files:
    if damage == "truncate":
      path.write_bytes(path.read_bytes()[: path.stat().st_size // 3])
    else:
      path.unlink()
  restored = checkpoints.Checkpointer(str(tmp_path)).restore_latest_good(abstract)
  assert restored is not None
  good, meta = restored
  assert meta["step"] == 2
  _assert_trees_equal(state.params, good.params)
  names = os.listdir(tmp_path)
  assert "checkpoint_4" not in names and any(n.startswith("corrupt_checkpoint_4_") for n in names)
  assert checkpoints.Checkpointer(str(tmp_path)).latest_step() == 2


def test_check_free_space_refuses_a_too_small_disk(tmp_path, monkeypatch):
  import collections  # pylint: disable=import-outside-toplevel
  import shutil  # pylint: disable=import-outside-toplevel
  partitioner = partitioning.PjitPartitioner(devices=jax.devices()[:1])
  _, abstract = _state(partitioner)
  checkpoints.check_free_space(str(tmp_path), abstract)  # plenty of room here
  usage = collections.namedtuple("usage", "total used free")
  monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10, 10, 1000))
  with pytest.raises(ValueError, match="GiB free but one checkpoint needs"):
    checkpoints.check_free_space(str(tmp_path), abstract)
  checkpoints.check_free_space("gs://bucket/run", abstract)  # remote: not checked


def test_a_full_disk_during_save_is_a_clear_error(tmp_path, monkeypatch):
  import errno  # pylint: disable=import-outside-toplevel
  partitioner = partitioning.PjitPartitioner(devices=jax.devices()[:1])
  state, _ = _state(partitioner)
  ckpt = checkpoints.Checkpointer(str(tmp_path))

  def full(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")
  monkeypatch.setattr(ckpt._manager, "save", full)  # pylint: disable=protected-access
  with pytest.raises(ValueError, match="is full: checkpoint 3 was not written"):
    ckpt.save(state, 3, {})


@pytest.mark.slow
def test_resharding_restore_data_parallel_to_fsdp_model_parallel_and_back(tmp_path):
  """4-device data parallelism -> 2x2 FSDP + model parallel -> back, values identical."""
  data_parallel = partitioning.PjitPartitioner(
      num_partitions=1, logical_axis_rules=partitioning.data_parallel_logical_axis_rules())
  fsdp_mp = partitioning.PjitPartitioner(
      num_partitions=2,
      logical_axis_rules=partitioning.standard_logical_axis_rules(parameter_partitioning_dims=2))
  state, abstract_dp = _state(data_parallel)
  _, abstract_fsdp = _state(fsdp_mp, seed=1)
  specs = {tuple(s.sharding.spec) for s in jax.tree.leaves(abstract_fsdp.params)}
  assert any("data" in spec for spec in specs) and any("model" in spec for spec in specs)
  checkpoints.Checkpointer(str(tmp_path / "a")).save(state, 1, {})
  on_fsdp, _ = checkpoints.Checkpointer(str(tmp_path / "a")).restore(abstract_fsdp)
  _assert_trees_equal((state.params, state.opt_state), (on_fsdp.params, on_fsdp.opt_state))
  for leaf, target in zip(jax.tree.leaves(on_fsdp), jax.tree.leaves(abstract_fsdp)):
    assert leaf.sharding.is_equivalent_to(target.sharding, leaf.ndim)
  checkpoints.Checkpointer(str(tmp_path / "b")).save(on_fsdp, 1, {})
  back, _ = checkpoints.Checkpointer(str(tmp_path / "b")).restore(abstract_dp)
  _assert_trees_equal((state.params, state.opt_state), (back.params, back.opt_state))


@pytest.mark.slow
def test_params_only_checkpoint_loads_and_initialises_a_stage(tmp_path):
  one = partitioning.PjitPartitioner(devices=jax.devices()[:1])
  state, _ = _state(one)
  params = jax.tree.map(np.asarray, state.params)
  path = checkpoints.save_params(str(tmp_path), params, step=0, meta={"source": "test"})
  assert path == os.path.join(str(tmp_path), "checkpoint_0")
  loaded, meta, found = checkpoints.load_params(str(tmp_path))
  assert found == path and meta == {"source": "test", "step": 0}
  _assert_trees_equal(params, loaded)
  # As a stage's init_from, on another mesh and with a longer text: the usual hand-off.
  mesh = partitioning.PjitPartitioner(num_partitions=2)
  fresh, abstract = _state(mesh, text_length=16, seed=1)
  restored = checkpoints.restore_params(checkpoints.RestoreCheckpointConfig(path=str(tmp_path)),
                                        abstract.params, fresh.params)
  np.testing.assert_array_equal(np.asarray(restored["img"]["head"]["kernel"]),
                                params["img"]["head"]["kernel"])
  assert restored["txt"]["pos_embedding"].shape[1] == 16
  with pytest.raises(ValueError, match="already has checkpoint 0"):
    checkpoints.save_params(str(tmp_path), params, step=0)
