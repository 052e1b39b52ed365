"""Random parameter trees shaped exactly like a ClipaModel's, without running init."""

import functools
from typing import Any, Dict

import jax
import numpy as np
from flax import linen as nn

from clipa_t5x.models import clip
from clipa_t5x.models import configs


def _std(path: str, shape) -> float:
  name = path.split("/")[-1]
  if name in ("bias", "cls", "pos_embedding", "embedding"):
    return 0.1
  if name == "kernel":
    # [W, heads, head_dim] attention kernels contract only their first axis.
    qkv = any(f"/{n}/" in path for n in ("query", "key", "value"))
    fan_in = shape[0] if qkv else int(np.prod(shape[:-1]))
    return fan_in**-0.5
  return 0.1


def random_params(variant: str, image_size: int, text_length: int, seed: int = 0
                  ) -> Dict[str, Any]:
  """The parameter tree of ``ClipaModel(get_config(variant)).get_initial_variables``
  (structure and shapes from ``jax.eval_shape``, then unboxed) with every leaf
  random: LayerNorm scales 1 ± 0.1, everything else away from its init value.
  Real initialisation would compile the model, slow on shared CPUs.
  """
  model = clip.ClipaModel(configs.get_config(variant))
  abstract = jax.eval_shape(functools.partial(
      model.get_initial_variables, image_size=image_size, text_length=text_length),
      jax.random.PRNGKey(0))
  abstract = nn.meta.unbox(abstract["params"])
  rng = np.random.RandomState(seed)

  def fill(path, leaf):
    name = "/".join(str(k.key) for k in path)
    noise = rng.standard_normal(leaf.shape).astype(np.float32)
    if name.endswith("/scale"):
      return 1.0 + 0.1 * noise
    if name == "log_temperature":
      return np.float32(2.3) + 0.1 * noise
    return (_std(name, leaf.shape) * noise).astype(np.float32)

  return jax.tree_util.tree_map_with_path(fill, abstract)


def flat(params: Dict[str, Any], prefix: str = "") -> Dict[str, np.ndarray]:
  """``{'img/...': array}`` of a nested parameter dict."""
  out = {}
  for key, value in params.items():
    if isinstance(value, dict) or hasattr(value, "items"):
      out.update(flat(value, f"{prefix}{key}/"))
    else:
      out[f"{prefix}{key}"] = np.asarray(value)
  return out


def assert_identical(a: Dict[str, Any], b: Dict[str, Any]) -> None:
  """Same leaves, same shapes, bit-identical float32 values."""
  fa, fb = flat(a), flat(b)
  assert sorted(fa) == sorted(fb)
  for key in fa:
    assert fb[key].dtype == np.float32, key
    np.testing.assert_array_equal(fa[key], fb[key], err_msg=key)
