"""Tests of the torch_required helper: skip without torch, fail when torch is required."""

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import torch_required  # noqa: E402


def test_missing_open_clip_skips(monkeypatch):
  monkeypatch.delenv(torch_required.REQUIRE_ENV, raising=False)
  monkeypatch.setitem(sys.modules, "open_clip", None)  # import open_clip -> ImportError
  with pytest.raises(pytest.skip.Exception, match="pip install"):
    torch_required.require_torch()


def test_missing_open_clip_fails_when_required(monkeypatch):
  monkeypatch.setenv(torch_required.REQUIRE_ENV, "1")
  monkeypatch.setitem(sys.modules, "open_clip", None)
  with pytest.raises(pytest.fail.Exception, match="CLIPA_REQUIRE_TORCH=1"):
    torch_required.require_torch()
