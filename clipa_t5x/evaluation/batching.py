"""Fixed-size encoder batches and host synchronisation, shared by every evaluation.

Encoders are jitted (and partitioned), so they are always called with exactly
``batch_size`` rows: a short batch is padded by repeating its last row and the
padded outputs are dropped. Under multi-host evaluation every host must call a
partitioned encoder equally often, or the collective hangs: ``synchronized``
feeds a host that has run out of data dummy batches while others still have
some, and ``allgather`` / ``gather_rows`` combine the hosts' results. On one
host all of this is a pass-through.
"""

from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

import jax
import numpy as np

EncodeFn = Callable[[np.ndarray], Any]


# ------------------------------------------------------------------ hosts
def allgather(x: np.ndarray) -> np.ndarray:
  """[P, ...] stack of every host's ``x`` (equal shapes); [1, ...] on one host."""
  if jax.process_count() == 1:
    return np.asarray(x)[None]
  from jax.experimental import multihost_utils  # pylint: disable=import-outside-toplevel
  return np.asarray(multihost_utils.process_allgather(np.asarray(x)))


def gather_rows(x: np.ndarray) -> List[np.ndarray]:
  """Every host's rows of ``x`` (row counts may differ), in host order."""
  if jax.process_count() == 1:
    return [x]
  sizes = allgather(np.int64(x.shape[0]))
  padded = np.zeros((int(sizes.max()),) + x.shape[1:], x.dtype)
  padded[:x.shape[0]] = x
  gathered = allgather(padded)
  return [gathered[i, :int(n)] for i, n in enumerate(sizes)]


def any_host(flag: bool) -> bool:
  """Whether ``flag`` is True on some host."""
  return bool(allgather(np.int32(flag)).any()) if jax.process_count() > 1 else flag


def synchronized(batches: Iterable[Any], dummy: Callable[[], Any]) -> Iterator[Any]:
  """``batches``, then ``dummy()`` while other hosts still have batches."""
  for batch in batches:
    any_host(True)
    yield batch
  while any_host(False):
    yield dummy()


# ---------------------------------------------------------------- batches
def pad_rows(x: np.ndarray, rows: int) -> np.ndarray:
  """Pads ``x`` to ``rows`` rows by repeating its last row (real data, no NaN risk)."""
  if x.shape[0] == rows:
    return x
  pad = np.repeat(x[-1:], rows - x.shape[0], axis=0)
  return np.concatenate([x, pad], axis=0)


def check_features(out: Any, rows: int, what: str) -> np.ndarray:
  """``out`` as a numpy ``[rows, D]`` array; ValueError naming ``what`` otherwise."""
  out = np.asarray(out)
  if out.ndim != 2 or out.shape[0] != rows:
    raise ValueError(
        f"{what} must return [batch_size={rows}, D] features, got shape {out.shape}.")
  return out


def encode_batches(fn: EncodeFn, batches: Iterable[Tuple[np.ndarray, Any]], batch_size: int,
                   what: str, dummy: Tuple[np.ndarray, Any]) -> Iterator[Tuple[np.ndarray, Any]]:
  """``(features [b, D], payload)`` of each ``(inputs [b, ...], payload)`` of ``batches``.

  Every call of ``fn`` gets exactly ``batch_size`` rows (b <= batch_size; the
  rest padded); the next batch is dispatched before the previous output is
  pulled to the host. Calls are host-synchronised: after its own batches, a
  host feeds ``dummy`` (one row of inputs, and a payload) while other hosts
  still have batches, and gets ``[0, D]`` features for it.
  """
  pending = None  # (device output, real rows, payload)
  for inputs, payload in synchronized(batches, lambda: (dummy[0][:0], dummy[1])):
    out = fn(pad_rows(inputs if inputs.shape[0] else dummy[0], batch_size))
    if pending is not None:
      yield check_features(pending[0], batch_size, what)[:pending[1]], pending[2]
    pending = (out, inputs.shape[0], payload)
  if pending is not None:
    yield check_features(pending[0], batch_size, what)[:pending[1]], pending[2]


def encode_in_batches(fn: EncodeFn, inputs: np.ndarray, batch_size: int,
                      what: str = "encoder") -> np.ndarray:
  """Runs ``fn`` over ``inputs`` in host-synchronised batches of exactly ``batch_size`` rows.

  Args:
    fn: maps [batch_size, ...] to [batch_size, D] (numpy or jax arrays).
    inputs: [N, ...]; N may be 0 on a host while other hosts have rows.
    batch_size: rows per call; the last batch is padded by repetition.
    what: name used in error messages.

  Returns:
    [N, D] numpy features; padded rows are dropped.
  """
  chunks = ((inputs[s:s + batch_size], None) for s in range(0, inputs.shape[0], batch_size))
  dummy = (np.zeros((1,) + inputs.shape[1:], inputs.dtype), None)
  outs = [f for f, _ in encode_batches(fn, chunks, batch_size, what, dummy)]
  if not outs:
    raise ValueError(f"{what}: nothing to encode (0 rows).")
  return np.concatenate(outs, axis=0)


def check_sizes(num_examples: Optional[int], **sizes: Any) -> None:
  """Every ``sizes`` value a positive int; ``num_examples`` one too, or None."""
  for arg, value in sizes.items():
    if not isinstance(value, (int, np.integer)) or value < 1:
      raise ValueError(f"{arg} must be a positive int, got {value!r}.")
  if num_examples is not None and (not isinstance(num_examples, (int, np.integer))
                                   or num_examples < 1):
    raise ValueError(f"num_examples must be a positive int or None, got {num_examples!r}.")


def chunks(items: Iterable[Any], size: int) -> Iterator[List[Any]]:
  """Lists of ``size`` consecutive items; the last one may be shorter."""
  chunk: List[Any] = []
  for item in items:
    chunk.append(item)
    if len(chunk) == size:
      yield chunk
      chunk = []
  if chunk:
    yield chunk


def example_batches(examples: Iterable[Dict[str, Any]], batch_size: int,
                    num_examples: Optional[int], required: Sequence[str]
                    ) -> Iterator[List[Dict[str, Any]]]:
  """Groups examples into lists of at most ``batch_size`` (the first ``num_examples``)."""
  def checked():
    for seen, example in enumerate(examples):
      if num_examples is not None and seen >= num_examples:
        return
      if any(k not in example for k in required):
        raise ValueError(f"eval examples must have {' and '.join(map(repr, required))}, got "
                         f"keys {sorted(example)}.")
      yield example
  return chunks(checked(), batch_size)


def stack_images(batch: Sequence[Dict[str, Any]]) -> np.ndarray:
  """``[b, H, W, 3]`` from the examples' ``image``; one shape required."""
  images = [np.asarray(ex["image"]) for ex in batch]
  shapes = {im.shape for im in images}
  if len(shapes) != 1:
    raise ValueError(
        f"all images must share one shape to be batched, got {sorted(shapes)}; resize "
        "them in the eval pipeline.")
  return np.stack(images)
