"""Transformer building blocks shared by the CLIPA image and text towers.

Every parameter is created through ``nn.with_logical_partitioning`` so it is
boxed with logical axis names (``embed``, ``mlp``, ``heads``, ``kv``); the
partitioner maps those names onto the device mesh. Activations that matter
for sharding are pinned with ``nn.with_logical_constraint`` (a no-op when no
mesh is set).

Numerics: parameters are float32; matmuls run in the module ``dtype``; the
attention softmax and LayerNorm statistics are always float32.
"""

import dataclasses
from typing import Any, Callable, Optional, Sequence, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from clipa_t5x import xla_flags
from clipa_t5x.models.configs import ATTENTION_IMPLS
from clipa_t5x.models.configs import MLP_IMPLS
from clipa_t5x.models.configs import NORM_IMPLS
from clipa_t5x.models.configs import REMAT_POLICIES

Initializer = Callable[..., Any]
Dtype = Any

# Logical names of the activations we constrain.
RESIDUAL_AXES = ("batch", "length", "embed")
MLP_HIDDEN_AXES = ("batch", "length", "mlp")
QKV_AXES = ("batch", "length", "heads", "kv")

LAYERNORM_EPS = 1e-6
# 'chunked' sizes its batch chunks so that one chunk's float32 [c, heads, Lq, Lk]
# logits take at most this many bytes. Measured on a 2-core AVX-512 Xeon (Mu/8
# image tower, batch 128, fwd+bwd): at 197 tokens chunks of 4 samples (2.5 MB)
# ran 3.3x faster than the whole batch at once, 16 samples (10 MB) barely
# faster; at 50 tokens 16-64 samples (0.6-2.6 MB) were alike.
ATTENTION_CHUNK_BYTES = 5 << 19  # 2.5 MiB


def boxed(init: Initializer, names: Sequence[Optional[str]]) -> Initializer:
  """Shorthand for ``nn.with_logical_partitioning(init, names)``."""
  return nn.with_logical_partitioning(init, tuple(names))


def constrain(x: jax.Array, names: Sequence[Optional[str]]) -> jax.Array:
  """Pins an activation's sharding by logical names (no-op without a mesh)."""
  return nn.with_logical_constraint(x, tuple(names))


def canonical_dtype(dtype: Any) -> jnp.dtype:
  """Turns 'float32' / 'bfloat16' / jnp dtypes into a ``jnp.dtype``."""
  try:
    return jnp.dtype(dtype)
  except TypeError as e:
    raise ValueError(f"Unknown dtype {dtype!r}; use 'float32' or 'bfloat16'.") from e


@jax.custom_vjp
def _layer_norm_f32(x: jax.Array, scale: jax.Array, bias: jax.Array, eps: float) -> jax.Array:
  """LayerNorm over the last axis, all float32; see ``_layer_norm_fwd``."""
  return _layer_norm_fwd(x, scale, bias, eps)[0]


def _layer_norm_fwd(x, scale, bias, eps):
  mean = jnp.mean(x, axis=-1, keepdims=True)
  centred = x - mean
  inv = jax.lax.rsqrt(jnp.mean(centred * centred, axis=-1, keepdims=True) + eps)
  normed = centred * inv
  return normed * scale + bias, (normed, inv, scale)


def _layer_norm_bwd(res, g):
  # The closed-form gradient: one pass for the two row means, one for dx;
  # autodiff of the forward instead materialises several broadcasts.
  normed, inv, scale = res
  g_normed = g * scale
  mean_g = jnp.mean(g_normed, axis=-1, keepdims=True)
  mean_gn = jnp.mean(g_normed * normed, axis=-1, keepdims=True)
  dx = inv * (g_normed - mean_g - normed * mean_gn)
  axes = tuple(range(g.ndim - 1))
  return dx, jnp.sum(g * normed, axis=axes), jnp.sum(g, axis=axes), None


_layer_norm_f32.defvjp(_layer_norm_fwd, _layer_norm_bwd)


