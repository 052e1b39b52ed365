"""CLIPA's optimizers: AdamW (β 0.9/0.95) or Lion, decay on kernels only, warmup + cosine.

As in the official configs, the peak learning rate scales with the batch
(``base_learning_rate × batch_size / 256``) and weight decay is decoupled,
multiplied by the learning rate, and applied only to parameters named
``kernel`` (dense, conv and head weights): biases, LayerNorm, the cls token,
embeddings, position embeddings and the temperature are not decayed.

Lion (Chen et al. 2023; ``name='lion'``) keeps one moment ``m`` and steps by
the sign of ``β1·m + (1-β1)·g``, then ``m ← β2·m + (1-β2)·g``; the decay and
the learning rate apply as for AdamW. Its steps are larger per coordinate, so
it wants a smaller learning rate and a larger decay: the official CLIPA
bigG/14 Lion recipe uses 8e-8 per 256 examples and decay 2.0
(``gin/optimizers/lion.gin``).

``learning_rate_multipliers`` scales the whole update of the parameters with
a given name, e.g. ``{'log_temperature': 10.0, 'logit_bias': 10.0}``: Adam
moves a parameter by at most about the learning rate per step, which in a
short run leaves the loss's scalars near their initial values.
"""

import dataclasses
from typing import Any, Callable, Mapping, Optional, Union

import jax
import jax.numpy as jnp
import optax

from clipa_t5x import fused_adamw

Schedule = Callable[[Any], jax.Array]

_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, None: None}
OPTIMIZERS = ("adamw", "lion")


def learning_rate_schedule(base_learning_rate: float,
                           batch_size: int,
                           total_steps: int,
                           warmup_steps: int) -> Schedule:
  """Linear warmup from 0 to ``base × batch/256``, then cosine decay to 0."""
  if total_steps <= 0:
    raise ValueError(f"total_steps must be positive, got {total_steps}")
  # warmup == total would leave the cosine part zero steps, which optax rejects.
  if not 0 <= warmup_steps < total_steps:
    raise ValueError(
        f"warmup_steps={warmup_steps} must lie in [0, total_steps={total_steps}); "
        "shorten the warmup or train longer.")
  peak = base_learning_rate * batch_size / 256
  return optax.warmup_cosine_decay_schedule(
      init_value=0.0, peak_value=peak, warmup_steps=warmup_steps,
      decay_steps=total_steps, end_value=0.0)


def _leaf_name(path) -> Optional[str]:
  """The parameter's own name (its last dict key) from a pytree path."""
  last = path[-1]
  # Boxed (LogicallyPartitioned) params end their path in ``.value``.
  if getattr(last, "name", None) == "value" and len(path) > 1:
    last = path[-2]
  return getattr(last, "key", None)


def kernel_mask(params: Any) -> Any:
  """``True`` for leaves whose name is ``kernel``: the only ones to decay."""
  return jax.tree_util.tree_map_with_path(lambda path, _: _leaf_name(path) == "kernel", params)


def scale_by_name(multipliers: Mapping[str, float]) -> optax.GradientTransformation:
  """Multiplies the updates of the parameters named in ``multipliers`` by their factor.

  A name matches every parameter whose own name (last key) it is, wherever it
  sits in the tree; other parameters keep their update. ``init`` refuses a
  name that matches no parameter (a typo would otherwise do nothing).
  """
  multipliers = dict(multipliers)

  def factors(tree):
    return jax.tree_util.tree_map_with_path(
        lambda path, _: multipliers.get(_leaf_name(path), 1.0), tree)

  def init_fn(params):
    names = {_leaf_name(path) for path, _ in jax.tree_util.tree_leaves_with_path(params)}
    missing = sorted(set(multipliers) - names)
    if missing:
      raise ValueError(f"learning_rate_multipliers names {missing}, which no parameter is "
                       f"called; use parameter names such as {sorted(n for n in names if n)[:6]}.")
    return optax.EmptyState()

  def update_fn(updates, state, params=None):
    del params
    return jax.tree.map(lambda u, f: u if f == 1.0 else u * jnp.asarray(f, u.dtype),
                        updates, factors(updates)), state

  return optax.GradientTransformation(init_fn, update_fn)


