"""Where the zero-shot errors of a demo model come from: colour, shape or both.

The demo's classes are (colour, shape) pairs, index = colour * len(SHAPES) +
shape (``clipa_t5x.data.demo_shapes.CLASS_NAMES``). The runner's evaluator reports
top-k only; here a finished stage's checkpoint is loaded, the held-out split
classified once more with the same prompt ensemble, and the N-way
predictions split into "colour right" and "shape right". The top-1 from these
predictions must equal the runner's (a consistency check done by run.py).
"""

from typing import Dict, Optional, Sequence, Tuple

import numpy as np


def class_factors(num_shapes: Optional[int] = None) -> Dict[str, np.ndarray]:
  """Per-class colour and shape index: ``{'colour': [C], 'shape': [C]}``.

  Read from the installed demo data set (``demo_shapes.class_factors()`` where
  it has one, else its ``colour * len(SHAPES) + shape`` class order), so a
  redesigned data set is split the way it labels its classes.
  """
  from clipa_t5x.data import demo_shapes  # pylint: disable=import-outside-toplevel
  if num_shapes is None and hasattr(demo_shapes, "class_factors"):
    return {k: np.asarray(v) for k, v in demo_shapes.class_factors().items()}
  num_shapes = num_shapes or len(demo_shapes.SHAPES)
  ids = np.arange(len(demo_shapes.CLASS_NAMES))
  return {"colour": ids // num_shapes, "shape": ids % num_shapes}


def accuracy_breakdown(predictions: np.ndarray, labels: np.ndarray,
                       num_shapes: Optional[int] = None) -> Dict[str, float]:
  """Top-1 and per-factor (colour-only, shape-only) accuracy of N-way predictions.

  Args:
    predictions: [N] predicted class ids.
    labels: [N] true class ids, same encoding.
    num_shapes: shapes per colour, for class ids ``colour * num_shapes + shape``
      (default: the installed data set's own factors, ``class_factors``).

  Returns:
    ``{'top1', 'colour', 'shape'}`` as fractions in [0, 1].
  """
  predictions = np.asarray(predictions)
  labels = np.asarray(labels)
  if predictions.shape != labels.shape or predictions.ndim != 1 or not labels.size:
    raise ValueError(f"predictions and labels must be equal, non-empty [N] arrays, got "
                     f"{predictions.shape} and {labels.shape}.")
  if num_shapes is not None:
    factors = {"colour": np.arange(max(predictions.max(), labels.max()) + 1) // num_shapes}
    factors["shape"] = np.arange(len(factors["colour"])) % num_shapes
  else:
    factors = class_factors()
  out = {"top1": float(np.mean(predictions == labels))}
  for name in ("colour", "shape"):
    table = factors[name]
    out[name] = float(np.mean(table[predictions] == table[labels]))
  return out


def load_eval_set(task: str, image_size: int, text_length: int) -> Tuple[np.ndarray, np.ndarray]:
  """All examples of ``task``'s eval split: uint8 images [N, S, S, 3] and labels [N]."""
  from clipa_t5x.evaluation import datasets  # pylint: disable=import-outside-toplevel
  images, labels = [], []
  for ex in datasets.SeqioTask(task, "eval").examples(image_size, text_length):
    images.append(ex["image"])
    labels.append(int(ex["label"]))
  if not images:
    raise ValueError(f"task {task!r} has no eval examples; check the demo data directory.")
  return np.stack(images), np.asarray(labels, np.int64)


def predict(model_config, checkpoint_dir: str, images: np.ndarray, class_names: Sequence[str],
            templates: Sequence[str], text_length: int,
            batch_size: int = 250) -> Tuple[np.ndarray, int]:
  """N-way zero-shot predictions of the latest checkpoint in ``checkpoint_dir``.

  Args:
    model_config: the ``ClipaConfig`` the checkpoint was trained with.
    checkpoint_dir: a stage directory (its latest checkpoint is read).
    images: uint8 [N, S, S, 3] eval images.
    class_names: names in label order.
    templates: prompt templates with ``{c}``; embeddings are averaged per class.
    text_length: prompt length (truncation).
    batch_size: images per encoder call.

  Returns:
    ``(predictions [N], number of parameters)``.
  """
  import jax  # pylint: disable=import-outside-toplevel
  from clipa_t5x import checkpoints  # pylint: disable=import-outside-toplevel
  from clipa_t5x.data import text_reduction  # pylint: disable=import-outside-toplevel
  from clipa_t5x.evaluation import metrics  # pylint: disable=import-outside-toplevel
  from clipa_t5x.evaluation import zeroshot  # pylint: disable=import-outside-toplevel
  from clipa_t5x.models import clip  # pylint: disable=import-outside-toplevel

  params, _, _ = checkpoints.load_params(checkpoint_dir)
  num_params = int(sum(np.prod(x.shape) for x in jax.tree.leaves(params)))
  model = clip.ClipaModel(model_config)
  prompts = [zeroshot.fill_template(t, c) for c in class_names for t in templates]
  tokens = np.asarray(text_reduction.tokenize_texts(prompts, text_length, "truncate"))
  text_features = np.asarray(jax.jit(model.encode_texts)(params, tokens), np.float32)
  weights = metrics.class_embeddings(text_features, len(class_names), len(templates))
  encode = jax.jit(model.encode_images)
  predictions = []
  for start in range(0, images.shape[0], batch_size):
    chunk = images[start:start + batch_size]
    rows = chunk.shape[0]
    padded = np.concatenate([chunk, np.zeros((batch_size - rows,) + chunk.shape[1:], chunk.dtype)])
    features = np.asarray(encode(params, padded), np.float32)[:rows]
    predictions.append(np.argmax(features @ weights.T, axis=1))
  return np.concatenate(predictions), num_params