class LayerNorm(nn.Module):
  """LayerNorm over the last axis with float32 statistics and a fused backward.

  Same parameters as ``nn.LayerNorm`` (``scale``, ``bias``, float32, named
  ``embed``); the statistics and the normalisation run in float32 whatever
  the input dtype, the output is in ``dtype``. The gradient is the closed
  form (``_layer_norm_bwd``), which XLA:CPU runs in fewer memory passes than
  the autodiff of flax's LayerNorm.
  """
  epsilon: float = LAYERNORM_EPS
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    width = x.shape[-1]
    scale = self.param("scale", boxed(nn.initializers.ones, ("embed",)), (width,), jnp.float32)
    bias = self.param("bias", boxed(nn.initializers.zeros, ("embed",)), (width,), jnp.float32)
    y = _layer_norm_f32(x.astype(jnp.float32), scale, bias, self.epsilon)
    return y.astype(self.dtype)


def layer_norm(dtype: Dtype, name: Optional[str] = None) -> LayerNorm:
  """LayerNorm with eps 1e-6, float32 statistics and ``embed``-named params."""
  return LayerNorm(epsilon=LAYERNORM_EPS, dtype=dtype, name=name)


def _flat_init(init: Initializer, num_in_axes: int) -> Initializer:
  """Runs a 2-D initialiser on the (fan_in, fan_out) view of an N-D kernel.

  Reshaping happens *before* boxing: flax's DenseGeneral reshapes an already
  boxed value, which breaks under a mesh (names of rank 3 on a 2-D value).
  """
  def flat(rng: jax.Array, shape: Sequence[int], dtype: Dtype = jnp.float32) -> jax.Array:
    fan_in = int(np.prod(shape[:num_in_axes]))
    fan_out = int(np.prod(shape[num_in_axes:]))
    return jnp.reshape(init(rng, (fan_in, fan_out), dtype), shape)
  return flat


class DenseGeneral(nn.Module):
  """Contracts the last ``len(in_names)`` axes of x with an N-D named kernel.

  Attributes:
    features: output feature shape, e.g. (heads, head_dim) or (width,).
    in_names / out_names: logical names of the contracted / produced axes; the
      kernel is named ``in_names + out_names`` and the bias ``out_names``.
    dtype: compute dtype (params are float32).
    kernel_init: a 2-D initialiser, applied to the (fan_in, fan_out) view.
    bias_init: bias initialiser.
  """
  features: Tuple[int, ...]
  in_names: Tuple[Optional[str], ...]
  out_names: Tuple[Optional[str], ...]
  dtype: Dtype = jnp.float32
  kernel_init: Initializer = nn.initializers.xavier_uniform()
  bias_init: Initializer = nn.initializers.zeros

  @nn.compact
  def __call__(self, x: jax.Array, *, project: bool = True):
    """Applies ``x · kernel + bias``.

    With ``project=False`` it only creates (or reads) the parameters for an
    input shaped like ``x`` and returns ``(kernel, bias)`` (float32), so that a caller can fuse several projections of the same input
    into one matmul while each keeps its own named parameters.
    """
    n_in = len(self.in_names)
    features = tuple(self.features)
    if len(features) != len(self.out_names):
      raise ValueError(f"features {features} and out_names {self.out_names} differ in rank.")
    kernel = self.param(
        "kernel", boxed(_flat_init(self.kernel_init, n_in), self.in_names + self.out_names),
        tuple(x.shape[-n_in:]) + features, jnp.float32)
    bias = self.param("bias", boxed(self.bias_init, self.out_names), features, jnp.float32)
    if not project:
      return kernel, bias
    in_axes = tuple(range(x.ndim - n_in, x.ndim))
    y = jax.lax.dot_general(
        x.astype(self.dtype), kernel.astype(self.dtype),
        ((in_axes, tuple(range(n_in))), ((), ())))
    return y + bias.astype(self.dtype)


def resolve_attention_impl(impl: str, backend: Optional[str] = None) -> str:
  """The concrete attention implementation that ``impl`` stands for.

  Args:
    impl: one of ``ATTENTION_IMPLS``. 'auto' picks per platform: 'chunked' on
      CPU (fastest measured there), 'dot_product_attention' on GPU (cuDNN
      flash attention where it applies), 'xla' elsewhere (TPU).
    backend: platform name; default ``jax.default_backend()`` (at trace time).

  Returns:
    One of 'xla', 'chunked', 'dot_product_attention', 'cudnn'.
  """
  if impl not in ATTENTION_IMPLS:
    raise ValueError(f"Unknown attention_impl {impl!r}; use one of {ATTENTION_IMPLS}.")
  if impl != "auto":
    return impl
  backend = backend or jax.default_backend()
  if backend == "cpu":
    return "chunked"
  if backend in ("gpu", "cuda", "rocm"):
    return "dot_product_attention"
  return "xla"


