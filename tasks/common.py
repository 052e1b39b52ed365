"""What every Task registration here shares: the training preprocessors and idempotent adds."""

import functools
from typing import Any, Callable, List, Mapping, Optional

import seqio

from clipa_t5x.data import image_ops
from clipa_t5x.data import mixtures
from clipa_t5x.data import text_reduction
from clipa_t5x.data.sources import select_features


# Task name suffix of each text reduction (the convention of every module here).
TEXT_METHODS = {"truncate": "", "syntax": "_syntax", "random": "_random", "block": "_block"}


def task_suffix(text_reduction: str, where: str, methods: Mapping[str, str] = TEXT_METHODS) -> str:
  """The Task name suffix of ``text_reduction``; a one-line error naming ``where`` otherwise."""
  if text_reduction not in methods:
    raise ValueError(f"{where}: text_reduction must be one of {sorted(methods)}, "
                     f"got {text_reduction!r}.")
  return methods[text_reduction]


def train_preprocessors(method: str,
                        augmentation: Optional[Mapping[str, Any]]) -> List[Callable]:
  """image + caption -> ``{'image': uint8 SxSx3, 'text': int32 L}`` for training.

  Args:
    method: text reduction (``'truncate'``, ``'syntax'``, ``'random'``, ``'block'``).
    augmentation: ``train_image_preprocessor`` keyword arguments, or None for
      no random augmentation: a square resize (with training's bad-image
      policy: skip and count). For data whose generator already draws every
      nuisance per image, such as ``demo_glyphs``.
  """
  if augmentation is None:
    image = functools.partial(image_ops.eval_image_preprocessor, skip_bad_images=True)
  else:
    image = functools.partial(image_ops.train_image_preprocessor, **augmentation)
  return [
      functools.partial(select_features, keys=("image", "text")),
      image,
      functools.partial(text_reduction.tokenize_and_reduce, method=method, key="text"),
  ]


def is_deterministic(method: str, augmentation: Optional[Mapping[str, Any]]) -> bool:
  """Whether ``train_preprocessors(method, augmentation)`` draws nothing at random."""
  return augmentation is None and method not in text_reduction.RANDOM_METHODS


def register_task(name: str, **kwargs) -> None:
  """``seqio.TaskRegistry.add`` that replaces an earlier registration.

  Re-imports (e.g. as ``tasks`` and as ``clipa_t5x.tasks``) would otherwise
  raise "Attempting to register duplicate provider".
  """
  if name in seqio.TaskRegistry.names():
    seqio.TaskRegistry.remove(name)
  seqio.TaskRegistry.add(name, **kwargs)


def register_mixture(name: str, rates: Mapping[str, float]) -> None:
  """Registers a Mixture of registered Tasks with rates (idempotent).

  Its examples carry their source (``mixtures.SourceTaggedMixture``), so a run
  records the examples seen per Task.
  """
  mixtures.register_mixture(name, rates)
