"""Inference with a trained CLIPA model: image/text embeddings and zero-shot labels.

Typical use::

  from clipa_t5x import inference
  model = inference.load('/runs/h14')            # MODEL_DIR: its last stage
  feats = model.encode_images(['cat.jpg', 'dog.png'])          # [2, D], unit norm
  texts = model.encode_texts(['a cat', 'a dog'])               # [2, D]
  result = model.classify(['cat.jpg'], ['cat', 'dog', 'car'])
  result.top_k_names[0], result.probabilities[0]

``load`` takes any model reference ``model_refs`` resolves: a MODEL_DIR (the
last stage with a checkpoint, in run order), a stage directory, one
``checkpoint_<step>`` directory, an open_clip folder or weights file, or an
official CLIPA JAX ``.npz``. The model is the one the source records; a
source without one needs ``config=`` (a ``ClipaConfig`` or a variant name
such as ``'H/14'``).

Images are resized exactly as in evaluation (square, antialiased, no crop;
``data.image_files.load_image``) to the model's resolution: by default the
one the checkpoint was trained at, or any multiple of the patch size (the
image position embedding is a fixed sin-cos grid, recomputed for each size).
A text length other than the checkpoint's resizes the learned text position
embedding bilinearly, as fine-tuning does.

Encoders are jitted, data-parallel over all local devices with the
parameters replicated (``PjitPartitioner`` with data-parallel rules and
evaluation's ``Encoders``), and always called with ``batch_size`` rows (the
last batch padded), so each resolution compiles once. One process only: a
multi-host job should embed on each host with its own script instead.
"""

import collections
import concurrent.futures
import dataclasses
import logging
import os
from typing import Any, Callable, Deque, Iterable, List, Optional, Sequence, Tuple, Union

import flax
import jax
import numpy as np

from clipa_t5x import checkpoints
from clipa_t5x import model_refs
from clipa_t5x import partitioning
from clipa_t5x.data import image_files
from clipa_t5x.data import text_reduction as text_reduction_lib
from clipa_t5x.evaluation import batching
from clipa_t5x.evaluation import evaluators as evaluators_lib
from clipa_t5x.evaluation import zeroshot
from clipa_t5x.models import clip as clip_lib
from clipa_t5x.models import configs as configs_lib

_LOG = logging.getLogger(__name__)

# progress: True (a tqdm bar on stderr), a callable (done, total), or None/False.
Progress = Union[bool, Callable[[int, Optional[int]], None], None]


# --------------------------------------------------------------------- results
@dataclasses.dataclass(frozen=True)
class Classification:
  """Zero-shot predictions for N images over C classes.

  Attributes:
    class_names: the C class names, in the order of the probability columns.
    probabilities: float32 [N, C]: softmax over classes of
      ``exp(log_temperature) * cosine(image, class embedding)``, as CLIP.
    top_k_indices: int64 [N, k], best first (ties: lower class index first).
  """
  class_names: List[str]
  probabilities: np.ndarray
  top_k_indices: np.ndarray

  @property
  def top_k_probabilities(self) -> np.ndarray:
    """float32 [N, k], matching ``top_k_indices``."""
    return np.take_along_axis(self.probabilities, self.top_k_indices, axis=1)

  @property
  def top_k_names(self) -> List[List[str]]:
    """The class names of ``top_k_indices``, per image."""
    return [[self.class_names[i] for i in row] for row in self.top_k_indices]

  @property
  def labels(self) -> List[str]:
    """The top-1 class name of each image."""
    return [self.class_names[row[0]] for row in self.top_k_indices]


@dataclasses.dataclass
class ImageEmbeddings:
  """Result of ``ClipaPredictor.embed_images``.

  Attributes:
    features: float32 [N, D], L2-normalised, one row per readable image.
    keys: the N keys, in input order.
    skipped: ``(key, reason)`` of every image that could not be read.
  """
  features: np.ndarray
  keys: List[str]
  skipped: List[Tuple[str, str]]


# ------------------------------------------------------------------- helpers
class _ProgressReporter:
  """Counts processed items into a tqdm bar or a callback."""

  def __init__(self, progress: Progress, total: Optional[int], unit: str):
    self._callback = progress if callable(progress) else None
    self._bar, self._done, self._total = None, 0, total
    if progress and not callable(progress):
      from tqdm import tqdm  # pylint: disable=import-outside-toplevel
      self._bar = tqdm(total=total, unit=unit, dynamic_ncols=True, leave=True)

  def update(self, n: int) -> None:
    self._done += n
    if self._bar is not None:
      self._bar.update(n)
    if self._callback is not None:
      self._callback(self._done, self._total)

  def close(self) -> None:
    if self._bar is not None:
      self._bar.close()