def resolve_kernel_option(option: str, value: str, backend: Optional[str] = None) -> str:
  """The concrete ``norm_impl`` / ``mlp_impl`` that ``value`` stands for.

  'auto' is 'xla' on CPU and TPU, and on GPU the measured default in
  ``xla_flags.MODEL_DEFAULTS`` (logged at start-up by ``apply_default_flags``).
  """
  choices = {"norm_impl": NORM_IMPLS, "mlp_impl": MLP_IMPLS}[option]
  if value not in choices:
    raise ValueError(f"Unknown {option} {value!r}; use one of {choices}.")
  if value != "auto":
    return value
  backend = backend or jax.default_backend()
  platform = "gpu" if backend in ("gpu", "cuda", "rocm") else backend
  return xla_flags.model_defaults(platform).get(option, "xla")


def attention_chunk_size(batch: int, heads: int, q_len: int, kv_len: int,
                         budget_bytes: Optional[int] = None) -> int:
  """Samples per chunk of the 'chunked' attention: a divisor of ``batch``.

  The largest divisor whose float32 logits [c, heads, q_len, kv_len] fit in
  ``budget_bytes`` (default ``ATTENTION_CHUNK_BYTES``; at least 1 sample), so
  that one chunk's softmax stays in cache.
  """
  per_sample = 4 * heads * q_len * kv_len
  budget = ATTENTION_CHUNK_BYTES if budget_bytes is None else budget_bytes
  target = max(1, budget // per_sample)
  return max(c for c in range(1, min(batch, target) + 1) if batch % c == 0)


def _softmax_attention(q: jax.Array, k: jax.Array, v: jax.Array) -> jax.Array:
  """softmax(q.k) . v for [B, L, heads, head_dim] inputs (q already scaled).

  Logits and softmax are float32 even under bf16 compute, for stability.
  """
  logits = jnp.einsum("bqhd,bkhd->bhqk", q, k, preferred_element_type=jnp.float32)
  weights = jax.nn.softmax(logits, axis=-1).astype(v.dtype)
  return jnp.einsum("bhqk,bkhd->bqhd", weights, v)


def _chunked_attention(q: jax.Array, k: jax.Array, v: jax.Array,
                       chunk_size: Optional[int]) -> jax.Array:
  """``_softmax_attention`` over batch chunks, one after the other.

  Each chunk runs under ``jax.checkpoint``: the backward pass recomputes a
  chunk's logits instead of reading back the whole batch's [B, heads, L, L]
  float32 logits from memory. On CPU that keeps the softmax and its gradient
  in cache; the extra q.k matmul costs less than the memory traffic it saves.
  """
  batch, q_len, heads, _ = q.shape
  c = chunk_size or attention_chunk_size(batch, heads, q_len, k.shape[1])
  if batch % c:
    raise ValueError(f"attention chunk size {c} does not divide the batch {batch}.")
  n = batch // c
  if n == 1:
    return _softmax_attention(q, k, v)

  def split(x: jax.Array) -> jax.Array:
    # The chunk axis is walked sequentially; the samples in a chunk keep the
    # batch sharding.
    return constrain(x.reshape((n, c) + x.shape[1:]), (None,) + QKV_AXES)

  body = jax.checkpoint(lambda qkv: _softmax_attention(*qkv))
  y = jax.lax.map(body, (split(q), split(k), split(v)))
  return y.reshape((batch,) + y.shape[2:])


def _gpu_flash_ok(q: jax.Array) -> bool:
  """Whether cuDNN flash attention may take these inputs (dtype, head size).

  JAX checks the rest (head size limit per GPU generation, cuDNN version)
  while tracing and raises, which ``attention_core`` turns into the fallback.
  """
  return q.dtype in (jnp.bfloat16, jnp.float16) and q.shape[-1] % 8 == 0


def attention_core(q: jax.Array, k: jax.Array, v: jax.Array, impl: str = "auto",
                   chunk_size: Optional[int] = None) -> jax.Array:
  """softmax(q . k^T) . v without any mask, by the chosen implementation.

  Args:
    q, k, v: [B, L, heads, head_dim] in the compute dtype; ``q`` is already
      scaled by head_dim^-0.5.
    impl: one of ``ATTENTION_IMPLS``:
      'xla': plain einsums, the [B, heads, L, L] float32 logits materialised;
      'chunked': the same per batch chunk under ``jax.checkpoint`` (CPU);
      'dot_product_attention': ``jax.nn.dot_product_attention``, with cuDNN
        on GPU when dtype and head size suit it, else its XLA form;
      'cudnn': ``jax.nn.dot_product_attention(implementation='cudnn')``, no
        fallback (raises where cuDNN cannot run it);
      'auto': ``resolve_attention_impl`` per platform.
    chunk_size: samples per chunk for 'chunked'; None derives it
      (``attention_chunk_size``).

  Returns:
    [B, L, heads, head_dim] in ``v``'s dtype.
  """
  impl = resolve_attention_impl(impl)
  if impl == "xla":
    return _softmax_attention(q, k, v)
  if impl == "chunked":
    return _chunked_attention(q, k, v, chunk_size)
  if impl == "cudnn":
    return jax.nn.dot_product_attention(q, k, v, scale=1.0, implementation="cudnn")
  # 'dot_product_attention'
  if jax.default_backend() in ("gpu", "cuda") and _gpu_flash_ok(q):
    try:
      return jax.nn.dot_product_attention(q, k, v, scale=1.0, implementation="cudnn")
    except Exception:  # pylint: disable=broad-except  (unsupported shape or cuDNN version)
      pass
  return jax.nn.dot_product_attention(q, k, v, scale=1.0, implementation="xla")


class MultiHeadAttention(nn.Module):
  """Bidirectional multi-head self-attention without any mask.

  Attributes:
    heads: number of heads; the input width must be divisible by it.
    dtype: compute dtype.
    qkv_kernel_init: initialiser of the query/key/value kernels.
    out_kernel_init: initialiser of the output kernel.
    attention_impl: how the attention core runs (``ATTENTION_IMPLS``); all
      give the same result up to float rounding.
  """
  heads: int
  dtype: Dtype = jnp.float32
  qkv_kernel_init: Initializer = nn.initializers.xavier_uniform()
  out_kernel_init: Initializer = nn.initializers.xavier_uniform()
  attention_impl: str = "auto"

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """Self-attention over ``x`` [B, L, W] → [B, L, W]."""
    width = x.shape[-1]
    if width % self.heads:
      raise ValueError(f"Width {width} is not divisible by heads={self.heads}.")
    head_dim = width // self.heads

    # query, key and value keep their own parameters [W, heads, head_dim]
    # (checkpoints and the open_clip converter see three projections) but run
    # as one matmul against their concatenated kernels: one pass over x
    # instead of three, and one matmul for x's gradient. The query scale
    # head_dim^-0.5 is folded into the query's kernel and bias.
    kernels, biases = [], []
    for name in ("query", "key", "value"):
      kernel, bias = DenseGeneral(
          features=(self.heads, head_dim),
          in_names=("embed",),
          out_names=("heads", "kv"),
          dtype=self.dtype,
          kernel_init=self.qkv_kernel_init,
          name=name,
      )(x, project=False)
      kernels.append(kernel)
      biases.append(bias)
    scale = head_dim**-0.5
    kernels[0], biases[0] = kernels[0] * scale, biases[0] * scale
    kernel = jnp.concatenate(kernels, axis=-1).astype(self.dtype)  # [W, heads, 3 * head_dim]
    bias = jnp.concatenate(biases, axis=-1).astype(self.dtype)
    qkv = jnp.einsum("blw,whd->blhd", x.astype(self.dtype), kernel) + bias
    qkv = constrain(qkv, QKV_AXES)
    q, k, v = (constrain(t, QKV_AXES) for t in jnp.split(qkv, 3, axis=-1))
    y = attention_core(q, k, v, self.attention_impl).astype(self.dtype)
    y = constrain(y, QKV_AXES)
    return DenseGeneral(
        features=(width,),
        in_names=("heads", "kv"),
        out_names=("embed",),
        dtype=self.dtype,
        kernel_init=self.out_kernel_init,
        name="out",
    )(y)


def _named_dense(features: int, names: Tuple[str, str], kernel_init: Initializer, dtype: Dtype,
                 name: str) -> nn.Dense:
  # A Dense with float32 params, its kernel named ``names`` and its bias ``names[1]``.
  return nn.Dense(features, dtype=dtype, param_dtype=jnp.float32, name=name,
                  kernel_init=boxed(kernel_init, names),
                  bias_init=boxed(nn.initializers.zeros, names[1:]))


def projection_head(out_dim: int, width: int, dtype: Dtype, name: Optional[str] = None) -> nn.Dense:
  """A tower's bias-free projection ``embed`` → ``proj``, kernel init N(0, width^-1/2)."""
  return nn.Dense(out_dim, use_bias=False, dtype=dtype, param_dtype=jnp.float32, name=name,
                  kernel_init=boxed(nn.initializers.normal(stddev=width**-0.5), ("embed", "proj")))


class MlpBlock(nn.Module):
  """Dense → GELU (tanh approximation) → Dense.

  Attributes:
    mlp_dim: hidden width (``mlp`` axis).
    dtype: compute dtype.
    in_kernel_init / out_kernel_init: kernel initialisers of the two layers.
    mlp_impl: 'xla' (``nn.gelu``), 'fused_gelu' (``kernels.gelu``: float32
      math, a one-pass backward keeping only the pre-activation) or 'auto'.
  """
  mlp_dim: int
  dtype: Dtype = jnp.float32
  in_kernel_init: Initializer = nn.initializers.xavier_uniform()
  out_kernel_init: Initializer = nn.initializers.xavier_uniform()
  mlp_impl: str = "xla"

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """Applies the MLP to ``x`` [B, L, W] → [B, L, W]."""
    h = _named_dense(self.mlp_dim, ("embed", "mlp"), self.in_kernel_init, self.dtype, "fc_in")(x)
    if resolve_kernel_option("mlp_impl", self.mlp_impl) == "fused_gelu":
      from clipa_t5x.kernels import gelu  # pylint: disable=import-outside-toplevel
      h = gelu.gelu(h)
    else:
      h = nn.gelu(h, approximate=True)
    h = constrain(h, MLP_HIDDEN_AXES)
    return _named_dense(x.shape[-1], ("mlp", "embed"), self.out_kernel_init, self.dtype,
                        "fc_out")(h)


class PallasLayerNorm(nn.Module):
  """``LayerNorm``'s parameters and numerics through the Pallas kernels.

  Called with one input it normalises it; with two (``x``, ``y``) it returns
  ``(x + y, LayerNorm(x + y))`` from one fused kernel.
  """
  epsilon: float = LAYERNORM_EPS
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, y: Optional[jax.Array] = None):
    from clipa_t5x.kernels import layer_norm as pallas_ln  # pylint: disable=import-outside-toplevel
    width = x.shape[-1]
    scale = self.param("scale", boxed(nn.initializers.ones, ("embed",)), (width,), jnp.float32)
    bias = self.param("bias", boxed(nn.initializers.zeros, ("embed",)), (width,), jnp.float32)
    dtype = canonical_dtype(self.dtype)
    if y is None:
      return pallas_ln.layer_norm(x, scale, bias, self.epsilon, dtype)
    return pallas_ln.add_layer_norm(x, y, scale, bias, self.epsilon, dtype)


