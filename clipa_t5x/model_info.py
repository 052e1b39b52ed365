"""``MODEL_DIR/<stage>/model-info.txt``: every parameter's shape, axes and sharding.

As t5x's ``log_model_info``: one line per parameter (shape, logical axes,
mesh partition spec), then the memory each device holds for parameters and
optimizer state (from the shardings, exact) and for the train step's
temporaries, i.e. activations (from XLA's memory analysis of the compiled step);
then the training data's sources with their sampling rates, and at the stage's
end the examples seen per source.
"""

import math
import os
from typing import Any, Optional

import jax
from jax.sharding import NamedSharding

from clipa_t5x.train_state import TrainState


def path_name(path) -> str:
  """A pytree key path as ``'img/encoderblock_0/mlp/fc_in/kernel'`` (dict keys, attribute
  names and list indices joined by ``/``): the parameter names the project prints and matches."""
  return "/".join(str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))) for k in path)


def per_device_bytes(abstract: Any, shardings: Any) -> int:
  """Bytes one device holds of ``abstract`` laid out as ``shardings``."""
  total = 0
  for leaf, sharding in zip(jax.tree.leaves(abstract), jax.tree.leaves(shardings)):
    shard = sharding.shard_shape(leaf.shape) if isinstance(sharding, NamedSharding) else leaf.shape
    total += math.prod(shard) * leaf.dtype.itemsize
  return total


def _gib(n: float) -> str:
  return f"{n / 2**30:.3f} GiB"


def format_model_info(abstract: TrainState, logical_specs: TrainState, shardings: TrainState,
                      activation_bytes: Optional[int] = None, data: Optional[str] = None) -> str:
  """The text of ``model-info.txt``; ``data`` (the sources and their rates) is appended."""
  lines = ["Parameters (name, shape, logical axes, mesh partition spec):"]
  flat = jax.tree_util.tree_flatten_with_path(abstract.params)[0]
  specs = jax.tree.leaves(logical_specs.params, is_leaf=lambda x: isinstance(x, jax.sharding.PartitionSpec))
  mesh_specs = jax.tree.leaves(shardings.params)
  width = max(len(path_name(p)) for p, _ in flat)
  for (path, leaf), logical, sharding in zip(flat, specs, mesh_specs):
    lines.append(f"  {path_name(path):<{width}}  {str(tuple(leaf.shape)):<22} "
                 f"{str(tuple(logical)):<36} {tuple(sharding.spec)}")
  count = sum(math.prod(leaf.shape) for _, leaf in flat)
  mesh = mesh_specs[0].mesh
  lines += [
      "",
      f"Total parameters: {count:,}",
      f"Mesh: {dict(mesh.shape)} ({mesh.size} devices)",
      "Memory per device:",
      f"  parameters:       {_gib(per_device_bytes(abstract.params, shardings.params))}",
      f"  optimizer state:  {_gib(per_device_bytes(abstract.opt_state, shardings.opt_state))}",
  ]
  if activation_bytes is not None:
    lines.append(f"  activations (train-step temporaries, XLA estimate): {_gib(activation_bytes)}")
  if data:
    lines += ["", data.rstrip("\n")]
  return "\n".join(lines) + "\n"


def write_model_info(path: str, abstract: TrainState, logical_specs: TrainState,
                     shardings: TrainState, activation_bytes: Optional[int] = None,
                     data: Optional[str] = None) -> None:
  """Writes ``model-info.txt`` (host 0 only); ``data`` as in ``format_model_info``."""
  if jax.process_index() != 0:
    return
  with open(path, "w") as f:
    f.write(format_model_info(abstract, logical_specs, shardings, activation_bytes, data))


def append_model_info(path: str, text: str) -> None:
  """Adds ``text`` (e.g. the examples seen per source at a stage's end) to ``model-info.txt``."""
  if jax.process_index() != 0 or not os.path.exists(path):
    return
  with open(path, "a") as f:
    f.write("\n" + text.rstrip("\n") + "\n")
