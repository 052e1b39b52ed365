"""Runs a subprocess as if some packages were not installed (for the tests).

The JAX core must work on accelerator images that have no TensorFlow, seqio,
gin or clu. ``hidden_packages_env`` gives an environment whose
``sitecustomize`` hides packages from every import finder: ``import`` raises
``ModuleNotFoundError`` and ``importlib.util.find_spec`` returns ``None``,
exactly as when they are absent (libraries that probe for optional packages,
such as torch, then carry on).
"""

import os
import textwrap

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TESTS = os.path.join(REPO, "tests")
NOT_IN_CORE = ("tensorflow", "seqio", "gin", "clu", "tensorflow_text", "tensorflow_datasets")
HIDE_PACKAGES = textwrap.dedent('''
    import sys
    _HIDDEN = {hidden!r}

    class _Hiding:
      def __init__(self, inner):
        self._inner = inner

      def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in _HIDDEN:
          return None
        find = getattr(self._inner, "find_spec", None)
        return find(name, path, target) if find else None

      def __getattr__(self, attr):
        return getattr(self._inner, attr)

    sys.meta_path[:] = [_Hiding(f) for f in sys.meta_path]
''')


def hidden_packages_env(tmp_path, hidden=NOT_IN_CORE):
  """Environment for a subprocess in which ``hidden`` packages cannot be imported."""
  site = tmp_path / "hide_packages"
  site.mkdir(exist_ok=True)
  (site / "sitecustomize.py").write_text(HIDE_PACKAGES.format(hidden=tuple(hidden)))
  env = dict(os.environ)
  env["PYTHONPATH"] = os.pathsep.join([str(site), REPO, TESTS, env.get("PYTHONPATH", "")])
  return env


