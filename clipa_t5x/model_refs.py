"""Any model reference -> its parameters and the model config it records, in one place.

A reference is what a user points at:

* a run directory (``MODEL_DIR``): its last stage with a checkpoint, in run order;
* a stage directory: its latest checkpoint; a checkpoint directory ``.../checkpoint_<step>``
  (the model comes from the stage's ``model_config.json``);
* an open_clip folder (``open_clip_config.json`` + weights), or one open_clip weights file
  (``.safetensors``, ``.bin``, ``.pt``, ``.pth``, or an ``.npz`` of open_clip keys);
* an official CLIPA JAX checkpoint: a big_vision ``.npz`` (``img/``, ``txt/``, ``t``), whose
  architecture is read off its array shapes (``interop.clipa_jax``).

``describe`` resolves the kind and the recorded model without reading any array (the cheap
check before a run); ``load`` reads the parameters onto the host; ``restore_params`` places
them into a model's sharded abstract parameters (a stage's ``init_from``, evaluation).

``model`` (optional everywhere) names the architecture: a ``ClipaConfig``, a variant name
such as ``'H/14'``, or for open_clip weights an open_clip model name (``'ViT-H-14-CLIPA'``) or
model-config JSON. A source that records its own model needs none; one that disagrees with
it is refused in one line. Local paths are made absolute; ``gs://...`` is read as given.
"""

import dataclasses
import json
import logging
import os
from typing import Any, Dict, Optional, Tuple, Union

import jax
import numpy as np

from clipa_t5x import model_dir as model_dir_lib
from clipa_t5x import model_info
from clipa_t5x import paths
from clipa_t5x.models import configs as configs_lib

_LOG = logging.getLogger(__name__)

CHECKPOINT, OPEN_CLIP, CLIPA_JAX = "checkpoint", "open_clip", "clipa_jax"
OPEN_CLIP_CONFIG = "open_clip_config.json"
WEIGHTS_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".npz")
_KINDS_HINT = ("a run, stage or checkpoint_<step> directory, an open_clip folder or weights file "
               "(.safetensors/.bin/.pt/.pth/.npz), or an official CLIPA JAX .npz")

Model = Union[None, str, configs_lib.ClipaConfig]


@dataclasses.dataclass(frozen=True)
class ModelRef:
  """A resolved reference.

  Attributes:
    kind: ``'checkpoint'``, ``'open_clip'`` or ``'clipa_jax'``.
    path: the checkpoint directory (``.../checkpoint_<step>``), or the open_clip folder or
      file, or the ``.npz``.
    config: the architecture.
    image_size: the resolution the weights were trained or exported at (None: unrecorded).
    text_length: the length of the text position embedding (None: known after ``load``).
    open_clip_model: what the open_clip importer is given as its model (kind 'open_clip').
  """
  kind: str
  path: str
  config: configs_lib.ClipaConfig
  image_size: Optional[int] = None
  text_length: Optional[int] = None
  open_clip_model: Any = None

  @property
  def step(self) -> Optional[int]:
    """The checkpoint's step (None for other kinds)."""
    return model_dir_lib.step_of(self.path) if self.kind == CHECKPOINT else None

  def summary(self) -> str:
    """One line: kind, path, model and sizes."""
    sizes = ", ".join(f"{k} {v}" for k, v in (("image size", self.image_size),
                                              ("text length", self.text_length)) if v)
    return (f"{self.kind} {self.path}: {config_name(self.config)}" +
            (f", {sizes}" if sizes else ""))


def config_name(config: configs_lib.ClipaConfig) -> str:
  """The variant name of ``config``'s architecture, or its sizes."""
  for name, variant in configs_lib.VARIANTS.items():
    if _architecture(variant) == _architecture(config):
      return name
  i, t = config.image, config.text
  return (f"image {i.width}w x {i.depth} /{i.patch_size}, text {t.width}w x {t.depth}, "
          f"embed {config.embed_dim}")


def _architecture(config: configs_lib.ClipaConfig) -> configs_lib.ClipaConfig:
  # Compute settings (dtype, remat, attention kernel) do not change the parameters.
  return dataclasses.replace(config, dtype="float32", remat_policy="none", attention_impl="auto")