class BlockSettings(nn.Module):
  """The attributes of ``EncoderBlock``, which an ``Encoder`` passes to each of its blocks."""
  heads: int
  mlp_dim: int
  dtype: Dtype = jnp.float32
  qkv_kernel_init: Initializer = nn.initializers.xavier_uniform()
  attn_out_kernel_init: Initializer = nn.initializers.xavier_uniform()
  mlp_in_kernel_init: Initializer = nn.initializers.xavier_uniform()
  mlp_out_kernel_init: Initializer = nn.initializers.xavier_uniform()
  attention_impl: str = "auto"
  norm_impl: str = "xla"
  mlp_impl: str = "xla"


class EncoderBlock(BlockSettings):
  """Pre-LN transformer block: x + Attn(LN(x)); x + MLP(LN(x)). No dropout.

  ``norm_impl='pallas'`` runs both LayerNorms as Pallas kernels, the first
  residual add fused into the second; ``mlp_impl`` picks the MLP's GELU.
  Parameters are the same whatever the options.
  """

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """Applies the block to the residual stream ``x`` [B, L, W]."""
    pallas = resolve_kernel_option("norm_impl", self.norm_impl) == "pallas"
    x = constrain(x, RESIDUAL_AXES)
    if pallas:
      y = PallasLayerNorm(dtype=self.dtype, name="norm_attn")(x)
    else:
      y = layer_norm(self.dtype, name="norm_attn")(x)
    y = MultiHeadAttention(
        heads=self.heads,
        dtype=self.dtype,
        qkv_kernel_init=self.qkv_kernel_init,
        out_kernel_init=self.attn_out_kernel_init,
        attention_impl=self.attention_impl,
        name="attention",
    )(y)
    if pallas:
      x, y = PallasLayerNorm(dtype=self.dtype, name="norm_mlp")(x, y.astype(x.dtype))
      x = constrain(x, RESIDUAL_AXES)
    else:
      x = constrain(x + y, RESIDUAL_AXES)
      y = layer_norm(self.dtype, name="norm_mlp")(x)
    y = MlpBlock(
        mlp_dim=self.mlp_dim,
        dtype=self.dtype,
        in_kernel_init=self.mlp_in_kernel_init,
        out_kernel_init=self.mlp_out_kernel_init,
        mlp_impl=self.mlp_impl,
        name="mlp",
    )(y)
    return constrain(x + y, RESIDUAL_AXES)


