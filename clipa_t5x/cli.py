"""What the command-line entry points share: flags, help, names and error style.

``train``, ``eval`` and ``plan`` take the same ``--gin_file`` /
``--gin.KEY=VALUE`` / ``--gin_search_paths`` flags, report configuration
mistakes in one ``error:`` line (exit code 2) and treat ``--help`` as success.
``infer``, ``convert`` and ``make_shards`` build their parsers with
``ArgumentParser`` here. Every ``--help`` shows each option's default and ends
with an example; the flag names are one vocabulary (see ``ArgumentParser``).
"""

import contextlib
import importlib.abc
import importlib.util
import os
import re
import sys
import tempfile
import textwrap
from typing import Any, Callable, Iterator, List, Optional, Sequence

from absl import app
from absl import flags
from absl import logging

from clipa_t5x import gin_utils
from clipa_t5x import xla_flags
from clipa_t5x.cli_help import ArgumentParser  # noqa: F401  (the argparse tools' parser)
from clipa_t5x.cli_help import default_text
from clipa_t5x.cli_help import example_epilog
from clipa_t5x.data import image_files

_HELP_FLAGS = ("help", "helpshort", "helpfull", "?")


def define_gin_flags(gin_file_help: str = "Gin config files, applied in order.",
                     multihost: bool = True) -> None:
  """Defines ``--gin_file``, ``--gin_bindings``, ``--gin_search_paths`` (+ multi-host flags).

  A flag another entry point already defined is kept, so entry points can be
  imported together (the tests run their ``main`` in one process).
  """
  def define(kind, name, default, text):
    if name not in flags.FLAGS:
      getattr(flags, f"DEFINE_{kind}")(name, default, text)
  define("multi_string", "gin_file", [], gin_file_help)
  define("multi_string", "gin_bindings", [], "Gin bindings, applied after the files.")
  define("list", "gin_search_paths", [], "Directories searched for relative gin files.")
  if multihost:
    define("string", "coordinator_address", None, "Multi-host: address:port of process 0.")
    define("integer", "process_count", None, "Multi-host: number of processes.")
    define("integer", "process_index", None, "Multi-host: index of this process.")
    define("bool", "distributed", False, "Multi-host with the addresses found by jax "
           "(TPU pods, Slurm, Open MPI): jax.distributed.initialize().")


# What TensorFlow's C++ side prints while it loads, before any log level applies (absl's
# InitializeLog comes later): INFO lines (the oneDNN notice, "Could not find cuda drivers")
# and, on a machine without a GPU, "E0000 ... failed call to cuInit". None of it is
# actionable (TF is kept off accelerators anyway); it only reads like an error.
_TF_STARTUP_NOISE = re.compile(
    r"WARNING: All log messages before absl::InitializeLog\(\) is called"
    r"|I\d{4} [\d:.]+\s+\d+ [^\]]+\] "
    r"|E\d{4} [\d:.]+\s+\d+ [^\]]+\] .*cuInit")


@contextlib.contextmanager
def tensorflow_startup_noise_hidden() -> Iterator[None]:
  """Holds back what is written to file descriptor 2 inside, then replays all but TF's noise.

  At the file-descriptor level, since the noise comes from C++. Everything else written
  meanwhile (Python warnings, real C++ warnings and errors) is shown afterwards, in order.
  """
  sys.stderr.flush()
  try:
    saved = os.dup(2)
  except OSError:  # no stderr to filter
    yield
    return
  with tempfile.TemporaryFile() as held:
    os.dup2(held.fileno(), 2)
    try:
      yield
    finally:
      sys.stderr.flush()
      os.dup2(saved, 2)
      os.close(saved)
      held.seek(0)
      lines = held.read().decode("utf-8", "replace").splitlines(keepends=True)
      kept = "".join(line for line in lines if not _TF_STARTUP_NOISE.match(line))
      if kept:
        sys.stderr.write(kept)
        sys.stderr.flush()


class _QuietTensorFlowImport(importlib.abc.MetaPathFinder):
  """Imports TensorFlow (whenever something first does) with its start-up noise hidden."""

  def __init__(self):
    self._finding = False

  def find_spec(self, fullname, path=None, target=None):  # pylint: disable=unused-argument
    if fullname != "tensorflow" or self._finding:
      return None
    self._finding = True
    try:
      spec = importlib.util.find_spec(fullname)  # the finders after this one
    finally:
      self._finding = False
    if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
      return spec
    load = spec.loader.exec_module

    def exec_module(module):
      with tensorflow_startup_noise_hidden():
        load(module)
        # Listing devices is what calls cuInit: done here, inside the filter, and TF
        # never takes accelerator memory from JAX.
        image_files.keep_tensorflow_on_host()  # ``module`` is sys.modules' tensorflow
    spec.loader.exec_module = exec_module
    return spec


