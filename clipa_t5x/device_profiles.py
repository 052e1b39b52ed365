"""Accelerator profiles: peak dense bf16 FLOP/s per device, for planning and MFU.

One table serves both the compute planner (``clipa_t5x.plan``, via
``gin/devices/*.gin``) and the trainer's live MFU, which looks the running
device up by ``jax.devices()[0].device_kind``. Peaks are vendor datasheet
numbers for dense (not 2:4 sparse) bf16 matrix math per chip/GPU; MFU is
conventionally measured against them whatever dtype the model computes in.
"""

import dataclasses
from typing import Optional, Tuple


@dataclasses.dataclass(frozen=True)
class DeviceProfile:
  """One accelerator type.

  Attributes:
    name: short name ('A100', 'TPU v4', ...).
    peak_flops: peak dense bf16 FLOP/s of one device (GPU or TPU chip).
    utilization: assumed model FLOPs utilisation (MFU) when planning.
    price_per_hour: assumed price of one device-hour in USD when planning.
    device_kinds: lower-case substrings of ``jax.Device.device_kind`` that
      identify this profile.
  """
  name: str
  peak_flops: float
  utilization: float = 0.4
  price_per_hour: float = 0.0
  device_kinds: Tuple[str, ...] = ()

  def __post_init__(self):
    if not self.peak_flops > 0:
      raise ValueError(f"DeviceProfile {self.name!r}: peak_flops must be positive, "
                       f"got {self.peak_flops}.")
    if not 0 < self.utilization <= 1:
      raise ValueError(f"DeviceProfile {self.name!r}: utilization must be in (0, 1], "
                       f"got {self.utilization}; e.g. 0.4 for 40% MFU.")
    if self.price_per_hour < 0:
      raise ValueError(f"DeviceProfile {self.name!r}: price_per_hour must be >= 0, "
                       f"got {self.price_per_hour}.")


# Ordered: the first profile with a matching substring wins, so the specific
# kinds ('h100 pcie', 'tpu v5 lite') come before the general ones.
PROFILES: Tuple[DeviceProfile, ...] = (
    DeviceProfile("A100", 312e12, device_kinds=("a100",)),
    DeviceProfile("H100-PCIe", 756e12, device_kinds=("h100 pcie",)),
    DeviceProfile("H100", 989e12, device_kinds=("h100",)),     # SXM, dense
    DeviceProfile("H200", 989e12, device_kinds=("h200",)),     # same tensor cores as H100 SXM
    DeviceProfile("TPU v3", 123e12, device_kinds=("tpu v3",)),
    DeviceProfile("TPU v4", 275e12, device_kinds=("tpu v4",)),
    DeviceProfile("TPU v5e", 197e12, device_kinds=("tpu v5 lite", "tpu v5e")),
    DeviceProfile("TPU v5p", 459e12, device_kinds=("tpu v5p", "tpu v5")),
)


def get_profile(name: str, utilization: Optional[float] = None,
                price_per_hour: Optional[float] = None) -> DeviceProfile:
  """The named profile, with the planning assumptions replaced where given.

  Args:
    name: a profile name from ``PROFILES`` (case-insensitive), e.g. 'A100'.
    utilization: assumed MFU in (0, 1]; None keeps the table's default.
    price_per_hour: assumed USD per device-hour; None keeps the table's (0).

  Returns:
    The ``DeviceProfile``.
  """
  for profile in PROFILES:
    if profile.name.lower() == str(name).lower():
      changes = {}
      if utilization is not None:
        changes["utilization"] = utilization
      if price_per_hour is not None:
        changes["price_per_hour"] = price_per_hour
      return dataclasses.replace(profile, **changes)
  raise ValueError(f"unknown device profile {name!r}; known: {[p.name for p in PROFILES]}.")


def profile_for_device_kind(device_kind: str) -> Optional[DeviceProfile]:
  """The profile of a ``jax.Device.device_kind`` string, or None if unknown (e.g. CPU)."""
  kind = str(device_kind).lower()
  for profile in PROFILES:
    if any(pattern in kind for pattern in profile.device_kinds):
      return profile
  return None


def peak_flops_for_device_kind(device_kind: str) -> Optional[float]:
  """Peak FLOP/s of one device of this kind, or None if the kind is unknown."""
  profile = profile_for_device_kind(device_kind)
  return profile.peak_flops if profile is not None else None
