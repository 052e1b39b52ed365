r"""Evaluates a checkpoint from gin files: ``python -m clipa_t5x.eval``.

Usage (the flags of ``clipa_t5x.train``)::

  python -m clipa_t5x.eval \
    --gin_file=gin/runs/eval_demo.gin \
    --gin.CHECKPOINT_PATH="'/tmp/clipa_demo/finetune'" \
    [--gin.EVAL_OUTPUT_DIR="'/tmp/eval'"] [--gin.EVAL_IMAGE_SIZE=64] [--gin.EVAL_TEXT_LENGTH=32]

Other eval files: ``eval_custom_data.gin`` (your own data: ``EVAL_DATA``,
``CLASS_NAMES``), ``eval_imagenet.gin`` (``IMAGENET_DATA``),
``eval_zeroshot_suite.gin`` (``ZEROSHOT_DATA``).

* ``CHECKPOINT_PATH`` is any model reference (``clipa_t5x.model_refs``): a
  run directory (its last stage), a stage directory (its latest checkpoint),
  one ``.../checkpoint_<step>`` directory, an open_clip folder or an official
  CLIPA JAX ``.npz``.
* The model, the eval resolution and the prompt length are the checkpoint's
  recorded ones; a model gin file (``MODEL_CONFIG``) must agree with it, and
  ``EVAL_IMAGE_SIZE`` / ``EVAL_TEXT_LENGTH`` evaluate at other sizes (a text
  position embedding of another length is resized on restore).
* The entry point is ``evaluation.evaluators.evaluate_checkpoint``; the
  evaluations are ``EVALUATORS`` (``ZeroShotEvalConfig`` and
  ``RetrievalEvalConfig`` of ``clipa_t5x.evaluation.evaluators``).
* Results go to ``<EVAL_OUTPUT_DIR>/results.json`` and TensorBoard summaries
  in the same directory; by default ``eval_<step>/`` next to the checkpoint.
  A table (data set, metric, value) is printed at the end.
* Multi-host: ``--coordinator_address``, ``--process_count``, ``--process_index``.
"""

from typing import List, Optional, Sequence

from absl import flags

from clipa_t5x import cli
from clipa_t5x import gin_utils

FLAGS = flags.FLAGS
cli.define_gin_flags()
flags.DEFINE_string("checkpoint", None, "The model to evaluate: a MODEL_DIR, stage folder or "
                    "checkpoint_<step> folder; the same as --gin.CHECKPOINT_PATH=\"'PATH'\".")
EXAMPLE = """\
clipa-eval --gin_file=gin/runs/eval_demo.gin --checkpoint=runs/demo_cpu/finetune
clipa-eval --gin_file=gin/runs/eval_demo.gin --gin.CHECKPOINT_PATH="'runs/demo_cpu/finetune'" \\
    --gin.EVAL_IMAGE_SIZE=64
"""


def main(argv: Sequence[str]) -> None:
  cli.start_process(argv)
  with cli.config_errors_as_one_line("eval"):
    gin_utils.parse_gin_flags(FLAGS.gin_file, list(FLAGS.gin_bindings) + (
        [f"CHECKPOINT_PATH = {FLAGS.checkpoint!r}"] if FLAGS.checkpoint else []),
        FLAGS.gin_search_paths)
    gin_utils.query_macro("CHECKPOINT_PATH")  # a clear error when it is missing
    gin_utils.make_path_macros_absolute("CHECKPOINT_PATH", "EVAL_OUTPUT_DIR")
    from clipa_t5x.evaluation import evaluators  # after jax.distributed
    gin_utils.configured(evaluators.evaluate_checkpoint)()


def console_main(argv: Optional[List[str]] = None) -> None:
  """Entry point (rewrites ``--gin.K=V`` into ``--gin_bindings``)."""
  cli.run_app(main, argv, example=EXAMPLE)


if __name__ == "__main__":
  console_main()
