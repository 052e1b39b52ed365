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
* ``--check`` runs every check of every stage (settings, data, ``init_from``,
  memory per device, sharding), prints the plan and memory tables and exits 0
  (all good) or 2 (one ``error:`` line), training nothing.
* A setting given on the command line that nothing reads (a misspelt macro)
  stops the run, naming the closest setting that exists.
* Multi-host: run the same command on every host with ``--distributed`` (TPU
  pods, Slurm, Open MPI: jax finds the addresses) or with
  ``--coordinator_address=host:port --process_count=N --process_index=i``.
"""

from typing import List, Optional, Sequence

from absl import flags

from clipa_t5x import cli
from clipa_t5x import gin_utils

FLAGS = flags.FLAGS
cli.define_gin_flags()
flags.DEFINE_bool("allow_config_change", False,
                  "Continue a MODEL_DIR whose config.gin differs from this run's config.")
flags.DEFINE_bool("check", False,
                  "Dry run: check every stage (settings, data, init_from, memory per device, "
                  "sharding), print the plan with memory per device, exit 0 or 2; train nothing.")
EXAMPLE = """\
clipa-train --gin_file=gin/runs/demo_cpu.gin --gin.MODEL_DIR="'runs/demo_cpu'"
clipa-train --gin_file=gin/runs/custom_data.gin --gin.MODEL_DIR="'runs/my_data'" \\
    --gin.TRAIN_DATA="'my_shards/{00000..00009}.tar'"
clipa-train --check --gin_file=gin/runs/clipav2_h14_70_224.gin --gin.MODEL_DIR="'gs://bucket/h14'"
"""


def main(argv: Sequence[str]) -> None:
  cli.start_process(argv)
  from clipa_t5x import runner  # after jax.distributed, which must come first
  with cli.config_errors_as_one_line("training"):
    gin_utils.parse_gin_flags(FLAGS.gin_file, FLAGS.gin_bindings, FLAGS.gin_search_paths)
    gin_utils.check_unused_bindings(FLAGS.gin_bindings, [runner.run], ["MODEL_DIR"])
    run = gin_utils.configured(runner.run)
    if FLAGS.check:
      from clipa_t5x import plan  # pylint: disable=import-outside-toplevel
      print(plan.format_plan(plan.plan(*plan.recipe_from_gin(), plan.device_from_gin())),
            flush=True)
      run(check_only=True)
      print("check: every stage passed; nothing was trained.", flush=True)
      return
    model_dir = gin_utils.query_macro("MODEL_DIR")
    runner.check_model_dir_writable(model_dir)
    if runner.has_training_state(model_dir):  # a config that never trained is replaced
      gin_utils.check_same_config(model_dir, FLAGS.allow_config_change)
    gin_utils.write_config(model_dir)
    run()


def console_main(argv: Optional[List[str]] = None) -> None:
  """Entry point (rewrites ``--gin.K=V`` into ``--gin_bindings``)."""
  cli.run_app(main, argv, example=EXAMPLE)


if __name__ == "__main__":
  console_main()
