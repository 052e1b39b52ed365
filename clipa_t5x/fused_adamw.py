"""CLIPA's AdamW as one update over all parameters flattened into one vector.

``optimizers.make_optimizer`` chains optax's per-array transformations: on a
GPU that is a few small kernels per parameter array (~1,400 kernels of under
5 us for B/16). ``fused_adamw`` keeps Adam's moments as two flat vectors and
updates them in one pass: the gradients are concatenated (XLA fuses the
concatenation into the update), the update is split back per array.

Same arithmetic as the optax chain ``scale_by_adam -> add_decayed_weights
(kernels only) -> scale_by_learning_rate`` (optional global-norm clipping
first), to float rounding. The flat order puts the decayed arrays (those
``optimizers.kernel_mask`` marks) first, so the decay mask is one comparison
with an index instead of a vector.

The state differs from optax's in layout only; ``to_optax_state`` and
``from_optax_state`` convert either way, exactly, so a checkpoint written
with one optimizer restores into the other after conversion.

The flat moments carry no logical axis names: they are replicated, which
suits data parallelism (one full copy of the state per device anyway) and
not a model-sharded (FSDP) run. Opt in with ``OptimizerConfig.fused=True``.
"""

from typing import Any, Callable, List, NamedTuple, Optional, Sequence, Tuple, Union

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

Schedule = Callable[[Any], jax.Array]


class FusedAdamWState(NamedTuple):
  """``count``: steps taken (int32); ``mu``/``nu``: flat first/second moments."""
  count: jax.Array
  mu: jax.Array
  nu: jax.Array


class Layout(NamedTuple):
  """Where each parameter array sits in the flat vector."""
  order: Tuple[int, ...]      # flat position i holds leaf order[i] (tree-leaf index)
  shapes: Tuple[Tuple[int, ...], ...]  # per tree leaf
  sizes: Tuple[int, ...]      # per tree leaf
  num_decayed: int            # elements at the front of the vector that are decayed
  total: int


def layout(params: Any, decay_mask: Union[Any, Callable[[Any], Any]]) -> Layout:
  """The flat layout of ``params`` (boxed or not): decayed leaves first, tree order within."""
  params = nn.meta.unbox(params)
  leaves = jax.tree.leaves(params)
  mask = decay_mask(params) if callable(decay_mask) else decay_mask
  flags = [bool(m) for m in jax.tree.leaves(mask)]
  if len(flags) != len(leaves):
    raise ValueError(f"the decay mask has {len(flags)} leaves, the parameters {len(leaves)}; "
                     "give a mask with the parameters' structure.")
  order = tuple([i for i, f in enumerate(flags) if f] + [i for i, f in enumerate(flags) if not f])
  sizes = tuple(int(np.prod(np.shape(x))) for x in leaves)
  return Layout(order=order, shapes=tuple(tuple(np.shape(x)) for x in leaves), sizes=sizes,
                num_decayed=sum(s for s, f in zip(sizes, flags) if f), total=sum(sizes))


def flatten(tree: Any, lay: Layout, dtype=jnp.float32) -> jax.Array:
  """The leaves of ``tree`` (the parameters' structure) as one vector in ``lay``'s order."""
  leaves = jax.tree.leaves(nn.meta.unbox(tree))
  if not leaves:
    return jnp.zeros((0,), dtype)
  return jnp.concatenate([jnp.ravel(leaves[i]).astype(dtype) for i in lay.order])


def unflatten(flat: jax.Array, lay: Layout, like: Any) -> Any:
  """Inverse of ``flatten``: a tree shaped like ``like`` (dtypes of ``like``'s leaves)."""
  like_leaves, treedef = jax.tree.flatten(nn.meta.unbox(like))
  out: List[Any] = [None] * len(like_leaves)
  offset = 0
  for i in lay.order:
    size = lay.sizes[i]
    piece = jax.lax.slice_in_dim(flat, offset, offset + size)
    out[i] = piece.reshape(lay.shapes[i]).astype(like_leaves[i].dtype)
    offset += size
  return jax.tree.unflatten(treedef, out)


