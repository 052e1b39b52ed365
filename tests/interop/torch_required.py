"""Imports torch and open_clip for the tests that need them, or skips them.

``pytest.importorskip`` would silently skip a *broken* install in CI, where
the ``[torch]`` extra is meant to be tested. So: without torch/open_clip the
tests skip, unless ``CLIPA_REQUIRE_TORCH=1`` is set, in which case the import
error fails them.
"""

import os
import sys
from typing import Any, Tuple

import pytest

REQUIRE_ENV = "CLIPA_REQUIRE_TORCH"


def require_torch() -> Tuple[Any, Any]:
  """Returns ``(torch, open_clip)``; skips (or fails, see module doc) when unavailable."""
  if "tensorflow" in sys.modules and "triton" not in sys.modules:
    # TensorFlow and Triton both bundle LLVM: importing triton (which torch's
    # dynamo, pulled in by torchvision/open_clip, does when it is installed)
    # after TensorFlow segfaults. Torch on CPU does not need Triton.
    sys.modules["triton"] = None
  try:
    import torch  # pylint: disable=import-outside-toplevel
    import open_clip  # pylint: disable=import-outside-toplevel
  except Exception as e:  # pylint: disable=broad-except  (broken installs raise others too)
    if os.environ.get(REQUIRE_ENV) == "1":
      pytest.fail(f"{REQUIRE_ENV}=1 but torch/open_clip cannot be imported: {e!r}; "
                  "pip install .[torch]")
    pytest.skip(f"torch/open_clip not importable ({e}); pip install .[torch] to run this test")
  torch.set_num_threads(2)  # the test machines share few cores
  return torch, open_clip
