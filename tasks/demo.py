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
- ``demo_glyphs``, ``demo_glyphs_syntax``, ..., ``demo_glyphs_eval``,
  ``demo_glyphs_mix``: the same over the letters scene
  (``clipa_t5x.demo.scenes.glyphs``, the inverse-scaling study's data).

All Tasks have the splits ``train`` and ``eval`` (the held-out set).

Where the data lives is an argument: ``register(data)``, ``task(..., data)``,
``eval_task(data)`` take a ``clipa_t5x.demo.data.DemoData`` (folder and
generator parameters; the data is made when its files are first listed).
Importing this module registers everything over ``DemoData()``:
``$CLIPA_DEMO_DATA`` or ``~/.cache/clipa_t5x/demo_shapes``. A gin file calls
the factories where a Task name goes (``gin/runs/demo_cpu.gin``)::

  DEMO_DATA = @demo_data.DemoData()
  demo_data.DemoData.data_dir = '/data/demo'          # None: the default
  pretrain/runner.Stage.mixture_or_task_name = @pretrain/demo.task()
  pretrain/demo.task.text_reduction = 'syntax'        # 'demo_shapes_syntax'
  demo.task.data = %DEMO_DATA

Augmentation differs from CLIPA's recipe on purpose: colour is half of every
label here, so the hue shift is small (±0.02 of the wheel instead of ±0.08,
which turns red into orange), there is no greyscale, and crops keep >= 80% of
the area so that the shape is never cut away (see
experiments/demo_diagnosis/README.md).
"""

import functools
import warnings
from typing import Optional

from clipa_t5x.data import dataset
from clipa_t5x.data import image_ops
from clipa_t5x.data import text_reduction as text_reduction_lib
from clipa_t5x.data.feature_converter import output_features
from clipa_t5x.data.sources import select_features
from clipa_t5x.demo import data as demo_data
from . import common  # relative: works as `tasks` and `clipa_t5x.tasks`

# text reduction -> Task name suffix
TEXT_METHODS = common.TEXT_METHODS
TRAIN_AUGMENTATION = dict(area_range=(0.8, 1.0), colour_jitter=True,
                          jitter_hue=0.02, grayscale_p=0.0)
# Per scene: the glyph generator already draws position, size, colour and
# background per image, so its Tasks resize only, and their deterministic
# stream is replayed from memory after the first epoch (dataset.mark_in_memory):
# the inverse-scaling study's 34 runs would otherwise spend more CPU on
# augmentation than on training. (Measured: a width-64 study run reached 54%
# in 1,000 steps with the shapes' crop + colour jitter, 97.5% without.)
SCENE_AUGMENTATION = {"shapes": TRAIN_AUGMENTATION, "glyphs": None}
MIXTURE_METHOD_RATES = {"truncate": 1.0, "syntax": 1.0}  # the Mixture's Tasks, by text reduction
EVAL_TASK = "demo_shapes_eval"
MIXTURE = "demo_shapes_mix"

# The data set's metadata, under the names existing scripts (experiments/) use.
class_names = demo_data.class_names
class_factors = demo_data.class_factors
templates = demo_data.templates


def task(text_reduction: str = "truncate", data: Optional[demo_data.DemoData] = None) -> str:
  """Registers the demo train Task for ``text_reduction`` over ``data``; returns its name.

  Args:
    text_reduction: ``'truncate'`` (``demo_shapes``), ``'syntax'``,
      ``'random'`` or ``'block'`` (``demo_shapes_<method>``).
    data: where the data lives (None: ``DemoData()``, the default location).
  """
  suffix = common.task_suffix(text_reduction, "demo.task")
  data = data or demo_data.DemoData()
  name = data.name + suffix
  augmentation = SCENE_AUGMENTATION[data.scene]
  common.register_task(
      name, source=data.source(with_labels=False),
      output_features=output_features(),
      preprocessors=common.train_preprocessors(text_reduction, augmentation))
  if common.is_deterministic(text_reduction, augmentation):
    dataset.mark_in_memory(name)  # ~60 MB at 32 px: repeated epochs replay from memory
  return name


def eval_task(data: Optional[demo_data.DemoData] = None) -> str:
  """Registers ``demo_shapes_eval`` (square resize, labels kept) over ``data``; returns it.

  For the glyphs scene (``DemoData(scene='glyphs')``) the name is ``demo_glyphs_eval``.
  """
  data = data or demo_data.DemoData()
  name = f"{data.name}_eval"
  common.register_task(
      name,
      source=data.source(with_labels=True),
      output_features=output_features(),
      preprocessors=[
          functools.partial(select_features, keys=("image", "text", "label")),
          image_ops.eval_image_preprocessor,
          functools.partial(text_reduction_lib.tokenize_and_reduce,
                            method="truncate", key="text"),
      ])
  return name


def register(data: Optional[demo_data.DemoData] = None) -> None:
  """Registers every demo Task and the Mixture over ``data`` (idempotent).

  The shapes scene gets ``demo_shapes*`` and ``demo_shapes_mix``, the glyphs
  scene ``demo_glyphs*`` and ``demo_glyphs_mix``.
  """
  data = data or demo_data.DemoData()
  for method in TEXT_METHODS:
    task(method, data)
  eval_task(data)
  common.register_mixture(f"{data.name}_mix", {f"{data.name}{TEXT_METHODS[m]}": rate
                                               for m, rate in MIXTURE_METHOD_RATES.items()})


def configure(data_dir: Optional[str] = None, **generator_kwargs) -> None:
  """Deprecated: ``register(DemoData(data_dir, **generator_kwargs))``.

  Kept for scripts written before the data location became an argument
  (``experiments/inverse_scaling/run.py``); it keeps no state, it re-registers
  the Tasks.
  """
  warnings.warn("demo.configure is deprecated; use demo.register(demo_data.DemoData(...)) "
                "or the gin Task factories", DeprecationWarning, stacklevel=2)
  register(demo_data.DemoData.from_kwargs(data_dir, **generator_kwargs))


register()
register(demo_data.DemoData(scene="glyphs"))