def remat_block_class(remat_policy: str) -> type:
  """The block class to instantiate for a remat policy.

  Args:
    remat_policy: 'none' (store all activations), 'full' (recompute the whole
      block in the backward pass) or 'dots_saveable' (keep matmul outputs,
      recompute the rest).

  Returns:
    ``EncoderBlock`` or its ``nn.remat`` wrapper.
  """
  if remat_policy == "none":
    return EncoderBlock
  if remat_policy == "full":
    return nn.remat(EncoderBlock, policy=None)
  if remat_policy == "dots_saveable":
    return nn.remat(EncoderBlock, policy=jax.checkpoint_policies.dots_saveable)
  raise ValueError(f"Unknown remat_policy {remat_policy!r}; use one of {REMAT_POLICIES}.")


class Encoder(BlockSettings, kw_only=True):
  """A stack of ``depth`` pre-LN blocks (a plain Python loop, no scan).

  Attributes:
    depth: number of blocks.
    remat_policy: see ``remat_block_class``.
    the rest: ``BlockSettings``, passed to every block (the ``*_kernel_init``
      kernel initialisers; ``attention_impl``: see ``attention_core``;
      ``norm_impl``, ``mlp_impl``: see ``EncoderBlock``).
  """
  depth: int
  remat_policy: str = "none"

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """Runs the blocks on ``x`` [B, L, W] (no final LayerNorm)."""
    block_cls = remat_block_class(self.remat_policy)
    for i in range(self.depth):
      x = block_cls(**{f: getattr(self, f) for f in _BLOCK_FIELDS}, name=f"encoderblock_{i}")(x)
    return x


