"""Per-device memory of a training stage, estimated before anything is allocated.

One calculation serves the planner (``python -m clipa_t5x.plan``), the
preflight that runs before each stage trains, and ``train --check``. It needs
no gin, no devices and no data: parameter shapes come from ``jax.eval_shape``
of the model, their sharding from the logical axis rules applied to a mesh
*shape* (``MeshShape``), and activations from a per-token count of what the
backward pass keeps under the model's remat policy.

What one device holds during a train step (``MemoryEstimate`` fields):

* ``params``: float32 parameters, sharded by the rules;
* ``optimizer``: AdamW's ``mu`` (float32, or bfloat16 with ``mu_dtype``) and
  ``nu`` (float32), sharded like the parameters;
* ``gradients``: float32, like the parameters; with micro-batches an
  accumulator and one micro-batch's gradients;
* ``update``: the new parameters and optimizer state, built beside the old
  ones because the step keeps the old state when the loss is NaN/Inf (the
  ``where`` needs both);
* ``activations``: what the backward pass keeps, per layer x examples per
  device (one micro-batch's worth) x tokens (image tokens after masking),
  divided along ``model`` where the rules split the MLP, the heads or (2-D)
  the residual stream, under the remat policy: ``'none'`` keeps every block's intermediates,
  ``'dots_saveable'`` the matmul outputs, ``'full'`` only each block's input
  (plus one block recomputed at a time);
* ``loss``: the contrastive loss's ``[B/n_data, B]`` float32 logits and their
  softmaxes and gradient (the global batch, however many micro-batches);
* ``batch``: the input images and captions, and the float image the encoder
  normalises them into.

The coefficients were checked against XLA's own buffer assignment
(``jit(...).lower(...).compile().memory_analysis()``) on fake CPU devices:
``tests/test_memory.py`` holds the estimate within 20% of it for configs where
activations, parameters or the logits dominate, under each remat policy.
Real accelerators add a runtime reserve (cuDNN workspaces, the collective
buffers); ``fits`` keeps ``HEADROOM`` of the device free for it.
"""

import dataclasses
import functools
import math
import re
from typing import Any, Dict, Optional, Sequence, Tuple

