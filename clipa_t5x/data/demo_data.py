"""The generated ``demo_shapes`` data set at one location: its files, sources and metadata.

``DemoData`` says where the data lives and how it is generated
(``demo_shapes.ensure_demo_data`` parameters); the data is made when its files
are first listed, so a demo run needs no separate data step. The directory is
``data_dir``, else ``$CLIPA_DEMO_DATA``, else ``~/.cache/clipa_t5x/demo_shapes``
(read when the files are listed). ``tasks/demo.py`` registers the SeqIO Tasks
over a ``DemoData``; gin files make one (``DEMO_DATA = @demo_data.DemoData()``)
and pass it to the Task factories, the evaluation and the examples picture.
"""

import dataclasses
import io
import os
import tarfile
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from clipa_t5x.data import demo_shapes
from clipa_t5x.data.sources import WebDatasetSource

SPLITS = ("train", "eval")
# The zero-shot prompt templates of the demo (evaluation and the examples picture).
TEMPLATES = ("a photo of a {c}.", "a {c}.", "a picture of a {c}.", "a drawing of a {c}.",
             "there is a {c} in the image.")


@dataclasses.dataclass(frozen=True)
class DemoData:
  """Where the demo data lives and how it is generated (None: the generator's default).

  Attributes:
    data_dir: the folder; None: ``$CLIPA_DEMO_DATA`` or
      ``~/.cache/clipa_t5x/demo_shapes``.
    num_train / num_eval: images of the train and held-out splits.
    image_size: side of the generated images in pixels.
    num_train_shards / num_eval_shards: tar shards per split.
    seed: the generator's seed.
    scene: ``'shapes'`` (``demo_shapes``: coloured shapes, the demo) or
      ``'glyphs'`` (``demo_glyphs``: letter textures, the inverse-scaling
      study); the default folder is per scene.
  """
  data_dir: Optional[str] = None
  num_train: Optional[int] = None
  num_eval: Optional[int] = None
  image_size: Optional[int] = None
  num_train_shards: Optional[int] = None
  num_eval_shards: Optional[int] = None
  seed: Optional[int] = None
  scene: str = "shapes"

  def __post_init__(self):
    demo_shapes.scene_module(self.scene)  # a clear error for an unknown scene

  @property
  def name(self) -> str:
    """The data set's name, also the prefix of its Task names: ``demo_shapes``."""
    return f"demo_{self.scene}"

  @classmethod
  def from_kwargs(cls, data_dir: Optional[str] = None, **generator_kwargs) -> "DemoData":
    """``DemoData(data_dir, **generator_kwargs)`` naming unknown parameters in the error."""
    known = {f.name for f in dataclasses.fields(cls)} - {"data_dir"}
    unknown = sorted(set(generator_kwargs) - known)
    if unknown:
      raise ValueError(f"Unknown demo data parameters {unknown}; expected some of "
                       f"{sorted(known)}.")
    return cls(data_dir, **generator_kwargs)

  def generator_kwargs(self) -> Dict[str, int]:
    """The ``ensure_demo_data`` parameters that are set."""
    return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
            if f.name != "data_dir" and getattr(self, f.name) is not None}

  def root(self) -> str:
    """The data folder in effect (not created)."""
    return os.path.expanduser(self.data_dir or demo_shapes.default_data_dir(self.scene))

  def class_names(self) -> List[str]:
    """Ordered zero-shot class names of this scene (index = ``KEY.cls``)."""
    return list(demo_shapes.scene_module(self.scene).CLASS_NAMES)

  def class_factors(self) -> Dict[str, List[int]]:
    """Per-class id of each label factor (``demo_shapes``: colour, shape; glyphs: pair)."""
    return demo_shapes.scene_module(self.scene).class_factors()

  def files(self, split: str) -> str:
    """Glob of ``split``'s shards, generating the data set first if needed."""
    if split not in SPLITS:
      raise ValueError(f"demo data has the splits {SPLITS}, not {split!r}.")
    root = demo_shapes.ensure_demo_data(self.root(), **self.generator_kwargs())
    return os.path.join(root, f"{split}-*.tar")

  def pattern(self, split: str) -> Callable[[], str]:
    """``files(split)`` deferred: a callable a source resolves when it lists files."""
    def resolve() -> str:
      return self.files(split)
    return resolve

  def source(self, with_labels: bool) -> WebDatasetSource:
    """A webdataset source over both splits (``with_labels``: keep ``KEY.cls``)."""
    return WebDatasetSource({split: self.pattern(split) for split in SPLITS},
                            with_labels=with_labels)

  def eval_examples(self, num: int) -> Tuple[List[bytes], List[int]]:
    """The first ``num`` held-out examples by key: (JPEG bytes, class index)."""
    jpegs, labels = {}, {}
    path = os.path.join(os.path.dirname(self.files("eval")), "eval-00000.tar")
    with tarfile.open(path) as tar:
      for member in tar:
        key, ext = member.name.rsplit(".", 1)
        if ext in ("jpg", "cls"):
          (jpegs if ext == "jpg" else labels)[key] = tar.extractfile(member).read()
        if len(labels) >= num and len(jpegs) >= num:
          break
    keys = sorted(k for k in jpegs if k in labels)[:num]
    return [jpegs[k] for k in keys], [int(labels[k]) for k in keys]


def eval_files(data: Optional[DemoData] = None) -> str:
  """Glob of the held-out shards of ``data`` (default location), generated on first use.

  A retrieval source's ``pattern`` in gin: ``pattern = @demo_data.eval_files``
  with ``demo_data.eval_files.data = %DEMO_DATA``.
  """
  return (data or DemoData()).files("eval")


def train_files(data: Optional[DemoData] = None) -> str:
  """Glob of the training shards of ``data`` (labelled too: few-shot probes draw from them)."""
  return (data or DemoData()).files("train")


def class_names() -> List[str]:
  """Ordered zero-shot class names, ``['red circle', ...]`` (index = ``KEY.cls``)."""
  return list(demo_shapes.CLASS_NAMES)


def class_factors() -> Dict[str, List[int]]:
  """Per-class colour and shape ids, for the per-factor zero-shot accuracy."""
  return demo_shapes.class_factors()


def templates() -> List[str]:
  """The demo's zero-shot prompt templates."""
  return list(TEMPLATES)


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
