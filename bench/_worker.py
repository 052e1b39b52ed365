"""Runs a bench script's worker mode in a subprocess with a time limit (gpu_check, gpu_sweep).

A worker is ``python SCRIPT --worker JSON``: its own process, so it owns the
accelerator's memory and its own ``XLA_FLAGS``, and a crash or an overrun is
reported by the driver instead of ending it.
"""

import json
import subprocess
import sys
import tempfile
from typing import Any, Dict, Tuple


def run(script: str, spec: Dict[str, Any], env: Dict[str, str], timeout_s: float
        ) -> Tuple[str, str, str]:
  """``(stdout, stderr, problem)`` of ``python script --worker json(spec)``.

  ``problem`` is '' after a clean exit, else says how the worker ended (its
  exit code, or that it was killed at ``timeout_s``).
  """
  with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
    proc = subprocess.Popen([sys.executable, script, "--worker", json.dumps(spec)],
                            stdout=out, stderr=err, text=True, env=env)
    try:
      proc.wait(timeout=timeout_s)
      problem = "" if proc.returncode == 0 else f"worker exited with code {proc.returncode}"
    except subprocess.TimeoutExpired:
      proc.kill()
      proc.wait()
      problem = f"timed out after {timeout_s:.0f} s"
    out.seek(0)
    err.seek(0)
    return out.read(), err.read(), problem
