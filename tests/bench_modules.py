"""Loads a bench/ script as a module for its tests (bench/ is not a package)."""

import importlib.util
import os
import sys

BENCH = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "bench"))


def load(name: str):
  """``bench/<name>.py`` as a fresh module; bench/ goes on sys.path for its sibling imports."""
  if BENCH not in sys.path:
    sys.path.insert(0, BENCH)
  spec = importlib.util.spec_from_file_location(name, os.path.join(BENCH, f"{name}.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module