# ------------------------------------------------------------------- locate
def _last_stage(run_dir: str) -> str:
  """The last stage directory (in run order) of a run that has a checkpoint."""
  stages = [n for n in sorted(paths.listdir(run_dir))
            if paths.isdir(os.path.join(run_dir, n))
            and model_dir_lib.checkpoint_dirs(os.path.join(run_dir, n))]
  if not stages:
    raise ValueError(f"{run_dir!r} has no checkpoint and is no model file; pass {_KINDS_HINT}.")
  order: Dict[str, int] = {}
  summary = os.path.join(run_dir, model_dir_lib.SUMMARY)
  if paths.exists(summary):
    try:
      order = {row["stage"]: i for i, row in enumerate(json.loads(paths.read_text(summary)))}
    except (OSError, ValueError, KeyError, TypeError):
      _LOG.warning("ignoring unreadable %s", summary)

  def started(name: str) -> float:
    # Each stage writes model_config.json when it starts: its age gives run order.
    config = os.path.join(run_dir, name, model_dir_lib.MODEL_CONFIG)
    return paths.getmtime(config) if paths.exists(config) else 0.0

  # Stages of the summary in its order, then any later stage (still running) by start time.
  stages.sort(key=lambda n: (0, order[n], 0.0) if n in order else (1, 0, started(n)))
  _LOG.info("run %s: using its last stage with a checkpoint, %s", run_dir, stages[-1])
  return os.path.join(run_dir, stages[-1])


def _latest_checkpoint(stage_dir: str) -> str:
  # Orbax renames a checkpoint into place when it is complete: the listing holds whole ones.
  steps = [model_dir_lib.step_of(n) for n in model_dir_lib.checkpoint_dirs(stage_dir)]
  return os.path.join(stage_dir, model_dir_lib.checkpoint_name(max(steps)))


def _npz_kind(path: str) -> str:
  import zipfile  # pylint: disable=import-outside-toplevel
  try:
    with paths.LocalCopy(path) as local, zipfile.ZipFile(local) as archive:
      names = [n[:-len(".npy")] for n in archive.namelist()]
  except (zipfile.BadZipFile, OSError) as e:
    raise ValueError(f"{path} is not a readable .npz file ({e}).") from None
  if any(n.startswith(("visual.", "module.visual.")) for n in names):
    return OPEN_CLIP
  if any(n.split("/")[-1] == "t" for n in names):
    return CLIPA_JAX
  raise ValueError(f"{path} holds neither open_clip keys (visual.*) nor a CLIPA JAX tree "
                   f"(img/..., txt/..., t), e.g. {sorted(names)[:3]}; pass {_KINDS_HINT}.")


def locate(ref: str) -> Tuple[str, str]:
  """``(kind, path)`` of a reference; reads listings and file names only.

  Raises:
    ValueError: one line naming the problem and what to pass instead.
  """
  if not isinstance(ref, str) or not ref.strip():
    raise ValueError(f"model reference {ref!r} is empty; pass {_KINDS_HINT}.")
  path = paths.absolute(ref).rstrip("/")
  if not paths.exists(path):
    raise ValueError(f"model reference {path!r} does not exist; pass {_KINDS_HINT}.")
  if not paths.isdir(path):
    if path.lower().endswith(".npz"):
      return _npz_kind(path), path
    if path.lower().endswith(WEIGHTS_SUFFIXES):
      return OPEN_CLIP, path
    raise ValueError(f"{path!r} is a file of unknown kind; pass {_KINDS_HINT}.")
  if model_dir_lib.step_of(path) is not None:
    return CHECKPOINT, path
  if paths.exists(os.path.join(path, OPEN_CLIP_CONFIG)):
    return OPEN_CLIP, path
  if model_dir_lib.checkpoint_dirs(path):
    return CHECKPOINT, _latest_checkpoint(path)
  if paths.exists(os.path.join(path, model_dir_lib.MODEL_CONFIG)):
    raise ValueError(f"stage folder {path!r} has no complete checkpoint yet; wait for the "
                     "first save or pass another stage.")
  return CHECKPOINT, _latest_checkpoint(_last_stage(path))


# ----------------------------------------------------------------- describe
def _reconcile(recorded, given, path: str):
  if recorded is None:
    return given
  if given is None:
    return recorded
  if _architecture(given) != _architecture(recorded):
    raise ValueError(
        f"the model given ({config_name(given)}) disagrees with the one {path} records "
        f"({config_name(recorded)}); drop the model setting (the source's own is used) or "
        "point at a checkpoint of that model.")
  return given  # its compute settings (dtype, remat) win


