"""Runs a gin/absl entry point's ``main`` in this process, for its error tests.

Spawning ``python -m clipa_t5x.train`` costs a fresh interpreter that imports
JAX and TF: seconds of CPU per test. Configuration errors are raised (one
``error:`` line, exit code 2) before anything compiles, so they are checked
here: the arguments go through the same ``--gin.K=V`` rewriting and flag
parsing as ``cli.run_app``, then ``module.main``. What only a fresh process
shows (start-up noise, ``--help``) keeps its subprocess tests.
"""

import contextlib
import io
import os
from typing import Tuple

import gin
from absl import flags

from clipa_t5x import gin_utils


def run(module, *args) -> Tuple[int, str, str]:
  """``(exit code, stdout, stderr)`` of ``module.main`` on ``args``; 0 when it returns."""
  argv = gin_utils.rewrite_gin_args([module.__name__, *map(str, args)])
  environ = dict(os.environ)  # main sets XLA_FLAGS defaults for a backend that may start later
  out, err, code = io.StringIO(), io.StringIO(), 0
  flags.FLAGS.unparse_flags()
  gin.clear_config()
  try:
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
      module.main(flags.FLAGS(argv))
  except SystemExit as e:
    code = e.code
  finally:
    flags.FLAGS.unparse_flags()
    gin.clear_config()
    os.environ.clear()
    os.environ.update(environ)
  return code, out.getvalue(), err.getvalue()


def error_line(result: Tuple[int, str, str]) -> str:
  """The one ``error:`` line a failed run must end with (exit code 2)."""
  code, out, err = result
  assert code == 2, (code, out, err)
  last = [line for line in err.splitlines() if line.strip()][-1]
  assert last.startswith("error: "), err
  return last
