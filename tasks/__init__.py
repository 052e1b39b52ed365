"""SeqIO Tasks and Mixtures of clipa_t5x (installed as ``clipa_t5x.tasks``).

Importing this package registers every Task; t5x-style gin files import it
(``import clipa_t5x.tasks``) before naming ``MIXTURE_OR_TASK_NAME``.
"""

from . import demo  # noqa: F401  (relative: works as `tasks` and `clipa_t5x.tasks`)
from . import laion  # noqa: F401
from . import datacomp  # noqa: F401  (after laion: its mixtures use laion's Tasks)
from . import user_data  # noqa: F401  (your own data: user_data.task(data=...))
