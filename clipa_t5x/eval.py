r"""Evaluates a checkpoint from gin files: ``python -m clipa_t5x.eval``.

Usage (the flags of ``clipa_t5x.train``)::

  python -m clipa_t5x.eval \
    --gin_file=gin/runs/eval_demo.gin \
    --gin.CHECKPOINT_PATH="'/tmp/clipa_demo/finetune'" \
    [--gin.EVAL_OUTPUT_DIR="'/tmp/eval'"] [--gin.EVAL_IMAGE_SIZE=64] [--gin.EVAL_TEXT_LENGTH=32]

* ``CHECKPOINT_PATH`` is a stage/model directory (its latest checkpoint is
  used) or one ``.../checkpoint_<step>`` directory, of any stage.
* The model comes from a model gin file (``MODEL_CONFIG``); the eval
  resolution and prompt length from ``EVAL_IMAGE_SIZE`` / ``EVAL_TEXT_LENGTH``
  (a text position embedding of another length is resized on restore).
* The entry point is ``evaluation.evaluators.evaluate_checkpoint``; the
  evaluations are ``EVALUATORS`` (``ZeroShotEvalConfig`` and
  ``RetrievalEvalConfig`` of ``clipa_t5x.evaluation.evaluators``).
* Results go to ``<EVAL_OUTPUT_DIR>/results.json`` and TensorBoard summaries
  in the same directory; by default ``eval_<step>/`` next to the checkpoint.
  A table (data set, metric, value) is printed at the end.
* Multi-host: ``--coordinator_address``, ``--process_count``, ``--process_index``.
"""

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
  try:
    gin_utils.parse_gin_flags(FLAGS.gin_file, FLAGS.gin_bindings, FLAGS.gin_search_paths)
    gin_utils.query_macro("CHECKPOINT_PATH")  # a clear error when it is missing
    from clipa_t5x.evaluation import evaluators  # after jax.distributed
    gin_utils.configured(evaluators.evaluate_checkpoint)()
  except (ValueError, FileNotFoundError) as e:
    logging.debug("eval failed", exc_info=True)
    print(f"error: {gin_utils.error_line(e)}", file=sys.stderr)
    sys.exit(2)


def console_main(argv: List[str] = None) -> None:
  """Entry point (rewrites ``--gin.K=V`` into ``--gin_bindings``)."""
  argv = gin_utils.rewrite_gin_args(argv if argv is not None else sys.argv)
  if not any(a.startswith(("--verbosity", "-v")) for a in argv[1:]):
    argv.append("--verbosity=-1")
  try:
    app.run(main, argv=argv)
  except SystemExit as e:
    if e.code == 1 and any(a.lstrip("-").split("=")[0] in _HELP_FLAGS for a in argv[1:]):
      sys.exit(0)
    raise


if __name__ == "__main__":
  console_main()
