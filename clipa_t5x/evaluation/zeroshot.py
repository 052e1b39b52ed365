"""Zero-shot image classification with prompt-ensembled class embeddings.

The evaluator is model-agnostic: it only calls two host callables,
``encode_images(uint8 [B, H, W, 3]) -> [B, D]`` and
``encode_texts(int32 [B, L]) -> [B, D]``, and always with exactly
``batch_size`` rows (the last batch is padded by repeating its last row and the
padded outputs are dropped), so a jitted, partitioned function compiles once.
Everything else (prompt filling, ensembling, top-k) is numpy on the host.

Typical use in a trainer, every ``EVAL_PERIOD`` steps::

  clf = ZeroShotClassifier(
      'imagenet', examples_from_tf_dataset(make_val_ds),
      load_classnames('imagenet1k'), load_templates('imagenet1k'))
  metrics = clf.evaluate(lambda x: encode_images(params, x),
                         lambda t: encode_texts(params, t))
  # {'imagenet/top1': ..., 'imagenet/top5': ..., 'imagenet/num_examples': 50000}
"""

import functools
import importlib.resources
import json
import logging
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Union

import numpy as np

from clipa_t5x.evaluation import metrics as metrics_lib

_ASSETS = "assets"
_CLASSNAMES_FILE = "zeroshot_classnames_en.json"
_TEMPLATES_FILE = "zeroshot_templates_en.json"

EncodeFn = Callable[[np.ndarray], Any]
TokenizeFn = Callable[[Sequence[str], int, str], np.ndarray]


@functools.lru_cache(maxsize=None)
def _load_asset(filename: str) -> Dict[str, List[str]]:
  path = importlib.resources.files("clipa_t5x.evaluation").joinpath(_ASSETS, filename)
  with path.open("r", encoding="utf-8") as f:
    return json.load(f)


def _lookup(filename: str, dataset: str, what: str) -> List[str]:
  table = _load_asset(filename)
  if dataset not in table:
    raise ValueError(
        f"no zero-shot {what} for data set {dataset!r}; known: {', '.join(sorted(table))}.")
  return list(table[dataset])  # a copy: callers may not mutate the cache


def available_classnames() -> List[str]:
  """Names of the data sets that ship class names, sorted."""
  return sorted(_load_asset(_CLASSNAMES_FILE))


def available_templates() -> List[str]:
  """Names of the data sets that ship prompt templates, sorted."""
  return sorted(_load_asset(_TEMPLATES_FILE))


def load_classnames(dataset: str = "imagenet1k") -> List[str]:
  """Class names of ``dataset`` from the package data (clip_benchmark's list).

  Args:
    dataset: a key of the package data, e.g. ``'imagenet1k'`` (CLIP's 1,000
      curated names, in label order).

  Returns:
    The class names, index = label id.
  """
  return _lookup(_CLASSNAMES_FILE, dataset, "class names")


def load_templates(dataset: str = "imagenet1k", add_bare_classname: bool = False) -> List[str]:
  """Prompt templates of ``dataset`` from the package data; ``{c}`` marks the class.

  Args:
    dataset: a key of the package data, e.g. ``'imagenet1k'`` (CLIP's 80).
    add_bare_classname: also append ``'{c}'`` (the class name alone), as
      CLIPA-v2's big_vision ``clip_paper`` prompt set does (80 + 1 = 81).

  Returns:
    The templates.
  """
  templates = _lookup(_TEMPLATES_FILE, dataset, "templates")
  if add_bare_classname and "{c}" not in templates:
    templates.append("{c}")
  return templates


def fill_template(template: str, class_name: str) -> str:
  """Puts ``class_name`` into ``template`` at ``{c}`` (or, if absent, at ``{}``).

  Plain substitution, not ``str.format``, so braces in class names or other
  text are left alone.
  """
  if "{c}" in template:
    return template.replace("{c}", class_name)
  if "{}" in template:
    return template.replace("{}", class_name)
  raise ValueError(
      f"template {template!r} has no '{{c}}' or '{{}}' placeholder for the class name.")


