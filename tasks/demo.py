"""SeqIO Tasks over the generated ``demo_shapes`` data set.

Registered names:

- ``demo_shapes``: train Task (Inception crop + mild colour jitter, captions
  truncated to ``sequence_length['text']`` tokens); variants
  ``demo_shapes_syntax``, ``demo_shapes_random``, ``demo_shapes_block`` use
  CLIPA's other text-reduction methods.
- ``demo_shapes_eval``: eval Task (square resize, truncated captions) that
  keeps the zero-shot ``'label'`` (int32 index into ``classes.json``).
- ``demo_shapes_mix``: Mixture of ``demo_shapes`` and ``demo_shapes_syntax``,
  showing how rates combine Tasks.

All Tasks have the splits ``train`` and ``eval`` (the held-out set).

The data is made on first use: listing the files calls
``demo_shapes.ensure_demo_data(data_dir(), **DEMO_DATA_KWARGS)``, so a demo
run needs no separate data step. The directory is, in order: ``DEMO_DATA_DIR``
(set it with ``configure(...)``, e.g. from gin), ``$CLIPA_DEMO_DATA``, or
``~/.cache/clipa_t5x/demo_shapes``.

Augmentation differs from CLIPA's recipe on purpose: colour is half of every
label here, so the hue shift is small (±0.02 of the wheel instead of ±0.08,
which turns red into orange), there is no greyscale, and crops keep >= 60% of
the area so that small shapes in corners are cut out less often.
"""

import functools
import os
from typing import Any, Dict, Optional


from clipa_t5x.data import demo_shapes
from clipa_t5x.data import image_ops
from clipa_t5x.data import text_reduction
from clipa_t5x.data.feature_converter import output_features
from clipa_t5x.data.sources import WebDatasetSource, select_features
from . import common  # relative: works as `tasks` and `clipa_t5x.tasks`

# Overrides of the data location and generator parameters (None / empty: the
# defaults). Read each time the files are listed, i.e. when a dataset is built.
DEMO_DATA_DIR: Optional[str] = None
DEMO_DATA_KWARGS: Dict[str, Any] = {}

TEXT_METHODS = {"": "truncate", "_syntax": "syntax", "_random": "random",
                "_block": "block"}
TRAIN_AUGMENTATION = dict(area_range=(0.6, 1.0), colour_jitter=True,
                          jitter_hue=0.02, grayscale_p=0.0)
MIXTURE_RATES = {"demo_shapes": 1.0, "demo_shapes_syntax": 1.0}


def configure(data_dir: Optional[str] = None, **generator_kwargs) -> None:
  """Sets where the demo data lives and how it is generated (gin-friendly).

  Args:
    data_dir: the data directory; None keeps the env/default location.
    **generator_kwargs: ``ensure_demo_data`` parameters (``num_train``,
      ``num_eval``, ``image_size``, ``num_train_shards``, ``num_eval_shards``,
      ``seed``); replaces earlier ones.
  """
  global DEMO_DATA_DIR, DEMO_DATA_KWARGS
  DEMO_DATA_DIR = data_dir
  DEMO_DATA_KWARGS = dict(generator_kwargs)


def data_dir() -> str:
  """The demo data directory currently in effect."""
  return os.path.expanduser(DEMO_DATA_DIR or demo_shapes.default_data_dir())


def _split_pattern(split: str):
  def pattern() -> str:
    root = demo_shapes.ensure_demo_data(data_dir(), **DEMO_DATA_KWARGS)
    return os.path.join(root, f"{split}-*.tar")
  return pattern


def _source(with_labels: bool) -> WebDatasetSource:
  return WebDatasetSource(
      {split: _split_pattern(split) for split in ("train", "eval")},
      with_labels=with_labels)


def register() -> None:
  """Registers the demo Tasks and Mixture (idempotent)."""
  for suffix, method in TEXT_METHODS.items():
    common.register_task(
        f"demo_shapes{suffix}", source=_source(with_labels=False),
        output_features=output_features(),
        preprocessors=common.train_preprocessors(method, TRAIN_AUGMENTATION))
  common.register_task(
      "demo_shapes_eval",
      source=_source(with_labels=True),
      output_features=output_features(),
      preprocessors=[
          functools.partial(select_features, keys=("image", "text", "label")),
          image_ops.eval_image_preprocessor,
          functools.partial(text_reduction.tokenize_and_reduce,
                            method="truncate", key="text"),
      ])
  common.register_mixture("demo_shapes_mix", MIXTURE_RATES)


def class_names() -> list:
  """Ordered zero-shot class names, e.g. ``['red circle', ...]``."""
  return list(demo_shapes.CLASS_NAMES)


register()
