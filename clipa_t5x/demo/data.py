"""A generated demo data set at one location: its files, sources and metadata.

``DemoData`` says which scene, where the data lives and how it is generated
(``generate.ensure_demo_data`` parameters); the data is made when its files
are first listed, so a demo run needs no separate data step. The directory is
``data_dir``, else ``$CLIPA_DEMO_DATA``, else ``~/.cache/clipa_t5x/demo_shapes``
(per scene; read when the files are listed). ``tasks/demo.py`` registers the
SeqIO Tasks over a ``DemoData``; gin files make one (``from clipa_t5x.demo
import data as demo_data``, ``DEMO_DATA = @demo_data.DemoData()``) and pass it
to the Task factories, the evaluation, the examples picture and the resolution
table.
"""

import dataclasses
import functools
import os
import tarfile
from typing import Callable, Dict, List, Optional, Tuple

from clipa_t5x.data.sources import WebDatasetSource
from clipa_t5x.demo import generate
from clipa_t5x.demo import scenes

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
    scene: a name of ``clipa_t5x.demo.scenes``: ``'shapes'`` (coloured
      shapes, the demo) or ``'glyphs'`` (letter textures, the
      inverse-scaling study); the default folder is per scene.
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
    scenes.get(self.scene)  # a clear error for an unknown scene

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
    return os.path.expanduser(self.data_dir or generate.default_data_dir(self.scene))

  def class_names(self) -> List[str]:
    """Ordered zero-shot class names of this scene (index = ``KEY.cls``)."""
    return list(scenes.get(self.scene).CLASS_NAMES)

  def class_factors(self) -> Dict[str, List[int]]:
    """Per-class id of each label factor (shapes: colour, shape; glyphs: pair)."""
    return scenes.get(self.scene).class_factors()

  def files(self, split: str) -> str:
    """Glob of ``split``'s shards, generating the data set first if needed."""
    if split not in SPLITS:
      raise ValueError(f"demo data has the splits {SPLITS}, not {split!r}.")
    root = generate.ensure_demo_data(self.root(), **self.generator_kwargs())
    return os.path.join(root, f"{split}-*.tar")

  def pattern(self, split: str) -> Callable[[], str]:
    """``files(split)`` deferred: a callable a source resolves when it lists files."""
    return functools.partial(self.files, split)

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


def class_names(data: Optional[DemoData] = None) -> List[str]:
  """Ordered zero-shot class names of ``data``'s scene (default: the shapes, ``['red circle',
  ...]``; index = ``KEY.cls``). In gin: ``class_names = @demo_data.class_names`` with
  ``demo_data.class_names.data = %DEMO_DATA``."""
  return (data or DemoData()).class_names()


def class_factors(data: Optional[DemoData] = None) -> Dict[str, List[int]]:
  """Per-class id of each label factor of ``data``'s scene, for the per-factor top-1."""
  return (data or DemoData()).class_factors()


def templates() -> List[str]:
  """The demo's zero-shot prompt templates."""
  return list(TEMPLATES)
