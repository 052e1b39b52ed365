"""Train state: born sharded, with logical specs on params and optimizer moments."""

import jax
import numpy as np
from jax.sharding import PartitionSpec as P

from clipa_t5x import partitioning
from clipa_t5x import train_state
import helpers  # tests/helpers.py, put on sys.path by conftest.py


def test_abstract_state_has_logical_specs_and_shardings():
  partitioner = partitioning.PjitPartitioner(num_partitions=2)
  _, _, _, abstract, specs, shardings = helpers.tiny_setup(partitioner)
  # Whatever the module names, every >=2-D kernel has a spec of its own rank.
  for spec, leaf in zip(jax.tree.leaves(specs.params, is_leaf=lambda x: isinstance(x, P)),
                        jax.tree.leaves(abstract.params)):
    assert len(spec) in (0, leaf.ndim)
  # Adam's moments inherit the parameter specs (optax keeps flax's boxes).
  mu = abstract.opt_state[0].mu
  assert jax.tree.structure(mu) == jax.tree.structure(abstract.params)
  mlp_shardings = [s.spec for s in jax.tree.leaves(shardings.params) if "model" in tuple(s.spec)]
  assert mlp_shardings, "standard rules put mlp/heads/vocab on the model axis"


def test_create_train_state_matches_abstract_shardings():
  partitioner = partitioning.PjitPartitioner(num_partitions=2)
  model, tx, _, abstract, _, shardings = helpers.tiny_setup(partitioner)
  state = train_state.create_train_state(model, tx, jax.random.key(0), helpers.IMAGE_SIZE,
                                         helpers.TEXT_LENGTH, partitioner, shardings)
  for leaf, target in zip(jax.tree.leaves(state), jax.tree.leaves(abstract)):
    assert leaf.shape == target.shape and leaf.dtype == target.dtype
    assert leaf.sharding.is_equivalent_to(target.sharding, leaf.ndim)
  assert int(state.step) == 0
  # Same seed, same parameters.
  again = train_state.create_train_state(model, tx, jax.random.key(0), helpers.IMAGE_SIZE,
                                         helpers.TEXT_LENGTH, partitioner, shardings)
  for a, b in zip(jax.tree.leaves(state.params), jax.tree.leaves(again.params)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
