r"""Trains a CLIPA recipe from gin files: ``python -m clipa_t5x.train``.

Usage (t5x's flag conventions)::

  python -m clipa_t5x.train \
    --gin_file=gin/runs/demo_cpu.gin \
    --gin.MODEL_DIR="'/tmp/clipa_demo'" \
    [--gin_file=more.gin ...] [--gin.KEY=VALUE ...] [--gin_search_paths=dir1,dir2]

* ``--gin_file`` is repeatable; later files override earlier ones.
* ``--gin.KEY=VALUE`` is a binding applied after the files (strings need
  inner quotes: ``--gin.MODEL_DIR="'/path'"``); ``--gin_bindings=K=V`` too.
* Relative gin paths (and ``include`` lines) are looked up in the current
  directory, in ``--gin_search_paths``, then in the package's ``gin/`` folder.
* The run's entry point is ``clipa_t5x.runner.run``; a run file binds its
  ``model_dir``, ``model_config``, ``stages``, ``partitioner``, … and
  ``MODEL_DIR`` is required. The resolved config is written to
  ``MODEL_DIR/config.gin``.
* Multi-host: pass ``--coordinator_address=host:port --process_count=N
  --process_index=i`` (on TPU pods and Slurm jax finds them itself).
"""

import os
import sys
from typing import List, Sequence

from absl import app
from absl import flags
from absl import logging

from clipa_t5x import gin_utils

FLAGS = flags.FLAGS
_HELP_FLAGS = ("help", "helpshort", "helpfull", "?")
flags.DEFINE_multi_string("gin_file", [], "Gin config files, applied in order.")
flags.DEFINE_multi_string("gin_bindings", [], "Gin bindings, applied after the files.")
flags.DEFINE_list("gin_search_paths", [], "Directories searched for relative gin files.")
flags.DEFINE_string("coordinator_address", None, "Multi-host: address:port of process 0.")
flags.DEFINE_integer("process_count", None, "Multi-host: number of processes.")
flags.DEFINE_integer("process_index", None, "Multi-host: index of this process.")


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments {list(argv[1:])}; see --help.")
  gin_utils.maybe_initialize_distributed(FLAGS.coordinator_address, FLAGS.process_count,
                                         FLAGS.process_index)
  from clipa_t5x import runner  # after jax.distributed, which must come first
  try:
    gin_utils.parse_gin_flags(FLAGS.gin_file, FLAGS.gin_bindings, FLAGS.gin_search_paths)
    run = gin_utils.configured(runner.run)
    model_dir = gin_utils.query_macro("MODEL_DIR")
    runner.check_model_dir_writable(model_dir)
    gin_utils.write_config(model_dir)
    run()
  except (ValueError, FileNotFoundError) as e:
    # Configuration mistakes: one clear line; the traceback only with --verbosity=1.
    logging.debug("run failed", exc_info=True)
    print(f"error: {gin_utils.error_line(e)}", file=sys.stderr)
    sys.exit(2)


def console_main(argv: List[str] = None) -> None:
  """Entry point (rewrites ``--gin.K=V`` into ``--gin_bindings``)."""
  argv = gin_utils.rewrite_gin_args(argv if argv is not None else sys.argv)
  if not any(a.startswith(("--verbosity", "-v")) for a in argv[1:]):
    argv.append("--verbosity=-1")  # warnings and errors only; --verbosity=0 for INFO logs
  try:
    app.run(main, argv=argv)
  except SystemExit as e:
    # absl exits with 1 after printing --help; asking for help is not a failure.
    if e.code == 1 and any(a.lstrip("-").split("=")[0] in _HELP_FLAGS for a in argv[1:]):
      sys.exit(0)
    raise


if __name__ == "__main__":
  console_main()
