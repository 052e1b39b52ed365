"""What the demo's scenes share: the palette, supersampled drawing and JPEG encoding."""

import io
from typing import Dict, Tuple

import numpy as np
from PIL import Image

COLOURS: Dict[str, Tuple[int, int, int]] = {
    "red": (220, 35, 35),
    "green": (35, 165, 55),
    "blue": (35, 75, 225),
    "yellow": (240, 215, 25),
}
SUPERSAMPLE = 2  # scenes are drawn at 2x and downsampled: anti-aliased edges
JPEG_QUALITY = 90


def jitter_colour(rng: np.random.Generator, rgb: Tuple[int, int, int],
                  amount: int) -> Tuple[int, int, int]:
  """``rgb`` with each channel moved by up to ``amount`` (drawn from ``rng``), clipped."""
  return tuple(int(np.clip(c + rng.integers(-amount, amount + 1), 0, 255)) for c in rgb)


def encode_jpeg(image: Image.Image, image_size: int) -> bytes:
  """A scene drawn at ``SUPERSAMPLE`` x the size, box-downsampled and JPEG-encoded."""
  buf = io.BytesIO()
  image.resize((image_size, image_size), Image.BOX).save(buf, format="JPEG",
                                                          quality=JPEG_QUALITY)
  return buf.getvalue()
