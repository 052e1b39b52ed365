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
which turns red into orange), there is no greyscale, and crops keep >= 80% of
the area so that the shape is never cut away (see
experiments/demo_diagnosis/README.md).
"""

import functools
import io
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
TRAIN_AUGMENTATION = dict(area_range=(0.8, 1.0), colour_jitter=True,
                          jitter_hue=0.02, grayscale_p=0.0)
MIXTURE_RATES = {"demo_shapes": 1.0, "demo_shapes_syntax": 1.0}
TEMPLATES = ("a photo of a {c}.", "a {c}.", "a picture of a {c}.", "a drawing of a {c}.",
             "there is a {c} in the image.")


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


def eval_files() -> str:
  """Glob of the demo data's eval shards, generated on first use.

  Bound in gin as a callable ``pattern`` (``@demo.eval_files``) for the
  retrieval evaluator, so it is resolved when the files are listed and
  follows ``configure``.
  """
  return _split_pattern("eval")()


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


def class_factors() -> Dict[str, list]:
  """Per-class colour and shape ids, for the per-factor zero-shot accuracy."""
  return demo_shapes.class_factors()


def templates() -> list:
  """The zero-shot prompt templates of the demo (gin and the examples picture)."""
  return list(TEMPLATES)


def _eval_examples(num: int):
  """The first ``num`` held-out examples: ([jpeg bytes], [label])."""
  import tarfile  # pylint: disable=import-outside-toplevel
  jpegs, labels = {}, {}
  with tarfile.open(os.path.join(data_dir(), "eval-00000.tar")) as tar:
    for member in tar:
      key, ext = member.name.rsplit(".", 1)
      if ext in ("jpg", "cls"):
        data = tar.extractfile(member).read()
        (jpegs if ext == "jpg" else labels)[key] = data
      if len(labels) >= num and len(jpegs) >= num:
        break
  keys = sorted(k for k in jpegs if k in labels)[:num]
  return [jpegs[k] for k in keys], [int(labels[k]) for k in keys]


def write_zeroshot_examples(model_dir: str, rows: Any = None, num_images: int = 24,
                            columns: int = 6, cell: int = 128) -> Optional[str]:
  """Draws ``MODEL_DIR/zeroshot_examples.png``: held-out images, true and predicted label.

  The model is the run's last stage (``inference.load(model_dir)``), classifying
  the first ``num_images`` held-out images (every class in turn) with the
  demo's templates, as the zero-shot evaluation does. A ``runner.run``
  ``after_run`` hook: ``runner.run.after_run = [@demo.write_zeroshot_examples]``.

  Args:
    model_dir: the run's MODEL_DIR.
    rows: the summary rows (unused; the hook signature).
    num_images: how many held-out images to show.
    columns: images per row of the grid.
    cell: side of each (upscaled) image in pixels.

  Returns:
    The picture's path (None on processes other than the first, or when
    ``model_dir`` holds no checkpoint).
  """
  del rows
  import jax  # pylint: disable=import-outside-toplevel
  from PIL import Image, ImageDraw, ImageFont  # pylint: disable=import-outside-toplevel
  from clipa_t5x import inference  # pylint: disable=import-outside-toplevel
  if jax.process_index() != 0:
    return None
  try:
    model = inference.load(model_dir)
  except ValueError as e:  # no checkpoint (e.g. stages stubbed out): nothing to draw
    print(f"zero-shot examples not drawn: {e}", flush=True)
    return None
  jpegs, labels = _eval_examples(num_images)
  result = model.classify(jpegs, class_names(), templates(), top_k=1)
  names = class_names()
  font = ImageFont.load_default()
  text_h = 30
  grid_rows = -(-len(jpegs) // columns)
  canvas = Image.new("RGB", (columns * cell, grid_rows * (cell + text_h)), "white")
  draw = ImageDraw.Draw(canvas)
  right = 0
  for i, (jpeg, label) in enumerate(zip(jpegs, labels)):
    x, y = i % columns * cell, i // columns * (cell + text_h)
    image = Image.open(io.BytesIO(jpeg)).convert("RGB").resize((cell, cell), Image.NEAREST)
    canvas.paste(image, (x, y))
    predicted = int(result.top_k_indices[i, 0])
    right += predicted == label
    draw.text((x + 3, y + cell + 2), f"true: {names[label]}", fill=(0, 0, 0), font=font)
    draw.text((x + 3, y + cell + 15), f"pred: {names[predicted]}", font=font,
              fill=(0, 130, 0) if predicted == label else (200, 0, 0))
  path = os.path.join(model_dir, "zeroshot_examples.png")
  canvas.save(path)
  print(f"zero-shot examples ({right}/{len(jpegs)} right): {path}", flush=True)
  return path


register()