DATA_AXIS = "data"
MODEL_AXIS = "model"
# Fraction of a device's memory a stage may plan to use; the rest is the runtime's.
HEADROOM = 0.9
_DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
_UNITS = {"": 1, "B": 1, "K": 1e3, "KB": 1e3, "M": 1e6, "MB": 1e6, "G": 1e9, "GB": 1e9,
          "T": 1e12, "TB": 1e12, "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}


@dataclasses.dataclass(frozen=True)
class MeshShape:
  """A ``('data', 'model')`` mesh by its sizes, and the logical axis rules on it.

  Attributes:
    data: devices along ``data`` (the batch, and FSDP's parameter shards).
    model: devices along ``model`` (``num_partitions``).
    rules: ``(logical_name, mesh_axis_or_None)`` pairs, as
      ``partitioning.standard_logical_axis_rules()`` returns them.
  """
  data: int
  model: int = 1
  rules: Tuple[Tuple[str, Optional[str]], ...] = ()

  @property
  def devices(self) -> int:
    return self.data * self.model

  def axis_size(self, axis: Any) -> int:
    """Devices along a mesh axis name, a tuple of names, or None (1)."""
    if axis is None:
      return 1
    if isinstance(axis, (tuple, list)):
      return math.prod(self.axis_size(a) for a in axis)
    return {DATA_AXIS: self.data, MODEL_AXIS: self.model}[axis]


def mesh_shape(devices: int, num_partitions: int = 1,
               rules: Optional[Sequence[Tuple[str, Optional[str]]]] = None) -> MeshShape:
  """The mesh ``PjitPartitioner(num_partitions, rules)`` would build on ``devices`` devices."""
  if num_partitions < 1 or devices % num_partitions:
    raise ValueError(f"num_partitions={num_partitions} does not divide the {devices} devices; "
                     f"choose a divisor of {devices}.")
  if rules is None:
    from clipa_t5x import partitioning  # pylint: disable=import-outside-toplevel
    rules = partitioning.standard_logical_axis_rules()
  return MeshShape(data=devices // num_partitions, model=num_partitions,
                   rules=tuple(tuple(r) for r in rules))


@dataclasses.dataclass(frozen=True)
class ParamLayout:
  """How the parameters lie on the mesh.

  Attributes:
    count: number of parameters (scalars).
    per_device: parameter scalars one device holds.
    bad_shardings: ``(name, shape, mesh_spec)`` of parameters whose sharded
      dimension does not divide by its mesh axes (jax refuses such a layout).
  """
  count: int
  per_device: int
  bad_shardings: Tuple[Tuple[str, Tuple[int, ...], Tuple[Any, ...]], ...]


@functools.lru_cache(maxsize=32)
def _logical_params(model_config, image_size: int, text_length: int):
  """``[(name, shape, logical_axes)]`` of the model's parameters, from ``eval_shape``."""
  import flax.linen as nn  # pylint: disable=import-outside-toplevel
  import jax  # pylint: disable=import-outside-toplevel
  from clipa_t5x import model_info  # pylint: disable=import-outside-toplevel
  from clipa_t5x.models import clip  # pylint: disable=import-outside-toplevel
  model = clip.ClipaModel(model_config)
  boxed = jax.eval_shape(
      lambda rng: model.get_initial_variables(rng, image_size, text_length)["params"],
      jax.random.key(0))
  specs = nn.get_partition_spec(boxed)
  shapes = nn.meta.unbox(boxed)
  flat_shapes = jax.tree_util.tree_flatten_with_path(shapes)[0]
  flat_specs = jax.tree.leaves(specs, is_leaf=lambda x: isinstance(x, jax.sharding.PartitionSpec))
  return tuple((model_info.path_name(path), tuple(leaf.shape),
                tuple(spec) if spec else (None,) * len(leaf.shape))
               for (path, leaf), spec in zip(flat_shapes, flat_specs))


def param_layout(model_config, mesh: MeshShape, image_size: int = 224,
                 text_length: int = 32) -> ParamLayout:
  """Parameter count, per-device share and invalid shardings under ``mesh``'s rules."""
  from flax.linen import partitioning as nn_partitioning  # pylint: disable=import-outside-toplevel
  total = per_device = 0
  bad = []
  for name, shape, logical in _logical_params(model_config, image_size, text_length):
    size = math.prod(shape)
    total += size
    mesh_axes = tuple(nn_partitioning.logical_to_mesh_axes(logical, mesh.rules)) if shape else ()
    shard = 1
    for dim, axis in zip(shape, mesh_axes):
      n = mesh.axis_size(axis)
      if dim % n:
        bad.append((name, shape, mesh_axes))
      shard *= n
    per_device += -(-size // shard)
  return ParamLayout(count=total, per_device=per_device, bad_shardings=tuple(bad))


# The parts of a MemoryEstimate that add up to its total.
_PARTS = ("params", "optimizer", "gradients", "update", "activations", "loss", "batch")


@dataclasses.dataclass(frozen=True)
class MemoryEstimate:
  """Bytes one device needs for one train step of a stage (see the module docstring)."""
  params: int
  optimizer: int
  gradients: int
  update: int
  activations: int
  loss: int
  batch: int
  examples_per_device: int
  remat_policy: str
  param_count: int
  bad_shardings: Tuple[Tuple[str, Tuple[int, ...], Tuple[Any, ...]], ...] = ()

  @property
  def state(self) -> int:
    """Parameters + optimizer state: what stays on the device between steps."""
    return self.params + self.optimizer

  @property
  def total(self) -> int:
    return sum(getattr(self, part) for part in _PARTS)

  def to_dict(self) -> Dict[str, Any]:
    d = dataclasses.asdict(self)
    d.pop("bad_shardings")
    d["total"] = self.total
    return d


def _activation_splits(mesh: MeshShape) -> Tuple[int, int, int]:
  """Ways the residual stream, the MLP hidden and the attention heads are split beyond the batch.

  From the rules applied to the activations' logical names (``models/layers.py``):
  ``mlp`` and ``heads`` go to ``model`` under t5x's rules; ``embed`` too with 2-D
  activation partitioning.
  """
  from flax.linen import partitioning as nn_partitioning  # pylint: disable=import-outside-toplevel
  out = []
  for names in (("batch", "length", "embed"), ("batch", "length", "mlp"),
                ("batch", "length", "heads", "kv")):
    axes = tuple(nn_partitioning.logical_to_mesh_axes(names, mesh.rules))
    out.append(math.prod(mesh.axis_size(a) for a in axes[1:]))
  return tuple(out)


def _block_activation_elements(tokens: int, width: int, mlp: int, heads: int,
                               remat_policy: str, attention_impl: str,
                               splits: Tuple[int, int, int] = (1, 1, 1)) -> Tuple[float, float]:
  """``(kept, transient)``: elements per example (on one device) one block keeps for
  backward, and the extra it holds while its own backward runs (recomputation included)."""
  resid, hidden, head = splits
  # A pre-LN block's intermediates per token: input, LN1 out, residual, LN2 out (4 x width,
  # split like the residual stream), q/k/v and the attention output (4 x width, split by
  # heads), the MLP's pre- and post-GELU hidden (2 x mlp).
  every = tokens * (4 * width / resid + 4 * width / head + 2 * mlp / hidden)
  # Plain einsum attention keeps the softmax probabilities; the chunked, cuDNN and
  # dot_product_attention paths recompute them.
  probs = heads * tokens * tokens / head if attention_impl == "xla" else 0
  if remat_policy == "none":
    return every + probs, every + probs
  if remat_policy == "dots_saveable":
    # q/k/v, attention out, out-proj out, fc_in out, fc_out out, and the block input;
    # the softmax is recomputed (measured: XLA keeps no [heads, L, L] array per block
    # under this policy).
    dots = tokens * (3 * width / resid + 4 * width / head + mlp / hidden)
    return dots, every + probs
  # 'full': only the block input survives the forward pass.
  return tokens * width / resid, every + probs


def _tower_activation_bytes(tower, tokens: int, remat_policy: str, attention_impl: str,
                            dtype_bytes: int, examples: int,
                            splits: Tuple[int, int, int] = (1, 1, 1)) -> int:
  kept, transient = _block_activation_elements(tokens, tower.width, tower.mlp_dim, tower.heads,
                                               remat_policy, attention_impl, splits)
  per_example = tower.depth * kept + transient
  # Embeddings, final LayerNorm and pooling: a few [tokens, width] arrays in float32.
  per_example_bytes = per_example * dtype_bytes + 4 * tokens * tower.width * 4 / splits[0]
  return int(examples * per_example_bytes)


def estimate(model_config, *, image_size: int, text_length: int, batch_size: int,
             mesh: MeshShape, mask_ratio: float = 0.0, num_microbatches: int = 1,
             mu_dtype: Optional[str] = None, attention_impl: Optional[str] = None,
             platform: Optional[str] = None) -> MemoryEstimate:
  """Per-device memory of one train step of a stage.

  Args:
    model_config: a ``ClipaConfig`` (its ``dtype``, ``remat_policy`` and
      ``attention_impl`` are used).
    image_size: training resolution in px.
    text_length: caption tokens.
    batch_size: global batch.
    mesh: the mesh shape and rules (``mesh_shape``).
    mask_ratio: fraction of image patches dropped.
    num_microbatches: the stage's ``num_microbatches``.
    mu_dtype: ``OptimizerConfig.mu_dtype`` (None: float32).
    attention_impl: overrides the config's.
    platform: ``'cpu'``, ``'gpu'`` or ``'tpu'``, where ``'auto'`` attention is
      resolved as the model does (chunked on CPU, ``dot_product_attention`` on
      GPU, plain einsums elsewhere); None: this machine's backend.

  Returns:
    A ``MemoryEstimate``.
  """
  from clipa_t5x import flops  # pylint: disable=import-outside-toplevel
  if num_microbatches < 1:
    raise ValueError(f"num_microbatches must be >= 1, got {num_microbatches}.")
  layout = param_layout(model_config, mesh, image_size, text_length)
  params = 4 * layout.per_device
  mu_bytes = _DTYPE_BYTES.get(mu_dtype or "float32", 4)
  optimizer = (mu_bytes + 4) * layout.per_device
  # Gradients: one set; micro-batching adds the running sum beside one piece's gradients.
  gradients = 4 * layout.per_device * (2 if num_microbatches > 1 else 1)

  examples = max(1, -(-batch_size // mesh.data))
  micro = max(1, -(-examples // num_microbatches))
  dtype_bytes = _DTYPE_BYTES[model_config.dtype]
  from clipa_t5x.models import layers  # pylint: disable=import-outside-toplevel
  impl = layers.resolve_attention_impl(attention_impl or model_config.attention_impl, platform)
  image_tokens = flops.image_tokens(image_size, model_config.image.patch_size, mask_ratio) + 1
  splits = _activation_splits(mesh)
  activations = (
      _tower_activation_bytes(model_config.image, image_tokens, model_config.remat_policy, impl,
                              dtype_bytes, micro, splits)
      + _tower_activation_bytes(model_config.text, text_length, model_config.remat_policy, impl,
                                dtype_bytes, micro, splits))
  # Contrastive loss: [B/n_data, B] float32 logits, two log-softmaxes, their gradients
  # (5 such arrays live at the peak, measured); the whole batch's features on every device.
  loss = 5 * examples * batch_size * 4 + 2 * 4 * batch_size * model_config.embed_dim * 2
  # Input: uint8 image + float32 normalised image + patches in the compute dtype, tokens.
  pixels = image_size * image_size * 3
  batch = examples * (pixels + 4 * text_length) + micro * pixels * (4 + dtype_bytes)
  return MemoryEstimate(params=params, optimizer=optimizer, gradients=gradients,
                        update=params + optimizer,
                        activations=activations, loss=int(loss), batch=int(batch),
                        examples_per_device=examples, remat_policy=model_config.remat_policy,
                        param_count=layout.count, bad_shardings=layout.bad_shardings)


def parse_bytes(text: Any) -> int:
  """``'80GB'``, ``'24GiB'``, ``'512M'`` or a number of bytes -> bytes."""
  if isinstance(text, (int, float)):
    return int(text)
  match = re.fullmatch(r"\s*([\d.]+)\s*([A-Za-z]*)\s*", str(text))
  if not match or match.group(2).upper() not in _UNITS:
    raise ValueError(f"cannot read a memory size from {text!r}; write e.g. 80GB, 24GiB or 512MB.")
  return int(float(match.group(1)) * _UNITS[match.group(2).upper()])


def format_bytes(n: float) -> str:
  """Bytes in TiB/GiB/MiB/KiB, three significant figures (more above 1000)."""
  for unit, scale in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
    if abs(n) >= scale:
      value = n / scale
      return f"{value:.0f} {unit}" if value >= 1000 else f"{value:.3g} {unit}"
  return f"{int(n)} B"


def host_memory_available() -> Optional[int]:
  """``MemAvailable`` from ``/proc/meminfo`` (Linux), in bytes; None elsewhere."""
  try:
    with open("/proc/meminfo") as f:
      for line in f:
        if line.startswith("MemAvailable:"):
          return int(line.split()[1]) * 1024
  except OSError:
    pass
  return None


def device_memory(device=None) -> Tuple[Optional[int], str]:
  """``(bytes, where)``: what one device can hold, and where the figure comes from.

  Accelerators report ``memory_stats()['bytes_limit']``; on CPU the devices
  share the host's RAM, so it is ``MemAvailable`` divided by the local CPU devices.
  """
  import jax  # pylint: disable=import-outside-toplevel
  device = device or jax.local_devices()[0]
  if device.platform != "cpu":
    try:
      stats = device.memory_stats() or {}
    except Exception:  # pylint: disable=broad-except  (not every backend implements it)
      stats = {}
    if stats.get("bytes_limit"):
      return int(stats["bytes_limit"]), f"{device.device_kind} memory"
    return None, f"{device.device_kind} (reports no memory limit)"
  available = host_memory_available()
  if available is None:
    return None, "host RAM (unknown)"
  local = max(1, jax.local_device_count())
  where = "host RAM available" + (f" / {local} CPU devices" if local > 1 else "")
  return available // local, where


def fits(estimate_: MemoryEstimate, capacity: Optional[int], headroom: float = HEADROOM) -> bool:
  """Whether the estimate fits ``headroom`` x ``capacity`` (unknown capacity: assumed to)."""
  return capacity is None or estimate_.total <= headroom * capacity


def levers(estimate_: MemoryEstimate, mesh: MeshShape, num_microbatches: int = 1) -> str:
  """What to change for a stage that does not fit, the lever for its largest part first."""
  moving = [f"Stage.num_microbatches = {2 * max(1, num_microbatches)}",
            "a smaller Stage.batch_size or more devices"]
  if estimate_.remat_policy != "full":
    moving.insert(0, "configs.get_config.remat_policy = 'full'")
  fixed = []
  if not any(rule[0] == "embed" and rule[1] == DATA_AXIS for rule in mesh.rules):
    fixed.append("FSDP / 2-D rules (gin/partitioning/fsdp.gin, or "
                 "standard_logical_axis_rules.parameter_partitioning_dims = 2)")
  if mesh.model == 1:
    fixed.append("model parallelism (NUM_PARTITIONS = 2 with partitioning/standard.gin)")
  if estimate_.optimizer >= 2 * estimate_.params:  # mu still float32
    fixed.append("OptimizerConfig.mu_dtype = 'bfloat16'")
  state = estimate_.state + estimate_.gradients + estimate_.update
  if state > estimate_.activations + estimate_.loss + estimate_.batch:
    return "; ".join(fixed + moving)
  return "; ".join(moving + fixed)


def breakdown(estimate_: MemoryEstimate) -> str:
  """``params 1.2 GiB + optimizer ... = total`` on one line."""
  return (" + ".join(f"{part} {format_bytes(getattr(estimate_, part))}" for part in _PARTS)
          + f" = {format_bytes(estimate_.total)}")


def check_fits(stage_name: str, estimate_: MemoryEstimate, capacity: Optional[int], where: str,
               mesh: MeshShape, num_microbatches: int = 1) -> None:
  """Raises one line when the stage cannot fit the device.

  Raises:
    ValueError: naming the estimate, the capacity and the levers.
  """
  if fits(estimate_, capacity):
    return
  raise ValueError(
      f"stage {stage_name!r} needs about {format_bytes(estimate_.total)} per device "
      f"({estimate_.examples_per_device} examples/device, remat {estimate_.remat_policy!r}; "
      f"{breakdown(estimate_)}) but {where} is {format_bytes(capacity)} "
      f"(planning to {HEADROOM:.0%} of it); to fit: {levers(estimate_, mesh, num_microbatches)}.")


def check_shardings(estimate_: MemoryEstimate, mesh: MeshShape) -> None:
  """Raises one line when a parameter's sharded dimension does not divide by its mesh axes."""
  if not estimate_.bad_shardings:
    return
  name, shape, axes = estimate_.bad_shardings[0]
  more = len(estimate_.bad_shardings) - 1
  sizes = {DATA_AXIS: mesh.data, MODEL_AXIS: mesh.model}
  raise ValueError(
      f"parameter {name} {shape} cannot be sharded as {axes} on the mesh {sizes}"
      + (f" (and {more} more)" if more else "")
      + "; choose a data / model size that divides its dimensions, or rules that keep it "
      "replicated along that axis.")


