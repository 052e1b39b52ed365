"""SeqIO train Tasks over your own image-text data: ``user_data`` and ``user_data_syntax``.

``task(data=...)`` registers a Task reading ``data`` and returns its name, so
a gin file puts the call where a Task name goes (``gin/runs/custom_data.gin``)::

  pretrain/runner.Stage.mixture_or_task_name = @pretrain/user_data.task()
  pretrain/user_data.task:
    data = %TRAIN_DATA                    # '/data/shards/{00000..00099}.tar'
    text_reduction = 'syntax'             # registers 'user_data_syntax'

The location, format and keys are the task's arguments (no module state):
brace ranges, globs, comma-separated lists, local or ``gs://``; tar,
TFRecord, CSV or TSV inferred from the names (``clipa_t5x.data.user_data``).
Images get CLIPA's augmentation (as ``laion2b``); captions are cut to the
stage's text length by ``text_reduction``.
"""

from typing import Any, Mapping, Optional, Sequence, Union

from clipa_t5x.data import mixtures
from clipa_t5x.data import user_data as user_data_lib
from clipa_t5x.data.feature_converter import output_features
from . import common  # relative: works as `tasks` and `clipa_t5x.tasks`
from . import laion

TEXT_METHODS = common.TEXT_METHODS


def task(data: Union[str, Sequence[str]],
         text_reduction: str = "truncate",
         format: Optional[str] = None,  # pylint: disable=redefined-builtin
         caption_key: Optional[str] = None,
         image_key: Optional[str] = None,
         image_root: Optional[str] = None,
         augmentation: Optional[Mapping[str, Any]] = None,
         name: Optional[str] = None,
         setting: str = "TRAIN_DATA") -> str:
  """Registers a train Task over ``data`` and returns its name.

  Args:
    data: the files: ``'dir/{00000..00099}.tar'``, globs, ``'a/*.tar,b/*.tar'``,
      ``gs://`` paths, or a list of these.
    text_reduction: ``'truncate'``, ``'syntax'``, ``'random'`` or ``'block'``.
    format: ``'webdataset'``/``'tar'``, ``'tfrecord'``, ``'csv'``, ``'tsv'``;
      None infers it from the file names.
    caption_key: tar member extension / TFRecord feature / CSV column of the
      caption (defaults ``txt`` / ``txt`` / ``title``).
    image_key: the same for the image (defaults ``jpg`` (then jpeg, png, webp) /
      ``jpg`` / ``filepath``).
    image_root: CSV only: base of relative image paths (default: the CSV's folder).
    augmentation: ``train_image_preprocessor`` arguments (default CLIPA's).
    name: Task name; default ``'user_data'`` plus ``'_syntax'`` (etc.) for
      the non-truncating reductions.
    setting: the user-facing name of ``data`` in messages.

  Returns:
    The registered Task's name (re-registering a name replaces it).
  """
  name = name or "user_data" + common.task_suffix(text_reduction, "user_data.task")
  source = user_data_lib.make_source(
      data, split="train", format=format, caption_key=caption_key, image_key=image_key,
      image_root=image_root, setting=setting)
  mixtures.record_origin(name, data if isinstance(data, str) else ",".join(data))
  common.register_task(
      name, source=source, output_features=output_features(),
      preprocessors=common.train_preprocessors(
          text_reduction, dict(augmentation or laion.TRAIN_AUGMENTATION)))
  return name