def fused_adamw(learning_rate: Union[float, Schedule], b1: float = 0.9, b2: float = 0.95,
                eps: float = 1e-8, weight_decay: float = 0.0,
                decay_mask: Optional[Callable[[Any], Any]] = None,
                mu_dtype: Optional[Any] = None,
                grad_clip_norm: Optional[float] = None) -> optax.GradientTransformation:
  """AdamW over the flattened parameters (see the module docstring).

  Args:
    learning_rate: a float or a schedule ``count -> rate`` (called with the
      step count before this update, as ``optax.scale_by_learning_rate`` does).
    b1, b2, eps: Adam's.
    weight_decay: decoupled decay, added to the Adam direction before the
      learning rate scales it, on the leaves ``decay_mask`` marks.
    decay_mask: params -> tree of bools; None decays every leaf.
    mu_dtype: dtype of the first moment (None: float32).
    grad_clip_norm: clip the gradients' global norm to this first (None: no).
  """
  mu_dtype = jnp.dtype(mu_dtype) if mu_dtype is not None else jnp.float32
  mask_fn = decay_mask or (lambda p: jax.tree.map(lambda _: True, p))
  schedule = learning_rate if callable(learning_rate) else (lambda _: learning_rate)

  def init(params):
    lay = layout(params, mask_fn)
    return FusedAdamWState(count=jnp.zeros((), jnp.int32),
                           mu=jnp.zeros((lay.total,), mu_dtype),
                           nu=jnp.zeros((lay.total,), jnp.float32))

  def update(grads, state, params=None):
    if params is None:
      raise ValueError("fused_adamw needs the parameters (weight decay and the layout); "
                       "call tx.update(grads, state, params).")
    lay = layout(params, mask_fn)
    g = flatten(grads, lay)
    if grad_clip_norm:
      norm = jnp.sqrt(jnp.sum(g * g))
      g = g * jnp.where(norm < grad_clip_norm, 1.0, grad_clip_norm / norm)
    count = optax.safe_int32_increment(state.count)
    # b1 * mu in mu's own dtype, then the float32 sum: optax's order, so a
    # bfloat16 first moment rounds as it does there.
    mu = (1.0 - b1) * g + b1 * state.mu
    nu = b2 * state.nu + (1.0 - b2) * g * g
    mu_hat = mu / (1.0 - b1 ** count.astype(jnp.float32))
    nu_hat = nu / (1.0 - b2 ** count.astype(jnp.float32))
    direction = mu_hat / (jnp.sqrt(nu_hat) + eps)
    if weight_decay:
      decayed = jnp.arange(lay.total) < lay.num_decayed
      direction = direction + jnp.where(decayed, weight_decay * flatten(params, lay), 0.0)
    step = -schedule(state.count)
    updates = unflatten(direction * step, lay, params)
    return updates, FusedAdamWState(count=count, mu=mu.astype(mu_dtype), nu=nu)

  return optax.GradientTransformation(init, update)


# ------------------------------------------------------- optax interop ---
def _adam_states(opt_state: Any) -> List[Any]:
  return [s for s in jax.tree.leaves(opt_state, is_leaf=lambda x: isinstance(
      x, optax.ScaleByAdamState)) if isinstance(s, optax.ScaleByAdamState)]


def from_optax_state(opt_state: Any, params: Any,
                     decay_mask: Callable[[Any], Any]) -> FusedAdamWState:
  """The fused state holding exactly the moments of an optax chain's Adam state.

  Args:
    opt_state: the state of ``optimizers.make_optimizer``'s chain (one
      ``ScaleByAdamState`` inside).
    params: the parameters (for the layout).
    decay_mask: as given to ``fused_adamw`` (``optimizers.kernel_mask`` for CLIPA's AdamW).
  """
  adam = _adam_states(opt_state)
  if len(adam) != 1:
    raise ValueError(f"expected one optax ScaleByAdamState in the optimizer state, found "
                     f"{len(adam)}; convert the state of optimizers.make_optimizer.")
  lay = layout(params, decay_mask)
  mu_leaves = jax.tree.leaves(nn.meta.unbox(adam[0].mu))
  return FusedAdamWState(count=jnp.asarray(adam[0].count, jnp.int32),
                         mu=flatten(adam[0].mu, lay, mu_leaves[0].dtype if mu_leaves
                                    else jnp.float32),
                         nu=flatten(adam[0].nu, lay))


def to_optax_state(state: FusedAdamWState, params: Any, tx: optax.GradientTransformation,
                   decay_mask: Callable[[Any], Any]) -> Any:
  """The optax chain state (of ``tx``, e.g. ``make_optimizer(..., fused=False)``) for ``state``.

  Adam's moments and count come from ``state``; every other count in the chain
  (the learning-rate schedule's) is set to the same step count.
  """
  lay = layout(params, decay_mask)
  template = tx.init(nn.meta.unbox(params))
  mu_like = jax.tree.map(lambda m: m, _adam_states(template)[0].mu)

  def convert(node):
    if isinstance(node, optax.ScaleByAdamState):
      return optax.ScaleByAdamState(count=state.count, mu=unflatten(state.mu, lay, mu_like),
                                    nu=unflatten(state.nu, lay, node.nu))
    if _has_count(node):
      return node._replace(count=state.count)
    return node

  return jax.tree.map(convert, template, is_leaf=_has_count)


def _has_count(node) -> bool:
  """An optax NamedTuple state with a ``count`` field (tuple's own .count is a method)."""
  return "count" in getattr(node, "_fields", ())

