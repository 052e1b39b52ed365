"""model-info.txt: shapes, axes, shardings and per-device memory."""

import jax

from clipa_t5x import model_info
from clipa_t5x import partitioning
import helpers  # tests/helpers.py


def test_model_info_lists_parameters_and_per_device_memory(tmp_path):
  one = partitioning.PjitPartitioner(devices=jax.devices()[:1])
  mesh = partitioning.PjitPartitioner(num_partitions=2)
  _, _, _, abstract, specs, shardings_one = helpers.tiny_setup(one)
  _, _, _, _, _, shardings_mesh = helpers.tiny_setup(mesh)
  path = tmp_path / "model-info.txt"
  model_info.write_model_info(str(path), abstract, specs, shardings_mesh, activation_bytes=2**20)
  text = path.read_text()
  assert "img/embedding/kernel" in text or "embedding" in text
  assert "'mlp'" in text and "'model'" in text  # logical axes and their mesh axis
  count = sum(x.size for x in jax.tree.leaves(abstract.params))
  assert f"Total parameters: {count:,}" in text
  assert "activations" in text and "0.001 GiB" in text
  # Model parallelism over 2 devices halves the MLP/attention weights each device holds.
  full = model_info.per_device_bytes(abstract.params, shardings_one.params)
  split = model_info.per_device_bytes(abstract.params, shardings_mesh.params)
  assert full == sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(abstract.params))
  assert full / 2 < split < full
