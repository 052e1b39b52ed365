"""Train state (step, params, optimizer state), created already sharded.

The state is first traced with ``jax.eval_shape`` — nothing is allocated — to
read the logical axis names flax attached to every parameter. optax keeps those
boxes on its moments, so the optimizer state gets the same names for free. The
real initialisation is then jitted with ``out_shardings`` set, so each device
only ever materialises its own slice: a bigG model is never whole on one device.
"""

from typing import Any, Callable, Tuple

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from clipa_t5x import partitioning


@flax.struct.dataclass
class TrainState:
  """What a checkpoint holds of the model: step, parameters, optimizer state."""
  step: jax.Array
  params: Any
  opt_state: Any


def _boxed_state_fn(model, tx: optax.GradientTransformation, image_size: int,
                    text_length: int) -> Callable[[jax.Array], TrainState]:
  def init(rng):
    params = model.get_initial_variables(rng, image_size, text_length)["params"]
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params))
  return init


def abstract_train_state(model, tx, image_size: int, text_length: int,
                         partitioner: partitioning.PjitPartitioner
                         ) -> Tuple[TrainState, TrainState, TrainState]:
  """Shapes, logical specs and shardings of the state, without allocating it.

  Returns:
    ``(abstract, logical_specs, shardings)``: ``abstract`` has unboxed
    ``jax.ShapeDtypeStruct`` leaves that carry their target sharding (what
    Orbax restores into), ``logical_specs`` the logical ``PartitionSpec`` of
    every leaf, ``shardings`` the matching ``NamedSharding``s.
  """
  boxed = jax.eval_shape(_boxed_state_fn(model, tx, image_size, text_length),
                         jax.random.key(0))
  logical_specs = nn.get_partition_spec(boxed)
  shardings = partitioner.logical_to_mesh_sharding(logical_specs)
  abstract = jax.tree.map(
      lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
      nn.meta.unbox(boxed), shardings)
  return abstract, logical_specs, shardings


def create_train_state(model, tx, rng: jax.Array, image_size: int, text_length: int,
                       partitioner: partitioning.PjitPartitioner,
                       shardings: TrainState) -> TrainState:
  """Initialises parameters and optimizer state directly in their shardings."""
  init = _boxed_state_fn(model, tx, image_size, text_length)
  # Plain jit, outside the axis-rules context: flax's DenseGeneral reshapes
  # boxed kernels during init, and a logical constraint on the reshaped
  # value would not match its rank. The out_shardings alone place the state.
  jitted = jax.jit(lambda r: nn.meta.unbox(init(r)), in_shardings=partitioner.replicated,
                   out_shardings=shardings)
  return jitted(rng)
