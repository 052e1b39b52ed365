"""Per-op CPU profile of one train step's parts: clipa_t5x (XLA) versus torch.

Times, forward + backward, the parts of one image-tower block of the model
``vs_open_clip.py`` trains (Mu/8 at 112 px: batch 128, 197 tokens, width 128,
4 heads, MLP 512), and the optimizer update of the whole model (5.7 M
parameters):

* attention core (q.k, softmax, weights.v): ``layers.attention_core`` with
  each ``attention_impl`` the CPU can run, against torch's
  ``scaled_dot_product_attention``;
* LayerNorm: flax ``nn.LayerNorm`` as ``layers.layer_norm`` builds it, against
  ``torch.nn.LayerNorm``;
* MLP (dense, tanh GELU, dense): ``layers.MlpBlock`` against two
  ``torch.nn.Linear`` and ``F.gelu(approximate='tanh')``;
* optimizer update: ``optimizers.make_optimizer`` (CLIPA's AdamW, jitted,
  state donated) on the model's parameter shapes against ``torch.optim.AdamW``
  (foreach) on the same shapes.

Both run in one process, alternating op by op (A, torch, B, torch, ...), so
other processes' load hits all alike; read the ratios. XLA gets the trainer's
default flags (``clipa_t5x.xla_flags``) unless ``CLIPA_T5X_XLA_DEFAULTS=0``.
Torch is limited to the same cores.

Usage::

  python bench/op_profile.py [--batch 128] [--tokens 197] [--rounds 7] [--threads 0]

Needs the ``torch`` extra.
"""

import argparse
import collections
import os
import statistics
import sys
import time
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from clipa_t5x import xla_flags  # noqa: E402


def _jax_parts(batch: int, tokens: int, width: int, heads: int, mlp_dim: int,
               model: str) -> Dict[str, Callable[[], None]]:
  """Compiled fwd+bwd closures of each part (and the optimizer update)."""
  # pylint: disable=import-outside-toplevel
  import flax.linen as nn
  import jax
  import jax.numpy as jnp
  import optax
  from clipa_t5x import optimizers
  from clipa_t5x.models import clip, configs, layers
  rs = np.random.RandomState(0)
  head_dim = width // heads
  qkv = [jnp.asarray(rs.randn(batch, tokens, heads, head_dim), jnp.float32) for _ in range(3)]
  qkv[0] = qkv[0] * head_dim**-0.5
  x = jnp.asarray(rs.randn(batch, tokens, width), jnp.float32)
  parts = {}

  def grad_of(fn, *args):
    g = jax.jit(jax.grad(lambda *a: jnp.sum(fn(*a)**2), argnums=tuple(range(len(args)))))
    return lambda: jax.block_until_ready(g(*args))

  impls = ["xla", "chunked", "dot_product_attention"]
  for impl in impls:
    parts[f"attention core ({impl})"] = grad_of(
        lambda q, k, v, impl=impl: layers.attention_core(q, k, v, impl), *qkv)
  ln = layers.layer_norm(jnp.float32)
  ln_params = ln.init(jax.random.key(0), x)
  parts["LayerNorm"] = grad_of(lambda p, x: ln.apply(p, x), nn.meta.unbox(ln_params), x)
  mlp = layers.MlpBlock(mlp_dim=mlp_dim)
  mlp_params = nn.meta.unbox(mlp.init(jax.random.key(0), x))
  parts["MLP (fc_in, GELU, fc_out)"] = grad_of(lambda p, x: mlp.apply(p, x), mlp_params, x)

  # The optimizer update of the whole model, as the train step applies it.
  config = configs.get_config(model)
  variables = clip.ClipaModel(config).get_initial_variables(jax.random.key(0), 112, 32)
  params = nn.meta.unbox(variables)["params"]
  tx, _ = optimizers.make_optimizer(optimizers.OptimizerConfig(), batch, 1_000_000)
  grads = jax.tree.map(lambda p: jnp.full_like(p, 1e-3), params)

  def update(params, opt_state):
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state
  update = jax.jit(update, donate_argnums=(0, 1))
  state = {"params": params, "opt": tx.init(params)}

  def run_update():
    state["params"], state["opt"] = update(state["params"], state["opt"])
    jax.block_until_ready(state["params"])
  parts["optimizer update (whole model)"] = run_update
  parts["_shapes"] = [p.shape for p in jax.tree.leaves(params)]
  return parts