@dataclasses.dataclass(frozen=True)
class OptimizerConfig:
  """Everything the optimizer needs; every field is a gin binding.

  Attributes:
    name: ``'adamw'`` (CLIPA) or ``'lion'``; the gin macro ``OPTIMIZER``.
    base_learning_rate: learning rate per 256 examples (CLIPA H/14 pretrain: 8e-6).
    warmup_steps: linear warmup length in steps.
    b1, b2: Adam betas (CLIPA: 0.9, 0.95); for Lion, the interpolation (b1)
      and moment decay (b2) rates.
    eps: Adam epsilon (unused by Lion).
    weight_decay: decoupled decay on kernels (CLIPA: 0.2).
    mu_dtype: ``'bfloat16'`` keeps the first moment (Adam's, or Lion's only
      one) in bf16 (CLIPA-v2 does: less memory, ~10% faster); ``None`` keeps it
      in the parameter dtype.
    grad_clip_norm: optional global-norm clipping (CLIPA uses none).
    fused: the same update as one pass over the flattened parameters
      (``fused_adamw``: fewer, larger GPU kernels). Its state is laid out
      differently: ``fused_adamw.from_optax_state`` / ``to_optax_state``
      convert checkpoints; data parallel only (the flat state is replicated).
    learning_rate_multipliers: ``{parameter name: factor}`` scaling the whole
      update of every parameter with that name (``scale_by_name``), e.g. the
      sigmoid loss's ``log_temperature`` and ``logit_bias`` in a short run;
      ``None`` or ``{}``: every parameter at the schedule's rate.
  """
  name: str = "adamw"
  base_learning_rate: float = 8e-6
  warmup_steps: int = 0
  b1: float = 0.9
  b2: float = 0.95
  eps: float = 1e-8
  weight_decay: float = 0.2
  mu_dtype: Optional[str] = None
  grad_clip_norm: Optional[float] = None
  fused: bool = False
  learning_rate_multipliers: Optional[Union[Mapping[str, float], tuple]] = None

  def __post_init__(self):
    # Kept as sorted (name, factor) pairs so the frozen config stays hashable.
    given = self.learning_rate_multipliers
    pairs = tuple(sorted(dict(given or {}).items()))
    for name, factor in pairs:
      if not isinstance(name, str) or not isinstance(factor, (int, float)) or factor < 0:
        raise ValueError(f"learning_rate_multipliers wants {{parameter name: factor >= 0}}, "
                         f"got {name!r}: {factor!r}")
    object.__setattr__(self, "learning_rate_multipliers", pairs)


def make_optimizer(config: OptimizerConfig, batch_size: int,
                   total_steps: int) -> "tuple[optax.GradientTransformation, Schedule]":
  """Builds the optax transformation and its learning-rate schedule."""
  if config.name not in OPTIMIZERS:
    raise ValueError(f"unknown optimizer {config.name!r}; set OPTIMIZER (OptimizerConfig.name) "
                     f"to one of {list(OPTIMIZERS)}.")
  if config.mu_dtype not in _DTYPES:
    raise ValueError(f"mu_dtype must be one of {sorted(k for k in _DTYPES if k)} or None, "
                     f"got {config.mu_dtype!r}")
  schedule = learning_rate_schedule(config.base_learning_rate, batch_size, total_steps,
                                    config.warmup_steps)
  if config.fused and config.name != "adamw":
    raise ValueError(f"OptimizerConfig.fused is a fused AdamW; it cannot run "
                     f"{config.name!r}: set fused=False or OPTIMIZER='adamw'.")
  if config.fused and config.learning_rate_multipliers:
    raise ValueError("OptimizerConfig.fused cannot scale single parameters' rates: set "
                     "fused=False or learning_rate_multipliers=None.")
  if config.fused:
    return fused_adamw.fused_adamw(
        schedule, b1=config.b1, b2=config.b2, eps=config.eps,
        weight_decay=config.weight_decay, decay_mask=kernel_mask,
        mu_dtype=_DTYPES[config.mu_dtype], grad_clip_norm=config.grad_clip_norm), schedule
  parts = []
  if config.grad_clip_norm:
    parts.append(optax.clip_by_global_norm(config.grad_clip_norm))
  if config.name == "lion":
    # optax's Lion is the official CLIPA formula: sign(b1·m + (1-b1)·g), then m updated.
    direction = optax.scale_by_lion(b1=config.b1, b2=config.b2,
                                    mu_dtype=_DTYPES[config.mu_dtype])
  else:
    direction = optax.scale_by_adam(b1=config.b1, b2=config.b2, eps=config.eps,
                                    mu_dtype=_DTYPES[config.mu_dtype])
  parts += [
      direction,
      optax.add_decayed_weights(config.weight_decay, mask=kernel_mask),
      optax.scale_by_learning_rate(schedule),
  ]
  if config.learning_rate_multipliers:
    parts.append(scale_by_name(dict(config.learning_rate_multipliers)))
  return optax.chain(*parts), schedule
