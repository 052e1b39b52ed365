"""Zero-shot image classification with prompt-ensembled class embeddings.

The one zero-shot computation of the package: in-training evaluation,
``clipa_t5x.eval`` and inference (``embed_classes``) all use it. It is
model-agnostic: it only calls two host callables,
``encode_images(uint8 [B, H, W, 3]) -> [B, D]`` and
``encode_texts(int32 [B, L]) -> [B, D]``, always with exactly ``batch_size``
rows (``batching``), so a jitted, partitioned function compiles once.
Everything else (prompt filling, ensembling, top-k) is numpy on the host. Under
multi-host evaluation each host reads its own share of the examples and the
hit counts are summed over hosts.

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
import os
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Union

import numpy as np

from clipa_t5x.evaluation import batching
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


# A few generic prompts for classification when no templates are given.
DEFAULT_TEMPLATES = (
    "a photo of a {c}.",
    "a photo of the {c}.",
    "a close-up photo of a {c}.",
    "a photo of a small {c}.",
    "a photo of a large {c}.",
    "a cropped photo of a {c}.",
    "a blurry photo of a {c}.",
)


def _read_list(path: str, setting: str, what: str) -> List[str]:
  """A JSON list, or one entry per line (blank lines dropped), from a UTF-8 file."""
  try:
    with open(path, encoding="utf-8") as f:
      text = f.read()
    entries = json.loads(text) if path.endswith(".json") else text.splitlines()
  except (OSError, UnicodeDecodeError, ValueError) as e:
    raise ValueError(f"{setting}: cannot read {what} file {path!r} ({e}); write one per line "
                     "(UTF-8) or a JSON list.") from None
  if not isinstance(entries, list):
    raise ValueError(f"{setting}: {path!r} must hold a JSON list of {what}.")
  return [str(e).strip() for e in entries if str(e).strip()]


def _looks_like_file(value: str) -> bool:
  return os.sep in value or value.endswith((".json", ".txt"))


def parse_class_names(value: Any, setting: str = "class_names") -> List[str]:
  """The one reader of class names: every entry point and evaluation uses it.

  Args:
    value: a list of names (label order); a shipped list's key
      (``'imagenet1k'``, see ``available_classnames``); a file (a JSON list,
      or one name per line); or names separated by commas (``'cat,dog'``).
    setting: the name of ``value`` in errors (a flag or gin macro).

  Returns:
    At least two non-empty names.
  """
  if isinstance(value, str):
    path = os.path.expanduser(value)
    if os.path.isfile(path):
      names = _read_list(path, setting, "class names")
    elif value in available_classnames():
      names = load_classnames(value)
    elif _looks_like_file(value):
      raise ValueError(f"{setting}: class names file {value!r} does not exist.")
    else:
      names = [n.strip() for n in value.split(",") if n.strip()]
  elif isinstance(value, (list, tuple)):
    names = list(value)
    bad = [n for n in names if not isinstance(n, str) or not n.strip()]
    if bad:
      raise ValueError(f"{setting}: class names must be non-empty strings, got {bad[:3]!r}.")
  else:
    raise ValueError(f"{setting}: class names must be a list, a file, 'cat,dog' or a shipped "
                     f"list's key, got {type(value).__name__}.")
  if len(names) < 2:
    raise ValueError(f"{setting}={value!r} gives {len(names)} class name(s); zero-shot needs at "
                     "least two: 'cat,dog', a file with one name per line, or a shipped list "
                     f"({', '.join(available_classnames()[:4])}, ...).")
  return names


def parse_templates(value: Any = None, setting: str = "templates") -> List[str]:
  """The one reader of prompt templates (``{c}`` marks the class name).

  Args:
    value: None (``DEFAULT_TEMPLATES``); a shipped set's key (``'imagenet1k'``);
      one template with ``{c}``; a file (a JSON list, or one per line); or a list.
    setting: the name of ``value`` in errors.
  """
  if value is None:
    return list(DEFAULT_TEMPLATES)
  if isinstance(value, str):
    path = os.path.expanduser(value)
    if os.path.isfile(path):
      templates = _read_list(path, setting, "templates")
    elif value in available_templates():
      return load_templates(value)
    elif "{c}" in value or "{}" in value:
      return [value]
    else:
      raise ValueError(
          f"{setting}={value!r} is neither a file, a known template set "
          f"({', '.join(available_templates())}) nor a template with a '{{c}}' placeholder.")
  else:
    templates = list(value)
  if not templates:
    raise ValueError(f"{setting} is empty; pass templates with '{{c}}', a known set such as "
                     "'imagenet1k', or None for the default ones.")
  for t in templates:
    if not isinstance(t, str):
      raise ValueError(f"{setting}: templates must be strings, got {t!r}.")
    fill_template(t, "x")  # raises on a template without a placeholder
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


def default_tokenize(tokenize: Optional[TokenizeFn]) -> TokenizeFn:
  """``tokenize``, or the package tokenizer (imported only now: TF-free import)."""
  if tokenize is not None:
    return tokenize
  from clipa_t5x.data.text_reduction import tokenize_texts  # pylint: disable=import-outside-toplevel
  return tokenize_texts


def embed_classes(encode_texts: EncodeFn, class_names: Sequence[str], templates: Sequence[str],
                  *, text_length: int, text_reduction: str = "truncate", batch_size: int = 256,
                  tokenize: Optional[TokenizeFn] = None) -> np.ndarray:
  """Prompt-ensembled class embeddings (CLIP's zero-shot classifier weights).

  Args:
    encode_texts: int32 [batch_size, text_length] -> [batch_size, D].
    class_names: C names, in label order.
    templates: T prompts with ``{c}`` (or ``{}``) for the class name.
    text_length: token length passed to ``tokenize``.
    text_reduction: text reduction method passed to ``tokenize``.
    batch_size: rows of every ``encode_texts`` call.
    tokenize: ``(texts, length, method) -> int32 [N, length]``; defaults to
      ``clipa_t5x.data.text_reduction.tokenize_texts``.

  Returns:
    [C, D] float32 unit-norm rows: each class's normalised prompt embeddings,
    averaged and renormalised.
  """
  texts = [fill_template(t, c) for c in class_names for t in templates]  # class-major
  tokens = np.asarray(default_tokenize(tokenize)(texts, text_length, text_reduction))
  if tokens.shape != (len(texts), text_length):
    raise ValueError(
        f"tokenize must return [num_prompts={len(texts)}, text_length={text_length}] "
        f"tokens, got shape {tokens.shape}.")
  features = batching.encode_in_batches(encode_texts, tokens, batch_size, "encode_texts")
  return metrics_lib.class_embeddings(features, len(class_names), len(templates))


def check_ks(ks: Sequence[int]) -> None:
  """ValueError unless ``ks`` is a non-empty list of positive ints."""
  if isinstance(ks, (int, str)) or not ks or any(
      not isinstance(k, (int, np.integer)) or k < 1 for k in ks):
    raise ValueError(f"ks must be a non-empty list of positive ints, got {ks!r}.")


def set_settings(evaluator: Any, name: str, examples_fn: Callable[[], Iterable[Any]],
                 batch_size: int, text_batch_size: Optional[int], text_length: int,
                 text_reduction: str, num_examples: Optional[int], ks: Sequence[int],
                 image_size: Optional[int], hint: str = "", **sizes: int) -> None:
  """Checks and sets on ``evaluator`` the settings that ``ZeroShotClassifier`` and
  ``retrieval.RetrievalEvaluator`` share (see their ``__init__``); ``sizes``: more
  positive ints to check and set."""
  if not name or not isinstance(name, str):
    raise ValueError(f"name must be a non-empty string, got {name!r}.")
  if not callable(examples_fn):
    raise ValueError(f"examples_fn must be a zero-arg callable returning examples{hint}.")
  text_batch_size = batch_size if text_batch_size is None else text_batch_size
  batching.check_sizes(num_examples, batch_size=batch_size, text_batch_size=text_batch_size,
                       text_length=text_length, **sizes)
  check_ks(ks)
  evaluator.name, evaluator.examples_fn = name, examples_fn
  evaluator.batch_size, evaluator.text_batch_size = int(batch_size), int(text_batch_size)
  evaluator.text_length, evaluator.text_reduction = int(text_length), text_reduction
  evaluator.num_examples, evaluator.ks = num_examples, tuple(int(k) for k in ks)
  evaluator.image_size = image_size
  for key, value in sizes.items():
    setattr(evaluator, key, int(value))


class ZeroShotClassifier:
  """Zero-shot top-k accuracy of an image-text model on one labelled image set.

  Classes are embedded by ``embed_classes``; an image is classified by cosine
  similarity to them. Exact ties go to the lower class index, as with
  ``np.argmax`` (see ``metrics``).

  Accuracies are reported for every k in ``ks`` with ``k <= num_classes``;
  larger k are left out (top-5 of 3 classes is always 1.0 and says nothing),
  so e.g. a 3-class set reports only ``top1``.
  """

  def __init__(self, name: str, examples_fn: Callable[[], Iterable[Dict[str, Any]]],
               class_names: Union[Sequence[str], Callable[[], Sequence[str]]],
               templates: Sequence[str], batch_size: int = 256, text_length: int = 32,
               text_reduction: str = "truncate", num_examples: Optional[int] = None,
               ks: Sequence[int] = (1, 5), text_batch_size: Optional[int] = None,
               factors: Any = None, image_size: Optional[int] = None):
    """Configures the evaluator; nothing is read or encoded until ``evaluate``.

    Args:
      name: metric prefix, e.g. ``'imagenet'`` gives ``'imagenet/top1'``.
      examples_fn: zero-arg callable returning a fresh iterable of unbatched
        numpy examples ``{'image': uint8 [H, W, 3], 'label': int}`` (this
        host's share of them).
      class_names: names in label order, or a zero-arg callable returning them
        (resolved at each ``evaluate``, e.g. to read a file written later).
      templates: prompt templates with ``{c}`` (or ``{}``) for the class name.
      batch_size: rows of every ``encode_images`` call (per host).
      text_length, text_reduction: as ``embed_classes``'s.
      num_examples: evaluate only the first this many examples (all if None).
      ks: the top-k values to report.
      text_batch_size: rows of every ``encode_texts`` call (``batch_size`` if None).
      factors: optional parts of a compound label, ``{factor: [its id for
        each class]}`` or a zero-arg callable returning that; adds
        ``'<name>/<factor>_top1'``: how often the top-1 class has the true
        class's factor.
      image_size: image side of the dummy batch a host feeds while other
        hosts still have data (multi-host only).
    """
    set_settings(self, name, examples_fn, batch_size, text_batch_size, text_length,
                 text_reduction, num_examples, ks, image_size,
                 hint="; wrap a tf.data dataset with examples_from_tf_dataset()")
    if isinstance(templates, str) or not templates:
      raise ValueError(f"templates must be a non-empty list of strings, got {templates!r}.")
    for template in templates:
      fill_template(template, "x")  # fail now on a template without placeholder
    if not callable(class_names):
      self._check_class_names(class_names)
    self.class_names = class_names
    self.templates = list(templates)
    self.factors = factors

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

  def image_batches(self) -> Iterator[tuple]:
    """Yields ``(images [b, H, W, 3], labels [b])`` with b <= batch_size, unpadded."""
    for batch in batching.example_batches(self.examples_fn(), self.batch_size,
                                          self.num_examples, ("image", "label")):
      labels = [np.asarray(ex["label"]) for ex in batch]
      label_array = np.stack(labels)
      if label_array.ndim != 1 or not np.issubdtype(label_array.dtype, np.integer):
        raise ValueError(
            f"each label must be a scalar integer class id, got shape {labels[0].shape} and "
            f"dtype {label_array.dtype}.")
      yield batching.stack_images(batch), label_array.astype(np.int64)

  def _factor_table(self, num_classes: int) -> Dict[str, np.ndarray]:
    factors = self.factors() if callable(self.factors) else self.factors
    table = {str(k): np.asarray(v, np.int64) for k, v in (factors or {}).items()}
    for k, v in table.items():
      if v.shape != (num_classes,):
        raise ValueError(f"{self.name}: factor {k!r} must give one id per class "
                         f"({num_classes}), got shape {v.shape}.")
    return table

  def evaluate(self, encode_images: EncodeFn, encode_texts: EncodeFn,
               tokenize: Optional[TokenizeFn] = None) -> Dict[str, float]:
    """Computes zero-shot top-k accuracy over all (or ``num_examples``) examples.

    Args:
      encode_images: uint8 [batch_size, H, W, 3] -> [batch_size, D].
      encode_texts: int32 [text_batch_size, text_length] -> [text_batch_size, D].
      tokenize: as ``embed_classes``'s.

    Returns:
      ``{f'{name}/top{k}': accuracy for each reported k,
      f'{name}/<factor>_top1': accuracy for each factor,
      f'{name}/num_examples': N}``, over all hosts.
    """
    names = self.resolve_class_names()
    ks = tuple(k for k in self.ks if k <= len(names))
    if len(ks) < len(self.ks):
      logging.info("%s: %d classes, skipping top-k for k in %s", self.name, len(names),
                   [k for k in self.ks if k > len(names)])
    if not ks:
      raise ValueError(f"{self.name}: every k in ks={self.ks} exceeds the {len(names)} classes.")
    # Class embeddings are computed for this call only: the params change between calls.
    weights = embed_classes(encode_texts, names, self.templates, text_length=self.text_length,
                            text_reduction=self.text_reduction,
                            batch_size=self.text_batch_size, tokenize=tokenize)
    factors = self._factor_table(len(names))
    hits = np.zeros(len(ks) + len(factors), np.int64)  # top-k, then per-factor top-1
    total = 0
    side = self.image_size or 1
    dummy = (np.zeros((1, side, side, 3), np.uint8), np.zeros((0,), np.int64))
    for feats, labels in batching.encode_batches(encode_images, self.image_batches(),
                                                 self.batch_size, "encode_images", dummy):
      if not labels.shape[0]:
        continue
      if feats.shape[1] != weights.shape[1]:
        raise ValueError(
            f"image features have D={feats.shape[1]} but text features D={weights.shape[1]}; "
            "both towers must project to the same embedding size.")
      logits = feats.astype(np.float32) @ weights.T
      correct = metrics_lib.topk_correct(logits, labels, ks)
      top1 = np.argmax(logits, axis=1)  # ties to the lower index, as topk_correct
      hits += np.array([int(correct[k].sum()) for k in ks]
                       + [int(np.sum(f[top1] == f[labels])) for f in factors.values()],
                       np.int64)
      total += labels.shape[0]
    summed = batching.allgather(np.append(hits, total)).sum(axis=0)
    hits, total = summed[:-1], int(summed[-1])
    if total == 0:
      raise ValueError(f"{self.name}: examples_fn yielded no examples; check the eval split.")
    result = {f"{self.name}/top{k}": float(h) / total for k, h in zip(ks, hits)}
    for factor, h in zip(factors, hits[len(ks):]):
      result[f"{self.name}/{factor}_top1"] = float(h) / total
    result[f"{self.name}/num_examples"] = total
    return result
