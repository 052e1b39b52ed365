"""The demo's picture: held-out images with their true and zero-shot predicted labels."""

import os
from typing import Any, Optional

import jax

from clipa_t5x import inference
from clipa_t5x.data import demo_data

PICTURE = "zeroshot_examples.png"


def write_zeroshot_examples(model_dir: str, rows: Any = None,
                            data: Optional[demo_data.DemoData] = None, num_images: int = 24,
                            columns: int = 6, cell: int = 128) -> Optional[str]:
  """Draws ``MODEL_DIR/zeroshot_examples.png``: held-out images, true and predicted label.

  The model is the run's last stage (``inference.load(model_dir)``), classifying
  the first ``num_images`` held-out images (every class in turn) with the
  demo's templates, as the zero-shot evaluation does. A ``runner.run``
  ``after_run`` hook: ``runner.run.after_run = [@demo_picture.write_zeroshot_examples]``
  with ``demo_picture.write_zeroshot_examples.data = %DEMO_DATA``.

  Args:
    model_dir: the run's MODEL_DIR.
    rows: the summary rows (unused; the hook signature).
    data: the demo data the run evaluated on (None: the default location).
    num_images: how many held-out images to show.
    columns: images per row of the grid.
    cell: side of each (upscaled) image in pixels.

  Returns:
    The picture's path (None on processes other than the first, or when
    ``model_dir`` holds no checkpoint).
  """
  del rows
  if jax.process_index() != 0:
    return None
  try:
    model = inference.load(model_dir)
  except ValueError as e:  # no checkpoint (e.g. stages stubbed out): nothing to draw
    print(f"zero-shot examples not drawn: {e}", flush=True)
    return None
  jpegs, labels = (data or demo_data.DemoData()).eval_examples(num_images)
  names = demo_data.class_names()
  result = model.classify(jpegs, names, demo_data.templates(), top_k=1)
  path = os.path.join(model_dir, PICTURE)
  right = demo_data.draw_examples(path, jpegs, labels, [int(p) for p in result.top_k_indices[:, 0]],
                                  names, columns=columns, cell=cell)
  print(f"zero-shot examples ({right}/{len(jpegs)} right): {path}", flush=True)
  return path
