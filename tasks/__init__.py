"""SeqIO Tasks and Mixtures of clipa_t5x (installed as ``clipa_t5x.tasks``).

Registration only: each module's Task factories (``demo.task``,
``datacomp.task``, ``user_data.task``, ...) take where the data lives as
arguments, register the Task over it and return its name, so a gin file calls
them where a Task name goes. Importing this package also registers every Task
at its default location (environment variables / the demo's cache folder), so
a plain name such as ``MIXTURE_OR_TASK_NAME = 'demo_shapes'`` works after
``import clipa_t5x.tasks``. ``train_data.task`` is the recipes' one entry:
it reads ``TRAIN_DATA`` (files, a registered name, or ``{source: rate}``) and
registers what a stage needs. The library logic (sources, where corpora live)
is in ``clipa_t5x.data``; no ``clipa_t5x`` module imports this package.
"""

from . import demo  # noqa: F401  (relative: works as `tasks` and `clipa_t5x.tasks`)
from . import laion  # noqa: F401
from . import datacomp  # noqa: F401  (after laion: its mixtures use laion's Tasks)
from . import user_data  # noqa: F401  (your own data: user_data.task(data=...))
from . import train_data  # noqa: F401  (TRAIN_DATA: files, names or {source: rate})