def describe(ref: str, model: Model = None) -> ModelRef:
  """Resolves a reference and its model without reading any parameter array.

  Args:
    ref: any reference (see the module docstring).
    model: the architecture, needed only where the source records none (a
      checkpoint without ``model_config.json``, a bare open_clip weights file).

  Returns:
    A ``ModelRef``.

  Raises:
    ValueError: one line, for a missing, empty or unreadable reference, a model
      that is needed but not given, or one that disagrees with the source.
  """
  kind, path = locate(ref)
  given = model if isinstance(model, configs_lib.ClipaConfig) else None
  if isinstance(model, str) and (kind != OPEN_CLIP or model in configs_lib.VARIANTS):
    given = configs_lib.get_config(model)
  elif model is not None and given is None and kind != OPEN_CLIP:
    raise ValueError(f"model must be a ClipaConfig or a variant name such as 'H/14', got "
                     f"{type(model).__name__}.")
  image_size = text_length = recorded = open_clip_model = None
  if kind == CHECKPOINT:
    from clipa_t5x.models import config_io  # pylint: disable=import-outside-toplevel
    stage = model_dir_lib.stage_dir_of(path)
    record = config_io.read_model_config(stage)
    if record is None and given is None:
      raise ValueError(f"{stage!r} has no {model_dir_lib.MODEL_CONFIG}; name the model it was "
                       "trained as (a variant such as 'H/14').")
    if record is not None:
      recorded, image_size, text_length = (record["model"], record["image_size"],
                                           record["text_length"])
  elif kind == OPEN_CLIP:
    from clipa_t5x.interop import open_clip  # pylint: disable=import-outside-toplevel
    open_clip_model = model if given is None else None  # an open_clip name or JSON
    if open_clip_model is None and not paths.isdir(path):
      if given is None:
        raise ValueError(f"{path} is an open_clip weights file without a model: name it (an "
                         f"open_clip model such as {sorted(open_clip.RELEASED_CONFIGS)[0]}, a "
                         "model-config JSON, or a variant such as 'H/14').")
      open_clip_model = given
    elif paths.is_remote(path):  # only the config file is read
      config_source = open_clip_model or json.loads(
          paths.read_text(os.path.join(path, OPEN_CLIP_CONFIG)))
      recorded, image_size, text_length = open_clip.clipa_config_from_open_clip(
          open_clip.read_model_config(config_source))
    else:
      _, recorded, image_size, text_length = open_clip.describe_open_clip(path, open_clip_model)
  else:
    from clipa_t5x.interop import clipa_jax  # pylint: disable=import-outside-toplevel
    with paths.LocalCopy(path) as local:
      try:
        recorded, text_length = clipa_jax.config_from_shapes(clipa_jax.read_shapes(local))
      except ValueError as e:
        raise ValueError(f"{path}: {e}") from None
  config = _reconcile(recorded, given, path)
  return ModelRef(kind, path, config, image_size, text_length, open_clip_model)


def model_config(ref: str, model: Model = None, dtype: Optional[str] = None,
                 remat_policy: Optional[str] = None) -> configs_lib.ClipaConfig:
  """The architecture ``ref`` records (gin: ``MODEL_CONFIG = @model_refs.model_config()``).

  Args:
    ref, model: as ``describe``.
    dtype, remat_policy: compute settings to use instead of the recorded ones.
  """
  config = describe(ref, model).config
  changes = {k: v for k, v in (("dtype", dtype), ("remat_policy", remat_policy)) if v}
  return dataclasses.replace(config, **changes) if changes else config


