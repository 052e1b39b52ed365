"""Analytic FLOPs of the CLIPA towers: the core of the compute planner.

Counts multiply-adds as 2 FLOPs over the matrix products (patch embedding,
q/k/v/out projections, attention scores and weighted sums, MLP, heads), as
open_clip's published model profile does; LayerNorm, softmax and GELU are
ignored (well under 1%). A training step costs 3× the forward pass (forward,
then gradients with respect to activations and to weights).

The contrastive loss adds the logits' product: a batch of B pairs of
``embed_dim``-wide features costs 2·B²·D FLOPs, 2·B·D per pair, for the
softmax and the sigmoid loss alike (the sigmoid ring computes the same B²
logits block by block; its rematerialisation in the backward pass is
hardware work, not model FLOPs, so it is not counted).
"""

from typing import Mapping


def transformer_forward_flops(tokens: int, width: int, depth: int, mlp_dim: int) -> float:
  """Forward FLOPs of ``depth`` pre-LN blocks on ``tokens`` tokens of ``width``."""
  projections = 2 * tokens * (4 * width * width + 2 * width * mlp_dim)
  attention = 2 * 2 * tokens * tokens * width  # scores q·k and the weighted sum of v
  return depth * (projections + attention)


def image_tokens(image_size: int, patch_size: int, mask_ratio: float = 0.0) -> int:
  """Patch tokens the image encoder sees (cls not counted) after masking."""
  patches = (image_size // patch_size) ** 2
  return int(patches * (1.0 - mask_ratio))


def image_forward_flops(config, image_size: int, mask_ratio: float = 0.0) -> float:
  """Forward FLOPs of the image tower for one image (cls token included)."""
  tower = config.image
  patches = (image_size // tower.patch_size) ** 2
  kept = image_tokens(image_size, tower.patch_size, mask_ratio)
  embed = 2 * patches * tower.patch_size ** 2 * 3 * tower.width  # every patch is embedded
  blocks = transformer_forward_flops(kept + 1, tower.width, tower.depth, tower.mlp_dim)
  head = 2 * tower.width * config.embed_dim
  return embed + blocks + head


def text_forward_flops(config, text_length: int) -> float:
  """Forward FLOPs of the text tower for one caption of ``text_length`` tokens."""
  tower = config.text
  blocks = transformer_forward_flops(text_length, tower.width, tower.depth, tower.mlp_dim)
  return blocks + 2 * tower.width * config.embed_dim


def loss_forward_flops(config, batch_size: int) -> float:
  """Forward FLOPs of the contrastive logits per pair in a batch of ``batch_size``: 2·B·D."""
  return 2.0 * batch_size * config.embed_dim


def per_example_flops(config, image_size: int, text_length: int,
                      mask_ratio: float = 0.0, batch_size: int = 0) -> Mapping[str, float]:
  """Forward and training FLOPs of one image–text pair.

  ``batch_size`` (the global batch) adds the contrastive logits, 2·B·D per
  pair (``loss_forward``); 0 leaves them out (the towers alone, as CLIPA's
  tables count GFLOPs). At CLIPA's sizes they are a fraction of a percent
  (H/14 at 84 px / 8 tokens, B = 65,536: 0.26%).
  """
  image = image_forward_flops(config, image_size, mask_ratio)
  text = text_forward_flops(config, text_length)
  loss = loss_forward_flops(config, batch_size)
  return {"image_forward": image, "text_forward": text, "loss_forward": loss,
          "forward": image + text + loss, "train": 3 * (image + text + loss)}