def _positive_int(value: Any, name: str) -> int:
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
    raise ValueError(f"{name} must be a positive int, got {value!r}.")
  return int(value)


def _as_config(config: Union[configs_lib.ClipaConfig, str]) -> configs_lib.ClipaConfig:
  if isinstance(config, configs_lib.ClipaConfig):
    return config
  if isinstance(config, str):
    return configs_lib.get_config(config)
  raise ValueError(f"config must be a ClipaConfig or a variant name such as 'H/14', got "
                   f"{type(config).__name__}.")


# ----------------------------------------------------------------- predictor
class ClipaPredictor:
  """A CLIPA model ready for inference: jitted, batched encoders and zero-shot classification.

  Build one with ``load``; the constructor takes parameters already in memory.

  Attributes:
    config: the model (inference never masks patches).
    image_size: the default input resolution.
    text_length: the token length of every text.
    batch_size: rows per encoder call (a multiple of the local device count).
    text_reduction: how texts are cut to ``text_length`` by default.
    source: where the parameters came from (a checkpoint path), or None.
  """

  def __init__(self,
               config: Union[configs_lib.ClipaConfig, str],
               params: Any,
               *,
               image_size: int,
               text_length: Optional[int] = None,
               batch_size: int = 32,
               text_reduction: str = "truncate",
               num_workers: Optional[int] = None,
               devices: Optional[Sequence[jax.Device]] = None,
               source: Optional[str] = None):
    """Places the parameters on the devices and builds the encoders.

    Args:
      config: the model, or a variant name.
      params: unboxed parameters (numpy or jax arrays) of ``config``.
      image_size: default image side; a multiple of the patch size.
      text_length: token length; None = the length of the parameters' text
        position embedding (which is resized when another length is given).
      batch_size: rows per encoder call; rounded up to a multiple of the
        number of devices.
      text_reduction: default reduction of texts to ``text_length``
        ('truncate' or 'syntax'; see ``data.text_reduction``).
      num_workers: threads decoding images (default: up to 8, by CPU count).
      devices: the devices to use (default: all local devices).
      source: a description of where ``params`` came from.
    """
    image_files.keep_tensorflow_on_host()  # before TF's first op: GPUs stay JAX's
    if jax.process_count() > 1:
      raise ValueError("clipa_t5x.inference runs in a single process; run one inference "
                       "process per host (each embedding its own inputs).")
    self.config = _as_config(config)
    self.text_reduction = text_reduction_lib.check_method(text_reduction)
    self.num_workers = (_positive_int(num_workers, "num_workers") if num_workers is not None
                        else max(1, min(8, os.cpu_count() or 1)))
    self.source = source
    model_refs.check_params(params, self.config)
    saved_length = int(np.shape(params["txt"]["pos_embedding"])[1])
    self.text_length = (saved_length if text_length is None
                        else _positive_int(text_length, "text_length"))
    self.image_size = self._check_image_size(image_size)

    devices = list(devices) if devices is not None else jax.local_devices()
    self._partitioner = partitioning.PjitPartitioner(
        num_partitions=1, logical_axis_rules=partitioning.data_parallel_logical_axis_rules(),
        devices=devices)
    size = self._partitioner.data_parallel_size
    batch_size = _positive_int(batch_size, "batch_size")
    self.batch_size = -(-batch_size // size) * size  # every device gets whole rows
    if self.batch_size != batch_size:
      _LOG.info("batch_size %d rounded up to %d, a multiple of the %d devices", batch_size,
                self.batch_size, size)

    params = flax.core.unfreeze(params)  # plain nested dicts (also copies the containers)
    if self.text_length != saved_length:  # as between CLIPA's 8- and 32-token stages
      params["txt"]["pos_embedding"] = checkpoints.resize_text_pos_embedding(
          params["txt"]["pos_embedding"], self.text_length)
    shardings = jax.tree.map(lambda _: self._partitioner.replicated, params)
    params = jax.device_put(params, shardings)
    self._params = params
    self._log_temperature = float(np.asarray(params["log_temperature"]))
    self.model = clip_lib.ClipaModel(self.config)
    self._encoders = evaluators_lib.Encoders(self.model, self._partitioner, shardings)
    self._encoders.bind(params)

  # ------------------------------------------------------------ properties
  @property
  def params(self) -> Any:
    """The parameters on the devices (text position embedding at ``text_length``)."""
    return self._params

  @property
  def embed_dim(self) -> int:
    """D, the size of every feature vector."""
    return self.config.embed_dim

  @property
  def logit_scale(self) -> float:
    """``exp(log_temperature)``: the multiplier of cosines in the classification logits."""
    return float(np.exp(self._log_temperature))

  @property
  def num_devices(self) -> int:
    return self._partitioner.data_parallel_size

  def describe(self) -> str:
    """One line: the model, where it came from, resolution, text length and devices."""
    c = self.config
    return (f"CLIPA model (image {c.image.width}w x {c.image.depth}, patch {c.image.patch_size}; "
            f"text {c.text.width}w x {c.text.depth}; embed {c.embed_dim}) from "
            f"{self.source or 'memory'}: image size {self.image_size}, text length "
            f"{self.text_length}, batch {self.batch_size} on {self.num_devices} "
            f"{jax.local_devices()[0].platform} device(s)")

  def _check_image_size(self, image_size: Any) -> int:
    image_size = _positive_int(image_size, "image_size")
    patch = self.config.image.patch_size
    if image_size % patch:
      lower = max(patch, image_size // patch * patch)
      raise ValueError(f"image_size {image_size} is not a multiple of the patch size {patch}; "
                       f"use {lower} or {lower + patch}.")
    return image_size

  # ---------------------------------------------------------------- images
  def embed_images(self, images: Iterable[Tuple[str, Any]], *, total: Optional[int] = None,
                   image_size: Optional[int] = None, progress: Progress = None
                   ) -> ImageEmbeddings:
    """Embeds keyed images, skipping (and reporting) those that cannot be read.

    Args:
      images: ``(key, image)`` pairs, e.g. a ``data.image_files`` source;
        an image is anything ``image_files.load_image`` takes.
      total: the number of pairs, for the progress bar (default ``len(images)``
        when it has one).
      image_size, progress: as ``encode_images``.

    Returns:
      ``ImageEmbeddings`` (features and keys of the readable images, in input
      order, and ``(key, reason)`` of the skipped ones).
    """
    if total is None and hasattr(images, "__len__"):
      total = len(images)  # type: ignore[arg-type]
    return self._embed(images, total, image_size, progress, strict=False)

  def encode_images(self, images: Any, *, image_size: Optional[int] = None,
                    progress: Progress = None) -> np.ndarray:
    """L2-normalised image features.

    Args:
      images: a list of images (file paths, encoded bytes, PIL images, uint8
        ``[H, W, 3]`` arrays of any size) or a uint8 ``[N, H, W, 3]`` batch.
        Each is square-resized (antialiased, no crop) to ``image_size``.
      image_size: resolution (default ``self.image_size``); any multiple of
        the patch size.
      progress: True for a tqdm bar on stderr, or a callable ``(done, total)``.

    Returns:
      float32 ``[N, D]``.

    Raises:
      ValueError: an image cannot be read (naming it and why).
    """
    if isinstance(images, np.ndarray):
      if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"an image batch must be uint8 [N, H, W, 3], got shape {images.shape}; "
                         "pass a list for images of different sizes.")
      if images.dtype != np.uint8:
        raise ValueError(f"image batches must be uint8 in 0..255, got {images.dtype}.")
      size = self._check_image_size(image_size or self.image_size)
      if images.shape[1:3] == (size, size):  # already at size: no per-image work
        return self._encode_stacked(images, progress)
      items = ((str(i), im) for i, im in enumerate(images))
      return self._embed(items, len(images), size, progress, strict=True).features
    if isinstance(images, (str, bytes, os.PathLike)) or image_files.is_pil_image(images):
      raise ValueError("encode_images takes a list of images (or a [N, H, W, 3] batch); wrap a "
                       "single image in a list.")
    images = list(images)
    items = ((str(i), im) for i, im in enumerate(images))
    return self._embed(items, len(images), image_size, progress, strict=True).features

  def _encode_stacked(self, batch: np.ndarray, progress: Progress) -> np.ndarray:
    if batch.shape[0] == 0:
      return np.zeros((0, self.embed_dim), np.float32)
    reporter = _ProgressReporter(progress, batch.shape[0], "img")
    done = [0]

    def fn(rows: np.ndarray) -> np.ndarray:
      out = self._encoders.encode_images(rows)
      step = min(self.batch_size, batch.shape[0] - done[0])
      done[0] += step
      reporter.update(step)
      return out

    try:
      return batching.encode_in_batches(fn, batch, self.batch_size, "encode_images")
    finally:
      reporter.close()

  def _embed(self, items: Iterable[Tuple[str, Any]], total: Optional[int],
             image_size: Optional[int], progress: Progress, strict: bool) -> ImageEmbeddings:
    size = self._check_image_size(image_size or self.image_size)
    feats: List[np.ndarray] = []
    keys: List[str] = []
    skipped: List[Tuple[str, str]] = []
    reporter = _ProgressReporter(progress, total, "img")

    def consume(batch: List[Tuple[str, concurrent.futures.Future]]) -> None:
      arrays = []
      for key, future in batch:
        try:
          arrays.append(future.result())
          keys.append(key)
        except image_files.BadImageError as e:
          if strict:
            raise ValueError(f"image {key}: {e}") from None
          skipped.append((key, str(e)))
      if arrays:
        feats.append(batching.encode_in_batches(self._encoders.encode_images, np.stack(arrays),
                                                self.batch_size, "encode_images"))
      reporter.update(len(batch))

    try:
      with concurrent.futures.ThreadPoolExecutor(self.num_workers) as pool:
        # One batch decodes on the threads while the previous one is encoded.
        ahead: Deque[List[Tuple[str, concurrent.futures.Future]]] = collections.deque()
        for chunk in batching.chunks(items, self.batch_size):
          ahead.append([(str(key), pool.submit(image_files.load_image, image, size))
                        for key, image in chunk])
          if len(ahead) > 1:
            consume(ahead.popleft())
        while ahead:
          consume(ahead.popleft())
    finally:
      reporter.close()
    features = (np.concatenate(feats) if feats
                else np.zeros((0, self.embed_dim), np.float32))
    return ImageEmbeddings(features.astype(np.float32), keys, skipped)

  # ----------------------------------------------------------------- texts
  def tokenize(self, texts: Sequence[str], reduction: Optional[str] = None) -> np.ndarray:
    """int32 ``[N, text_length]`` token ids of ``texts`` (``[CLS]``, word pieces, zeros)."""
    if isinstance(texts, (str, bytes)):
      raise ValueError("texts must be a list of strings; wrap a single text in a list.")
    texts = list(texts)
    bad = [t for t in texts if not isinstance(t, str)]
    if bad:
      raise ValueError(f"texts must be strings, got {type(bad[0]).__name__} ({bad[0]!r}).")
    if not texts:
      return np.zeros((0, self.text_length), np.int32)
    return text_reduction_lib.tokenize_texts(texts, self.text_length,
                                           reduction or self.text_reduction)

  def encode_texts(self, texts: Sequence[str], *, reduction: Optional[str] = None,
                   progress: Progress = None) -> np.ndarray:
    """L2-normalised text features (tokenizer included).

    Args:
      texts: N strings.
      reduction: how texts longer than ``text_length`` tokens are cut:
        'truncate' (default: ``self.text_reduction``) or 'syntax' (CLIPA-v2's
        noun-first selection).
      progress: True for a tqdm bar on stderr, or a callable ``(done, total)``.

    Returns:
      float32 ``[N, D]``.
    """
    if isinstance(texts, (str, bytes)):
      raise ValueError("texts must be a list of strings; wrap a single text in a list.")
    texts = list(texts)
    if not texts:
      return np.zeros((0, self.embed_dim), np.float32)
    reporter = _ProgressReporter(progress, len(texts), "text")
    out = []
    try:
      # Tokenized in large chunks (TF per call is slow), encoded batch by batch.
      for chunk in batching.chunks(texts, max(self.batch_size, 4096)):
        tokens = self.tokenize(chunk, reduction)
        out.append(self._encode_tokens(tokens))
        reporter.update(len(chunk))
    finally:
      reporter.close()
    return np.concatenate(out).astype(np.float32)

  def _encode_tokens(self, tokens: np.ndarray) -> np.ndarray:
    return batching.encode_in_batches(self._encoders.encode_texts, tokens, self.batch_size,
                                      "encode_texts")

  # ------------------------------------------------------------- zero-shot
  def class_embeddings(self, class_names: Union[str, Sequence[str]],
                       templates: Union[None, str, Sequence[str]] = None) -> np.ndarray:
    """Prompt-ensembled class embeddings, as zero-shot evaluation computes them.

    Args:
      class_names: names, or a packaged set such as ``'imagenet1k'``.
      templates: prompts with ``{c}`` for the class name, a packaged set
        (``'imagenet1k'``), one template string, or None for
        ``zeroshot.DEFAULT_TEMPLATES``.

    Returns:
      float32 ``[C, D]`` unit-norm rows: the mean of the normalised prompt
      embeddings of each class, renormalised.
    """
    names = zeroshot.parse_class_names(class_names)
    templates = zeroshot.parse_templates(templates)
    return zeroshot.embed_classes(
        self._encoders.encode_texts, names, templates, text_length=self.text_length,
        text_reduction=self.text_reduction, batch_size=self.batch_size)

  def classify_features(self, image_features: np.ndarray,
                        class_names: Union[str, Sequence[str]],
                        templates: Union[None, str, Sequence[str]] = None, top_k: int = 5,
                        *, class_embeddings: Optional[np.ndarray] = None) -> Classification:
    """Zero-shot classification of precomputed image features.

    Args:
      image_features: [N, D] from ``encode_images``.
      class_names, templates: as ``class_embeddings``.
      top_k: how many best classes to list (at most C).
      class_embeddings: [C, D] from ``class_embeddings`` (computed if None).

    Returns:
      A ``Classification``.
    """
    names = zeroshot.parse_class_names(class_names)
    top_k = _positive_int(top_k, "top_k")
    weights = (self.class_embeddings(names, templates) if class_embeddings is None
               else np.asarray(class_embeddings, np.float32))
    if weights.shape != (len(names), self.embed_dim):
      raise ValueError(f"class_embeddings must be [{len(names)}, {self.embed_dim}] (one row "
                       f"per class name), got shape {weights.shape}.")
    feats = np.asarray(image_features, np.float32)
    if feats.ndim != 2 or feats.shape[1] != self.embed_dim:
      raise ValueError(f"image_features must be [N, {self.embed_dim}], got {feats.shape}.")
    logits = self.logit_scale * (feats @ weights.T)
    logits -= logits.max(axis=1, keepdims=True) if logits.size else 0.0
    probs = np.exp(logits)
    probs /= probs.sum(axis=1, keepdims=True)
    k = min(top_k, len(names))
    order = np.argsort(-probs, axis=1, kind="stable")[:, :k].astype(np.int64)
    return Classification(names, probs.astype(np.float32), order)

  def classify(self, images: Any, class_names: Union[str, Sequence[str]],
               templates: Union[None, str, Sequence[str]] = None, top_k: int = 5, *,
               image_size: Optional[int] = None, progress: Progress = None) -> Classification:
    """Zero-shot classification of images.

    Args:
      images, image_size, progress: as ``encode_images``.
      class_names, templates, top_k: as ``classify_features``.

    Returns:
      A ``Classification``: probabilities [N, C] and the top-k classes.
    """
    names = zeroshot.parse_class_names(class_names)
    _positive_int(top_k, "top_k")
    weights = self.class_embeddings(names, templates)  # fails fast, before any image
    feats = self.encode_images(images, image_size=image_size, progress=progress)
    return self.classify_features(feats, names, top_k=top_k, class_embeddings=weights)


# ---------------------------------------------------------------------- load
def load(path: str, *,
         config: Union[None, configs_lib.ClipaConfig, str] = None,
         image_size: Optional[int] = None,
         text_length: Optional[int] = None,
         batch_size: int = 32,
         dtype: Optional[str] = None,
         text_reduction: str = "truncate",
         num_workers: Optional[int] = None,
         devices: Optional[Sequence[jax.Device]] = None) -> ClipaPredictor:
  """Loads a trained model for inference.

  Args:
    path: any reference of ``model_refs``: a MODEL_DIR, a stage folder, a
      ``checkpoint_<step>`` folder, an open_clip folder or weights file (a
      bare weights file needs ``config``), or an official CLIPA JAX ``.npz``.
    config: the model (a ``ClipaConfig`` or a variant name like 'H/14').
      Needed only when the source records none; one that disagrees with the
      recorded model raises. For open_clip weights it may also be an
      open_clip model name (e.g. 'ViT-H-14-CLIPA') or config JSON path.
    image_size: input resolution; default: the one the checkpoint was trained
      at (``model_config.json``), or 224 when unrecorded. Any multiple of the
      patch size works.
    dtype: compute dtype ('float32', 'bfloat16', 'float16'); default: the
      config's. Parameters stay float32.
    text_length, batch_size, text_reduction, num_workers, devices: as
      ``ClipaPredictor``'s (default text length: the checkpoint's).

  Returns:
    A ``ClipaPredictor``; ``predictor.source`` names the checkpoint read.
  """
  text_reduction_lib.check_method(text_reduction)  # fail before reading anything
  image_files.keep_tensorflow_on_host()  # before TF's first op: GPUs stay JAX's
  params, ref = model_refs.load(path, config)
  model_config = ref.config
  if dtype is not None:
    model_config = dataclasses.replace(model_config, dtype=dtype)
  return ClipaPredictor(model_config, params, image_size=image_size or ref.image_size or 224,
                        text_length=text_length, batch_size=batch_size,
                        text_reduction=text_reduction, num_workers=num_workers, devices=devices,
                        source=ref.path)