_BLOCK_FIELDS = tuple(f.name for f in dataclasses.fields(BlockSettings)
                      if f.name not in ("parent", "name"))
# What a tower passes to its Encoder.
_TOWER_FIELDS = ("depth", "heads", "mlp_dim", "dtype", "remat_policy", "attention_impl",
                 "norm_impl", "mlp_impl")


class Tower(nn.Module):
  """The attributes the image and the text tower share.

  Attributes:
    width, depth, heads, mlp_dim: tower size.
    out_dim: output dimension of the projection head.
    dtype: compute dtype (params are float32).
    remat_policy: 'none', 'full' or 'dots_saveable'.
    attention_impl: see ``attention_core``.
    norm_impl, mlp_impl: see ``EncoderBlock``.
  """
  width: int
  depth: int
  heads: int
  mlp_dim: int
  out_dim: int
  dtype: Any = jnp.float32
  remat_policy: str = "none"
  attention_impl: str = "auto"
  norm_impl: str = "auto"
  mlp_impl: str = "auto"


def tower_encoder(tower: Tower, qkv: Initializer, attn_out: Initializer, mlp_in: Initializer,
                  mlp_out: Initializer, name: Optional[str] = None) -> Encoder:
  """The ``Encoder`` of a tower: its sizes and options, these kernel initialisers."""
  return Encoder(**{f: getattr(tower, f) for f in _TOWER_FIELDS}, qkv_kernel_init=qkv,
                 attn_out_kernel_init=attn_out, mlp_in_kernel_init=mlp_in,
                 mlp_out_kernel_init=mlp_out, name=name)
