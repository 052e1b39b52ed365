"""Where metrics go: TensorBoard (via CLU), a JSONL file, and a progress line.

Only the first host writes; the others keep the same API so the training loop
has no host branches. CLU's writers pull in TensorFlow, so they are imported
only when a TensorBoard writer is made: the JAX core (trainer, models) imports
this module on machines without TensorFlow, where only the JSONL file is kept.
"""

import json
import logging
import os
import sys
import time
from typing import Mapping, Optional

import jax


def _format_seconds(seconds: float) -> str:
  seconds = int(max(seconds, 0))
  hours, rest = divmod(seconds, 3600)
  minutes, secs = divmod(rest, 60)
  return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class MetricsLogger:
  """Writes scalars to TensorBoard and one JSON object per call to a JSONL file.

  Args:
    log_dir: directory for TensorBoard events (e.g. ``MODEL_DIR/train``).
    jsonl_path: file that gets one ``{"step": …, name: value, …}`` line per call.
    enabled: write anything at all (``True`` on host 0 only, by default).
    tensorboard: also write TensorBoard events. ``None`` (default) writes them
      when CLU and TensorFlow are installed and otherwise logs one warning and
      keeps the JSONL file only; ``True`` requires them; ``False`` never.
  """

  def __init__(self, log_dir: str, jsonl_path: str, enabled: Optional[bool] = None,
               tensorboard: Optional[bool] = None):
    self.enabled = jax.process_index() == 0 if enabled is None else enabled
    self._jsonl_path = jsonl_path
    self._writer = (_tensorboard_writer(log_dir, required=tensorboard)
                    if self.enabled and tensorboard is not False else None)

  def write(self, step: int, scalars: Mapping[str, float]) -> None:
    """Logs ``scalars`` at ``step``; values must be Python or numpy scalars."""
    if not self.enabled:
      return
    clean = {k: float(v) for k, v in scalars.items()}
    if self._writer is not None:
      self._writer.write_scalars(step, clean)
    os.makedirs(os.path.dirname(self._jsonl_path) or ".", exist_ok=True)
    with open(self._jsonl_path, "a") as f:
      f.write(json.dumps({"step": int(step), **clean}) + "\n")

  def flush(self) -> None:
    if self._writer is not None:
      self._writer.flush()

  def close(self) -> None:
    if self._writer is not None:
      self._writer.close()
      self._writer = None


def _tensorboard_writer(log_dir: str, required: Optional[bool]):
  """CLU's TensorBoard writer, or ``None`` when CLU/TF are missing and not required."""
  try:
    from clu import metric_writers  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    if required:
      raise ImportError(f"TensorBoard logging needs clu and tensorflow ({e}); install them, "
                        "or pass tensorboard=False to keep the JSONL log only.") from e
    logging.warning("clu/tensorflow not installed (%s): metrics go to %s only, "
                    "no TensorBoard events.", e, "the JSONL file")
    return None
  return metric_writers.create_default_writer(log_dir, asynchronous=False)


class ProgressLine:
  """A one-line progress report with ETA, printed on host 0."""

  def __init__(self, name: str, first_step: int, total_steps: int, stream=None):
    self._name = name
    self._first_step = first_step
    self._total = total_steps
    self._start = time.time()
    self._stream = stream

  def report(self, step: int, loss: float, samples_per_second: float) -> None:
    if jax.process_index() != 0:
      return
    done = step - self._first_step
    elapsed = time.time() - self._start
    eta = elapsed / done * (self._total - step) if done > 0 else float("nan")
    eta_text = _format_seconds(eta) if done > 0 else "?"
    print(f"[{self._name}] step {step}/{self._total}  loss {loss:.4f}  "
          f"{samples_per_second:,.0f} samples/s  elapsed {_format_seconds(elapsed)}  "
          f"ETA {eta_text}", file=self._stream or sys.stdout, flush=True)
