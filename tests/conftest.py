"""Test-wide settings: four fake CPU devices so mesh tests can run anywhere."""
import os

# Must be set before jax is imported anywhere in the test session.
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=4")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

import sys

# Shared test builders (tests/helpers.py) importable as ``import helpers``.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