# --------------------------------------------------------------------- load
def _flat(tree: Any) -> Dict[str, Any]:
  return {model_info.path_name(path): leaf
          for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


def check_params(params: Any, config: configs_lib.ClipaConfig, source: str = "the parameters"
                 ) -> None:
  """Raises one line when ``params`` do not fit ``config`` (names and shapes)."""
  import functools  # pylint: disable=import-outside-toplevel
  import flax.linen as nn  # pylint: disable=import-outside-toplevel
  from clipa_t5x.models import clip as clip_lib  # pylint: disable=import-outside-toplevel
  have = _flat(params)
  pos = have.get("txt/pos_embedding")
  if pos is None or np.ndim(pos) != 3:
    raise ValueError(f"{source} have no txt/pos_embedding [1, L, W]; they are not CLIPA "
                     "parameters.")
  init = functools.partial(clip_lib.ClipaModel(config).get_initial_variables,
                           image_size=config.image.patch_size, text_length=np.shape(pos)[1])
  want = _flat(nn.meta.unbox(jax.eval_shape(init, jax.random.key(0))["params"]))
  missing, extra = sorted(set(want) - set(have)), sorted(set(have) - set(want))
  if missing or extra:
    parts = ([f"{len(missing)} model parameter(s) missing from them (e.g. {missing[0]})"]
             if missing else []) + ([f"{len(extra)} unexpected one(s) (e.g. {extra[0]})"]
                                    if extra else [])
    raise ValueError(f"{source} do not match the model config: {'; '.join(parts)}; use the "
                     "model they were trained as.")
  for name, leaf in want.items():
    if tuple(np.shape(have[name])) != tuple(leaf.shape):
      raise ValueError(f"parameter {name!r} has shape {tuple(np.shape(have[name]))} in "
                       f"{source} but {tuple(leaf.shape)} in the model config; use the model "
                       "they were trained as.")


def load(ref: str, model: Model = None) -> Tuple[Any, ModelRef]:
  """Reads a reference's parameters onto the host (the first local device for checkpoints).

  Returns:
    ``(params, ref)``: the unboxed parameter tree and the ``ModelRef``, its
    ``text_length`` (and, where the weights show it, ``image_size``) filled in.
  """
  desc = describe(ref, model)
  image_size = desc.image_size
  if desc.kind == CHECKPOINT:
    from clipa_t5x import checkpoints  # pylint: disable=import-outside-toplevel
    params, _, _ = checkpoints.load_params(desc.path)
  elif desc.kind == OPEN_CLIP:
    from clipa_t5x.interop import open_clip  # pylint: disable=import-outside-toplevel
    with paths.LocalCopy(desc.path) as local:  # the weight readers take local files
      params, _, size, _ = open_clip.load_open_clip(local, desc.open_clip_model)
    image_size = image_size or size
  else:
    from clipa_t5x.interop import clipa_jax  # pylint: disable=import-outside-toplevel
    with paths.LocalCopy(desc.path) as local:
      params, _, _ = clipa_jax.load(local)
  check_params(params, desc.config, desc.path)
  _LOG.info("loaded %s", desc.summary())
  length = int(np.shape(params["txt"]["pos_embedding"])[1])
  return params, dataclasses.replace(desc, image_size=image_size, text_length=length)


def restore_params(source: Any, abstract_params: Any, fresh_params: Any = None,
                   model: Model = None) -> Any:
  """Parameters shaped and sharded like ``abstract_params``, from any reference.

  Args:
    source: a reference, or a ``checkpoints.RestoreCheckpointConfig`` (its
      ``assignment_map`` and ``fallback_to_scratch`` apply to clipa_t5x
      checkpoints).
    abstract_params: ``ShapeDtypeStruct`` tree (with shardings) of the model.
    fresh_params: freshly initialised parameters (for ``assignment_map``
      entries mapped to None; default ``abstract_params``: none allowed).
    model: the model in use, checked against the source's (and naming the
      model of a bare open_clip weights file).

  Returns:
    The parameters; a text position embedding of another length is resized
    bilinearly (8 -> 32 tokens between CLIPA-v2's stages), any other mismatch
    raises with the parameter's name.
  """
  from clipa_t5x import checkpoints  # pylint: disable=import-outside-toplevel
  restore = (source if isinstance(source, checkpoints.RestoreCheckpointConfig)
             else checkpoints.RestoreCheckpointConfig(path=source))
  if restore.mode == "specific" and model_dir_lib.step_of(restore.path) is None:
    raise ValueError(f"mode='specific' needs a path ending in checkpoint_<step>, got "
                     f"{restore.path!r}.")
  kind, path = locate(restore.path)
  fresh_params = abstract_params if fresh_params is None else fresh_params
  if kind == CHECKPOINT:
    return checkpoints.restore_params(dataclasses.replace(restore, path=path, mode="specific"),
                                      abstract_params, fresh_params)
  if restore.assignment_map:
    raise ValueError(f"assignment_map applies to clipa_t5x checkpoints; {path} is {kind} "
                     "weights (convert it first: python -m clipa_t5x.convert).")
  params, _ = load(path, model)
  host = _flat(params)
  flat, treedef = jax.tree_util.tree_flatten_with_path(abstract_params)
  leaves = []
  for key_path, target in flat:
    name = model_info.path_name(key_path)
    value = np.asarray(host[name], target.dtype)
    if value.shape != tuple(target.shape) and name == "txt/pos_embedding":
      value = np.asarray(checkpoints.resize_text_pos_embedding(value, target.shape[1]))
    if value.shape != tuple(target.shape):
      raise ValueError(f"parameter {name!r} has shape {value.shape} in {path} but "
                       f"{tuple(target.shape)} in the model.")
    # Every host holds the whole array: each device takes its own slice.
    leaves.append(jax.make_array_from_callback(value.shape, target.sharding,
                                               lambda index, v=value: v[index]))
  return jax.tree_util.tree_unflatten(treedef, leaves)
