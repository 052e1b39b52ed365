"""What the command-line entry points share: t5x's gin flags and error style.

``train``, ``eval`` and ``plan`` take the same ``--gin_file`` /
``--gin.KEY=VALUE`` / ``--gin_search_paths`` flags, report configuration
mistakes in one ``error:`` line (exit code 2) and treat ``--help`` as success.
"""

import contextlib
import json
import os
import sys
from typing import Any, Callable, Iterator, List, Optional, Sequence

from absl import app
from absl import flags
from absl import logging

from clipa_t5x import gin_utils

_HELP_FLAGS = ("help", "helpshort", "helpfull", "?")


def define_gin_flags(gin_file_help: str = "Gin config files, applied in order.",
                     multihost: bool = True) -> None:
  """Defines ``--gin_file``, ``--gin_bindings``, ``--gin_search_paths`` (+ multi-host flags)."""
  flags.DEFINE_multi_string("gin_file", [], gin_file_help)
  flags.DEFINE_multi_string("gin_bindings", [], "Gin bindings, applied after the files.")
  flags.DEFINE_list("gin_search_paths", [], "Directories searched for relative gin files.")
  if multihost:
    flags.DEFINE_string("coordinator_address", None, "Multi-host: address:port of process 0.")
    flags.DEFINE_integer("process_count", None, "Multi-host: number of processes.")
    flags.DEFINE_integer("process_index", None, "Multi-host: index of this process.")
    flags.DEFINE_bool("distributed", False, "Multi-host with the addresses found by jax "
                      "(TPU pods, Slurm, Open MPI): jax.distributed.initialize().")


def keep_tensorflow_off_accelerators() -> None:
  """The input pipeline runs on the host: GPUs stay JAX's alone (as t5x does)."""
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  tf.config.set_visible_devices([], "GPU")


def check_no_extra_args(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments {list(argv[1:])}; see --help.")


@contextlib.contextmanager
def config_errors_as_one_line(what: str = "run") -> Iterator[None]:
  """Turns configuration errors into one ``error:`` line on stderr and exit code 2.

  The traceback still reaches the log with ``--verbosity=1``.
  """
  try:
    yield
  except (ValueError, FileNotFoundError) as e:
    logging.debug("%s failed", what, exc_info=True)
    print(f"error: {gin_utils.error_line(e)}", file=sys.stderr)
    sys.exit(2)


def exit_code(command: Callable[[], Any]) -> int:
  """Runs ``command``; bad input becomes one ``error:`` line on stderr and exit code 2.

  For the argparse tools (``infer``, ``convert``), whose ``main`` returns the
  code instead of exiting.
  """
  try:
    command()
  except (ValueError, FileNotFoundError, PermissionError) as e:
    print(f"error: {gin_utils.error_line(e) or type(e).__name__}", file=sys.stderr)
    return 2
  return 0


def run_app(main: Callable[[Sequence[str]], None], argv: Optional[List[str]] = None,
            quiet: bool = True) -> None:
  """``absl.app.run`` with ``--gin.K=V`` rewriting, quiet logs and ``--help`` exiting 0."""
  argv = gin_utils.rewrite_gin_args(argv if argv is not None else sys.argv)
  if quiet and not any(a.startswith(("--verbosity", "-v")) for a in argv[1:]):
    argv.append("--verbosity=-1")  # warnings and errors only; --verbosity=0 for INFO logs
  try:
    app.run(main, argv=argv)
  except SystemExit as e:
    # absl exits with 1 after printing --help; asking for help is not a failure.
    if e.code == 1 and any(a.lstrip("-").split("=")[0] in _HELP_FLAGS for a in argv[1:]):
      sys.exit(0)
    raise


def format_table(rows: Sequence[Sequence[str]]) -> str:
  """Left-aligned text table; the first row is the header, ruled below."""
  widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
  out = []
  for i, row in enumerate(rows):
    out.append("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
    if i == 0:
      out.append("  ".join("-" * w for w in widths))
  return "\n".join(out)


def write_json_atomic(path: str, value: Any, indent: int = 2, sort_keys: bool = False) -> None:
  """Writes JSON through a temp file and a rename: never a half-written file."""
  tmp = f"{path}.tmp"
  with open(tmp, "w") as f:
    json.dump(value, f, indent=indent, sort_keys=sort_keys)
  os.replace(tmp, path)