def _torch_parts(batch: int, tokens: int, width: int, heads: int, mlp_dim: int,
                 shapes: Sequence[Sequence[int]]) -> Dict[str, Callable[[], None]]:
  # pylint: disable=import-outside-toplevel
  import torch
  import torch.nn.functional as F
  torch.set_num_threads(len(os.sched_getaffinity(0)))
  torch.manual_seed(0)
  head_dim = width // heads
  q, k, v = (torch.randn(batch, heads, tokens, head_dim, requires_grad=True) for _ in range(3))
  x = torch.randn(batch, tokens, width, requires_grad=True)
  ln = torch.nn.LayerNorm(width, eps=1e-6)
  fc_in, fc_out = torch.nn.Linear(width, mlp_dim), torch.nn.Linear(mlp_dim, width)

  def backward(fn, leaves):
    def run():
      for t in leaves:
        t.grad = None
      (fn()**2).sum().backward()
    return run

  params = [torch.nn.Parameter(torch.randn(tuple(s)) * 0.01) for s in shapes]
  for p in params:
    p.grad = torch.full_like(p, 1e-3)
  opt = torch.optim.AdamW(params, lr=1e-4, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.2)
  return {
      "attention core": backward(lambda: F.scaled_dot_product_attention(q, k, v), [q, k, v]),
      "LayerNorm": backward(lambda: ln(x), [x, *ln.parameters()]),
      "MLP (fc_in, GELU, fc_out)": backward(
          lambda: fc_out(F.gelu(fc_in(x), approximate="tanh")),
          [x, *fc_in.parameters(), *fc_out.parameters()]),
      "optimizer update (whole model)": opt.step,
  }


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, Dict[str, float]]:
  """Prints median ms per part, both sides, and their ratio."""
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--model", default="Mu/8")
  parser.add_argument("--batch", type=int, default=128)
  parser.add_argument("--tokens", type=int, default=197, help="image tokens incl. cls")
  parser.add_argument("--rounds", type=int, default=7)
  parser.add_argument("--threads", type=int, default=0,
                      help="0: every core; N: pinned to the first N cores, torch with N threads")
  args = parser.parse_args(argv)
  if args.threads:  # before XLA's and torch's thread pools size themselves
    os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[:args.threads])
  xla_flags.apply_default_flags(log=print)
  import jax  # pylint: disable=import-outside-toplevel
  from clipa_t5x.models import configs  # pylint: disable=import-outside-toplevel
  img = configs.get_config(args.model).image
  ours = _jax_parts(args.batch, args.tokens, img.width, img.heads, img.mlp_dim, args.model)
  shapes = ours.pop("_shapes")
  ref = _torch_parts(args.batch, args.tokens, img.width, img.heads, img.mlp_dim, shapes)
  rows = [(name, name.split(" (")[0] if name.startswith("attention") else name)
          for name in ours]
  for fn in list(ours.values()) + list(ref.values()):  # compile, warm up
    fn()
    fn()
  times: Dict[str, List[float]] = collections.defaultdict(list)
  for _ in range(args.rounds):
    for name, ref_name in rows:
      for key, fn in ((name, ours[name]), ("torch " + ref_name, ref[ref_name])):
        start = time.perf_counter()
        fn()
        times[key].append(time.perf_counter() - start)
  print(f"{args.model} image block at batch {args.batch}, {args.tokens} tokens, fwd+bwd; "
        f"median of {args.rounds} alternating rounds, ms; "
        f"{len(os.sched_getaffinity(0))} core(s); jax {jax.__version__}; "
        f"XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}")
  print(f"{'part':40} {'clipa_t5x':>10} {'torch':>10} {'time ratio':>10}")
  result = {}
  for name, ref_name in rows:
    a = statistics.median(times[name]) * 1e3
    b = statistics.median(times["torch " + ref_name]) * 1e3
    result[name] = {"clipa_t5x_ms": a, "torch_ms": b}
    print(f"{name:40} {a:10.2f} {b:10.2f} {a / b:9.2f}x")
  return result


if __name__ == "__main__":
  main()
