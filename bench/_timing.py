"""Timing helpers shared by the training-speed benchmarks.

Every benchmark here compares several things (settings, frameworks) on a
machine that others may be using. Timing them in alternating rounds (A B C
A B C ...) and taking the median per contender spreads any load from other
processes over all contenders alike, instead of penalising whichever ran
while the load was there.
"""

import dataclasses
import json
import statistics
import time
from typing import Callable, Dict, List, Sequence, TypeVar

T = TypeVar("T")


@dataclasses.dataclass(frozen=True)
class Timing:
  """One timed round: samples processed, wall and process-CPU seconds."""
  samples: int
  wall_s: float
  cpu_s: float

  @property
  def samples_per_s(self) -> float:
    """Wall-clock throughput."""
    return self.samples / max(self.wall_s, 1e-12)

  @property
  def samples_per_cpu_s(self) -> float:
    """Throughput per CPU second of this process (all its threads)."""
    return self.samples / max(self.cpu_s, 1e-12)

  @property
  def cores(self) -> float:
    """CPU seconds per wall second: the cores this process actually got."""
    return self.cpu_s / max(self.wall_s, 1e-12)

  def to_dict(self) -> Dict[str, float]:
    return {"samples": self.samples, "wall_s": self.wall_s, "cpu_s": self.cpu_s}


def time_call(fn: Callable[[], int]) -> Timing:
  """Runs ``fn`` once and times it.

  Args:
    fn: does the work and returns the number of samples it processed; it must
      block until the work is really done (e.g. ``jax.block_until_ready``).

  Returns:
    The round's ``Timing`` (wall clock and this process's CPU time).
  """
  wall, cpu = time.perf_counter(), time.process_time()
  samples = fn()
  return Timing(int(samples), time.perf_counter() - wall, time.process_time() - cpu)


def alternate(runners: Sequence[Callable[[], T]], rounds: int) -> List[List[T]]:
  """Calls the runners in alternating rounds: A B C, A B C, ...

  Args:
    runners: one zero-argument callable per contender (e.g. returning a
      ``Timing``).
    rounds: number of rounds (>= 1).

  Returns:
    ``results[i]``: the ``rounds`` results of ``runners[i]``, in call order.
  """
  if rounds < 1:
    raise ValueError(f"rounds must be >= 1, got {rounds}.")
  if not runners:
    raise ValueError("alternate() needs at least one runner.")
  results: List[List[T]] = [[] for _ in runners]
  for _ in range(rounds):
    for i, runner in enumerate(runners):
      results[i].append(runner())
  return results


def median_of(timings: Sequence[Timing], metric: str = "samples_per_s") -> float:
  """Median of one ``Timing`` property over rounds, e.g. ``'samples_per_s'``.

  Args:
    timings: the rounds of one contender (non-empty).
    metric: ``'samples_per_s'``, ``'samples_per_cpu_s'`` or ``'cores'``.

  Returns:
    The median value.
  """
  if not timings:
    raise ValueError("median_of() needs at least one timing.")
  if metric not in ("samples_per_s", "samples_per_cpu_s", "cores"):
    raise ValueError(f"Unknown metric {metric!r}; use 'samples_per_s', "
                     "'samples_per_cpu_s' or 'cores'.")
  return statistics.median(getattr(t, metric) for t in timings)


def write_json(path: str, result) -> None:
  """Writes a result dataclass as indented JSON (a benchmark's ``--json``)."""
  with open(path, "w") as f:
    json.dump(dataclasses.asdict(result), f, indent=2)