def examples_from_tf_dataset(ds_or_fn: Any) -> Callable[[], Iterator[Dict[str, np.ndarray]]]:
  """Turns a ``tf.data.Dataset`` (or a zero-arg factory of one) into ``examples_fn``.

  Args:
    ds_or_fn: an unbatched dataset of ``{'image', 'label'}``, or a callable
      returning one. A factory is called anew for every evaluation, so a
      dataset that is expensive to hold can be rebuilt each time.

  Returns:
    A zero-arg callable yielding the examples as numpy dicts.
  """

  def examples_fn() -> Iterator[Dict[str, np.ndarray]]:
    ds = ds_or_fn() if callable(ds_or_fn) else ds_or_fn
    if not hasattr(ds, "as_numpy_iterator"):
      raise ValueError(
          f"expected a tf.data.Dataset (or a factory of one), got {type(ds).__name__}.")
    return ds.as_numpy_iterator()

  return examples_fn


def _pad_rows(x: np.ndarray, rows: int) -> np.ndarray:
  """Pads ``x`` to ``rows`` rows by repeating its last row (real data, no NaN risk)."""
  if x.shape[0] == rows:
    return x
  pad = np.repeat(x[-1:], rows - x.shape[0], axis=0)
  return np.concatenate([x, pad], axis=0)


def _check_features(out: Any, rows: int, what: str) -> np.ndarray:
  out = np.asarray(out)
  if out.ndim != 2 or out.shape[0] != rows:
    raise ValueError(
        f"{what} must return [batch_size={rows}, D] features, got shape {out.shape}.")
  return out


def encode_in_batches(fn: EncodeFn, inputs: np.ndarray, batch_size: int, what: str = "encoder"
                      ) -> np.ndarray:
  """Runs ``fn`` over ``inputs`` in batches of exactly ``batch_size`` rows.

  Args:
    fn: maps [batch_size, ...] to [batch_size, D] (numpy or jax arrays).
    inputs: [N, ...], N >= 1.
    batch_size: rows per call; the last batch is padded by repetition.
    what: name used in error messages.

  Returns:
    [N, D] numpy features; padded rows are dropped.
  """
  outs = []
  pending = None  # one batch in flight: dispatch the next before pulling this one to the host
  for start in range(0, inputs.shape[0], batch_size):
    chunk = inputs[start:start + batch_size]
    out = fn(_pad_rows(chunk, batch_size))
    if pending is not None:
      outs.append(_check_features(pending[0], batch_size, what)[:pending[1]])
    pending = (out, chunk.shape[0])
  if pending is None:
    raise ValueError(f"{what}: nothing to encode (0 rows).")
  outs.append(_check_features(pending[0], batch_size, what)[:pending[1]])
  return np.concatenate(outs, axis=0)


def check_sizes(num_examples: Optional[int], **sizes: Any) -> None:
  """Every ``sizes`` value a positive int; ``num_examples`` one too, or None."""
  for arg, value in sizes.items():
    if not isinstance(value, (int, np.integer)) or value < 1:
      raise ValueError(f"{arg} must be a positive int, got {value!r}.")
  if num_examples is not None and (not isinstance(num_examples, (int, np.integer))
                                   or num_examples < 1):
    raise ValueError(f"num_examples must be a positive int or None, got {num_examples!r}.")


def example_batches(examples: Iterable[Dict[str, Any]], batch_size: int,
                    num_examples: Optional[int], required: Sequence[str]
                    ) -> Iterator[List[Dict[str, Any]]]:
  """Groups examples into lists of at most ``batch_size`` (the first ``num_examples``)."""
  batch: List[Dict[str, Any]] = []
  for seen, example in enumerate(examples):
    if num_examples is not None and seen >= num_examples:
      break
    missing = [k for k in required if k not in example]
    if missing:
      raise ValueError(f"eval examples must have {' and '.join(map(repr, required))}, got "
                       f"keys {sorted(example)}.")
    batch.append(example)
    if len(batch) == batch_size:
      yield batch
      batch = []
  if batch:
    yield batch


def stack_images(batch: Sequence[Dict[str, Any]]) -> np.ndarray:
  """``[b, H, W, 3]`` from the examples' ``image``; one shape required."""
  images = [np.asarray(ex["image"]) for ex in batch]
  shapes = {im.shape for im in images}
  if len(shapes) != 1:
    raise ValueError(
        f"all images must share one shape to be batched, got {sorted(shapes)}; resize "
        "them in the eval pipeline.")
  return np.stack(images)