def quiet_startup() -> None:
  """Keeps the console to what matters: call first in every entry point.

  TensorFlow's INFO logs are off (warnings and errors still show; a
  ``TF_CPP_MIN_LOG_LEVEL`` already set wins), and its start-up lines are
  filtered when it is first imported, by whichever module imports it.
  """
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
  if "tensorflow" in sys.modules:
    return
  if not any(isinstance(f, _QuietTensorFlowImport) for f in sys.meta_path):
    sys.meta_path.insert(0, _QuietTensorFlowImport())


def check_no_extra_args(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments {list(argv[1:])}; see --help.")


def start_process(argv: Sequence[str]) -> None:
  """What a gin entry point with multi-host flags does first, in this order.

  No stray arguments; the default XLA flags before any JAX backend starts;
  TensorFlow kept on the host before its first op; then ``jax.distributed``
  from the multi-host flags (before anything else touches JAX).
  """
  check_no_extra_args(argv)
  xla_flags.apply_default_flags()
  image_files.keep_tensorflow_on_host()
  f = flags.FLAGS
  gin_utils.maybe_initialize_distributed(f.coordinator_address, f.process_count,
                                         f.process_index, f.distributed)


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


def _entry_point_flag_modules(main_module: str) -> List[str]:
  # The shared flags and the entry point's own (absl names a module run with -m by its path).
  own = sys.argv[0] if main_module == "__main__" else main_module
  return [m for m in ("clipa_t5x.cli", own) if m in flags.FLAGS.flags_by_module_dict()]


def run_app(main: Callable[[Sequence[str]], None], argv: Optional[List[str]] = None,
            quiet: bool = True, example: Optional[str] = None) -> None:
  """``absl.app.run`` with ``--gin.K=V`` rewriting, quiet logs and ``--help`` exiting 0.

  ``--help`` (``-h``, ``--helpshort``) prints the entry point's docstring, its
  flags with their defaults and ``example``; ``--helpfull`` is absl's.
  """
  quiet_startup()
  argv = gin_utils.rewrite_gin_args(argv if argv is not None else sys.argv)
  if example is not None and any(a in ("--help", "-h", "--helpshort", "-?") for a in argv[1:]):
    doc = sys.modules[main.__module__].__doc__ or ""
    sys.stdout.write(absl_help(doc, example, _entry_point_flag_modules(main.__module__)))
    sys.exit(0)
  if quiet and not any(a.startswith(("--verbosity", "-v")) for a in argv[1:]):
    argv.append("--verbosity=-1")  # warnings and errors only; --verbosity=0 for INFO logs
  try:
    app.run(main, argv=argv)
  except SystemExit as e:
    # absl exits with 1 after printing --help; asking for help is not a failure.
    if e.code == 1 and any(a.lstrip("-").split("=")[0] in _HELP_FLAGS for a in argv[1:]):
      sys.exit(0)
    raise


def absl_help(doc: str, example: str, modules: Sequence[str]) -> str:
  """``--help`` of an absl entry point: its description, its flags with defaults, an example.

  Args:
    doc: the module docstring (the description).
    example: the command(s) the help ends with.
    modules: names of the modules whose flags are shown (absl's own are left out).
  """
  by_module = flags.FLAGS.flags_by_module_dict()
  lines = [doc.strip(), "", "flags:"]
  for module in modules:
    for flag in sorted(by_module.get(module, []), key=lambda f: f.name):
      is_bool = isinstance(flag, flags.BooleanFlag)
      name = f"--[no]{flag.name}" if is_bool else f"--{flag.name}"
      default = default_text(flag.default)
      if flag.name == "gin_bindings":  # the t5x spelling users type
        name = "--gin.KEY=VALUE / --gin_bindings"
      text = re.sub(r"\.?;\s*repeat this option to specify a list of values", " (repeatable).",
                    flag.help)
      lines.append(textwrap.fill(f"{name}: {text} (default: {default})", width=88,
                                 initial_indent="  ", subsequent_indent="      "))
  lines += ["", example_epilog(example)]
  return "\n".join(lines) + "\n"
