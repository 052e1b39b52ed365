"""SIGTERM / SIGINT during training: save a checkpoint, then stop cleanly.

Pod and cluster schedulers announce preemption with SIGTERM and give a grace
period. The handler only sets a flag; the training loop checks it after each
step, writes a checkpoint (model state and data position) and leaves with
``Preempted``, which the runner turns into a clean exit. Rerunning the same
command resumes from that checkpoint. A second SIGINT interrupts at once.
"""

import contextlib
import signal
import threading
from typing import Iterator

_requested = threading.Event()


class Preempted(Exception):
  """Raised by the training loop after it saved the state at ``step``."""

  def __init__(self, stage: str, step: int):
    super().__init__(f"stage {stage!r} stopped at step {step} after a termination signal; "
                     "its checkpoint is saved: rerun the same command to resume.")
    self.stage = stage
    self.step = step


def requested() -> bool:
  """True once SIGTERM or SIGINT arrived inside ``handle_signals``."""
  return _requested.is_set()


@contextlib.contextmanager
def handle_signals() -> Iterator[None]:
  """Within the block, SIGTERM/SIGINT request a save-and-stop instead of killing.

  Only the main thread can install handlers; elsewhere this does nothing.
  """
  if threading.current_thread() is not threading.main_thread():
    yield
    return
  _requested.clear()
  previous = {}

  def on_signal(signum, frame):
    del frame
    if signum == signal.SIGINT and _requested.is_set():
      raise KeyboardInterrupt  # second Ctrl-C: the user really means it
    _requested.set()
    print(f"\nreceived {signal.Signals(signum).name}: saving a checkpoint after this step "
          "(Ctrl-C again to stop at once)", flush=True)

  for signum in (signal.SIGTERM, signal.SIGINT):
    previous[signum] = signal.signal(signum, on_signal)
  try:
    yield
  finally:
    for signum, handler in previous.items():
      signal.signal(signum, handler)
    _requested.clear()