class ZeroShotClassifier:
  """Zero-shot top-k accuracy of an image-text model on one labelled image set.

  Classes are embedded by filling every template with every class name,
  encoding the prompts, L2-normalising each, averaging per class and
  renormalising; an image is classified by cosine similarity to them. Exact
  ties go to the lower class index, as with ``np.argmax`` (see ``metrics``).

  Accuracies are reported for every k in ``ks`` with ``k <= num_classes``;
  larger k are left out (top-5 of 3 classes is always 1.0 and says nothing),
  so e.g. a 3-class set reports only ``top1``.
  """

  def __init__(
      self,
      name: str,
      examples_fn: Callable[[], Iterable[Dict[str, Any]]],
      class_names: Union[Sequence[str], Callable[[], Sequence[str]]],
      templates: Sequence[str],
      batch_size: int = 256,
      text_length: int = 32,
      text_reduction: str = "truncate",
      num_examples: Optional[int] = None,
      ks: Sequence[int] = (1, 5),
      text_batch_size: Optional[int] = None,
  ):
    """Configures the evaluator; nothing is read or encoded until ``evaluate``.

    Args:
      name: metric prefix, e.g. ``'imagenet'`` gives ``'imagenet/top1'``.
      examples_fn: zero-arg callable returning a fresh iterable of unbatched
        numpy examples ``{'image': uint8 [H, W, 3], 'label': int}``.
      class_names: names in label order, or a zero-arg callable returning them
        (resolved at each ``evaluate``, e.g. to read a file written later).
      templates: prompt templates with ``{c}`` (or ``{}``) for the class name.
      batch_size: rows of every ``encode_images`` call.
      text_length: token length passed to ``tokenize``.
      text_reduction: text reduction method passed to ``tokenize``.
      num_examples: evaluate only the first this many examples (all if None).
      ks: the top-k values to report.
      text_batch_size: rows of every ``encode_texts`` call (``batch_size`` if None).
    """
    if not name or not isinstance(name, str):
      raise ValueError(f"name must be a non-empty string, got {name!r}.")
    if not callable(examples_fn):
      raise ValueError(
          "examples_fn must be a zero-arg callable returning examples; wrap a tf.data "
          "dataset with examples_from_tf_dataset().")
    if isinstance(templates, str) or not templates:
      raise ValueError(f"templates must be a non-empty list of strings, got {templates!r}.")
    for template in templates:
      fill_template(template, "x")  # fail now on a template without placeholder
    if not callable(class_names):
      self._check_class_names(class_names)
    text_batch_size = batch_size if text_batch_size is None else text_batch_size
    check_sizes(num_examples, batch_size=batch_size, text_batch_size=text_batch_size,
                text_length=text_length)
    if not ks or any(not isinstance(k, (int, np.integer)) or k < 1 for k in ks):
      raise ValueError(f"ks must be a non-empty list of positive ints, got {ks!r}.")
    self.name = name
    self.examples_fn = examples_fn
    self.class_names = class_names
    self.templates = list(templates)
    self.batch_size = int(batch_size)
    self.text_batch_size = int(text_batch_size)
    self.text_length = int(text_length)
    self.text_reduction = text_reduction
    self.num_examples = num_examples
    self.ks = tuple(int(k) for k in ks)

  @staticmethod
  def _check_class_names(class_names: Any) -> List[str]:
    if isinstance(class_names, str) or not class_names:
      raise ValueError(f"class_names must be a non-empty list of strings, got {class_names!r}.")
    if not all(isinstance(c, str) for c in class_names):
      raise ValueError("class_names must all be strings; pass names in label order.")
    return list(class_names)

  def resolve_class_names(self) -> List[str]:
    """The class names, calling the ``class_names`` callable if one was given."""
    names = self.class_names() if callable(self.class_names) else self.class_names
    return self._check_class_names(names)

  def prompts(self, class_names: Sequence[str]) -> List[str]:
    """All prompts, class-major: ``[fill(t, c) for c in class_names for t in templates]``."""
    return [fill_template(t, c) for c in class_names for t in self.templates]

  def compute_class_embeddings(
      self, encode_texts: EncodeFn, tokenize: Optional[TokenizeFn] = None,
      class_names: Optional[Sequence[str]] = None,
  ) -> np.ndarray:
    """Prompt-ensembled class embeddings.

    Args:
      encode_texts: int32 [text_batch_size, text_length] -> [text_batch_size, D].
      tokenize: ``(texts, length, method) -> int32 [N, length]``; defaults to
        ``clipa_t5x.data.text_reduction.tokenize_texts``.
      class_names: overrides ``resolve_class_names()``.

    Returns:
      [C, D] float32 unit-norm class embeddings.
    """
    if tokenize is None:
      from clipa_t5x.data.text_reduction import tokenize_texts as tokenize  # lazy: TF-free import
    names = self.resolve_class_names() if class_names is None else list(class_names)
    texts = self.prompts(names)
    tokens = np.asarray(tokenize(texts, self.text_length, self.text_reduction))
    if tokens.shape != (len(texts), self.text_length):
      raise ValueError(
          f"tokenize must return [num_prompts={len(texts)}, text_length={self.text_length}] "
          f"tokens, got shape {tokens.shape}.")
    features = encode_in_batches(encode_texts, tokens, self.text_batch_size, "encode_texts")
    return metrics_lib.class_embeddings(features, len(names), len(self.templates))

  def image_batches(self) -> Iterator[tuple]:
    """Yields ``(images [b, H, W, 3], labels [b])`` with b <= batch_size, unpadded."""
    for batch in example_batches(self.examples_fn(), self.batch_size, self.num_examples,
                                 ("image", "label")):
      labels = [np.asarray(ex["label"]) for ex in batch]
      label_array = np.stack(labels)
      if label_array.ndim != 1 or not np.issubdtype(label_array.dtype, np.integer):
        raise ValueError(
            f"each label must be a scalar integer class id, got shape {labels[0].shape} and "
            f"dtype {label_array.dtype}.")
      yield stack_images(batch), label_array.astype(np.int64)

  def evaluate(
      self,
      encode_images: EncodeFn,
      encode_texts: EncodeFn,
      tokenize: Optional[TokenizeFn] = None,
  ) -> Dict[str, float]:
    """Computes zero-shot top-k accuracy over all (or ``num_examples``) examples.

    Args:
      encode_images: uint8 [batch_size, H, W, 3] -> [batch_size, D].
      encode_texts: int32 [text_batch_size, text_length] -> [text_batch_size, D].
      tokenize: ``(texts, length, method) -> int32 [N, length]``; defaults to
        ``clipa_t5x.data.text_reduction.tokenize_texts``.

    Returns:
      ``{f'{name}/top{k}': accuracy for each reported k,
      f'{name}/num_examples': N}``.
    """
    names = self.resolve_class_names()
    num_classes = len(names)
    ks = tuple(k for k in self.ks if k <= num_classes)
    if len(ks) < len(self.ks):
      logging.info("%s: %d classes, skipping top-k for k in %s", self.name, num_classes,
                   [k for k in self.ks if k > num_classes])
    if not ks:
      raise ValueError(f"{self.name}: every k in ks={self.ks} exceeds the {num_classes} classes.")
    # Class embeddings are cached for this call only: the params change between calls.
    weights = self.compute_class_embeddings(encode_texts, tokenize, names)

    hits = {k: 0 for k in ks}
    total = 0
    pending = None  # (device output, labels): pull it only after the next batch is dispatched

    def consume(out: Any, labels: np.ndarray) -> None:
      nonlocal total
      feats = _check_features(out, self.batch_size, "encode_images")[:labels.shape[0]]
      if feats.shape[1] != weights.shape[1]:
        raise ValueError(
            f"image features have D={feats.shape[1]} but text features D={weights.shape[1]}; "
            "both towers must project to the same embedding size.")
      logits = feats.astype(np.float32) @ weights.T
      for k, correct in metrics_lib.topk_correct(logits, labels, ks).items():
        hits[k] += int(correct.sum())
      total += labels.shape[0]

    for images, labels in self.image_batches():
      out = encode_images(_pad_rows(images, self.batch_size))
      if pending is not None:
        consume(*pending)
      pending = (out, labels)
    if pending is not None:
      consume(*pending)
    if total == 0:
      raise ValueError(f"{self.name}: examples_fn yielded no examples; check the eval split.")
    result = {f"{self.name}/top{k}": hits[k] / total for k in ks}
    result[f"{self.name}/num_examples"] = total
    return result
