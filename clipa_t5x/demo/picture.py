"""The demo's picture: held-out images with their true and zero-shot predicted labels."""

import io
import os
from typing import Any, Optional, Sequence

import jax

from clipa_t5x import inference
from clipa_t5x.demo import data as demo_data

PICTURE = "zeroshot_examples.png"


def write_zeroshot_examples(model_dir: str, rows: Any = None,
                            data: Optional[demo_data.DemoData] = None, num_images: int = 24,
                            columns: int = 6, cell: int = 128) -> Optional[str]:
  """Draws ``MODEL_DIR/zeroshot_examples.png``: held-out images, true and predicted label.

  The model is the run's last stage (``inference.load(model_dir)``), classifying
  the first ``num_images`` held-out images (every class in turn) over the
  scene's class names with the demo's templates, as the zero-shot evaluation
  does. A ``runner.run`` ``after_run`` hook:
  ``runner.run.after_run = [@demo_picture.write_zeroshot_examples]`` with
  ``demo_picture.write_zeroshot_examples.data = %DEMO_DATA``.

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
  data = data or demo_data.DemoData()
  jpegs, labels = data.eval_examples(num_images)
  names = data.class_names()
  result = model.classify(jpegs, names, demo_data.templates(), top_k=1)
  path = os.path.join(model_dir, PICTURE)
  right = draw_examples(path, jpegs, labels, [int(p) for p in result.top_k_indices[:, 0]],
                        names, columns=columns, cell=cell)
  print(f"zero-shot examples ({right}/{len(jpegs)} right): {path}", flush=True)
  return path


def draw_examples(path: str, jpegs: Sequence[bytes], labels: Sequence[int],
                  predicted: Sequence[int], names: Sequence[str], columns: int = 6,
                  cell: int = 128) -> int:
  """Writes a grid of images captioned with their true and predicted class to ``path``.

  Args:
    path: the PNG to write.
    jpegs: encoded images.
    labels: true class index of each image.
    predicted: predicted class index of each image.
    names: class names.
    columns: images per row.
    cell: side of each (upscaled) image in pixels.

  Returns:
    How many predictions are right.
  """
  from PIL import Image, ImageDraw, ImageFont  # pylint: disable=import-outside-toplevel
  font = ImageFont.load_default()
  text_h = 30
  grid_rows = -(-len(jpegs) // columns)
  canvas = Image.new("RGB", (columns * cell, grid_rows * (cell + text_h)), "white")
  draw = ImageDraw.Draw(canvas)
  right = 0
  for i, (jpeg, label, guess) in enumerate(zip(jpegs, labels, predicted)):
    x, y = i % columns * cell, i // columns * (cell + text_h)
    image = Image.open(io.BytesIO(jpeg)).convert("RGB").resize((cell, cell), Image.NEAREST)
    canvas.paste(image, (x, y))
    right += int(guess) == int(label)
    draw.text((x + 3, y + cell + 2), f"true: {names[label]}", fill=(0, 0, 0), font=font)
    draw.text((x + 3, y + cell + 15), f"pred: {names[guess]}", font=font,
              fill=(0, 130, 0) if guess == label else (200, 0, 0))
  canvas.save(path)
  return right
