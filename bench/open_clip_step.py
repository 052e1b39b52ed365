"""open_clip's side of the training-speed comparisons (``vs_open_clip``, ``gpu_check``).

One ``open_clip.CLIP`` trained on one fixed batch as open_clip's own training
loop trains it: ``ClipLoss``, ``torch.optim.AdamW`` with open_clip's parameter
groups (``no_weight_decay``), the logit-scale clamp after every step. The
image position embedding is frozen, as CLIPA's fixed sin-cos one is. The
uint8 batch is copied to the device and normalised inside every step.

Needs the ``torch`` extra (torch and open_clip_torch).
"""

import math
from typing import Any, Dict, Optional, Sequence, Tuple

import numpy as np

# ln(100): open_clip clamps the learned logit scale here after every step.
LOGIT_SCALE_MAX = math.log(100)


def no_weight_decay(name: str, param) -> bool:
  """open_clip's training rule: gains, biases, norms, 1-D params and the logit scale.

  As ``open_clip_train.main`` groups parameters (``exclude``): these get
  weight decay 0, everything else the configured decay.
  """
  return (param.ndim < 2 or "bn" in name or "ln" in name or "bias" in name
          or "logit_scale" in name)


class OpenClipStep:
  """``open_clip.CLIP`` + ``ClipLoss`` + AdamW on one fixed batch; ``run(n)`` trains n steps."""

  def __init__(self, model_cfg: Dict[str, Any], batch: Dict[str, np.ndarray], *,
               lr: float, weight_decay: float, betas: Tuple[float, float], eps: float,
               mean: Sequence[float], std: Sequence[float], device: str = "cpu",
               autocast_dtype: Optional[str] = None,
               state_dict: Optional[Dict[str, np.ndarray]] = None):
    """Builds the model, its optimizer and the batch on ``device``.

    Args:
      model_cfg: ``open_clip.CLIP`` keyword arguments
        (``clipa_t5x.interop.open_clip_config.open_clip_model_config``).
      batch: ``{'image': uint8 [B, H, W, 3], 'text': int [B, L]}``.
      lr, weight_decay, betas, eps: AdamW's (weight decay only where
        ``no_weight_decay`` is false).
      mean, std: per-channel image normalisation, applied in the step.
      device: 'cpu' or 'cuda' (CUDA: pinned host batch, fused AdamW).
      autocast_dtype: e.g. 'bfloat16' to run under ``torch.autocast``; None:
        float32.
      state_dict: initial weights (numpy arrays); None: open_clip's own init.
    """
    # pylint: disable=import-outside-toplevel
    import open_clip
    import torch
    from open_clip.loss import ClipLoss
    self._torch = torch
    self.device = torch.device(device)
    cuda = self.device.type == "cuda"
    model = open_clip.CLIP(**model_cfg)
    if state_dict is not None:
      model.load_state_dict({k: torch.from_numpy(np.asarray(v)) for k, v in state_dict.items()},
                            strict=True)
    model = model.to(self.device)
    model.visual.positional_embedding.requires_grad_(False)
    model.train()
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    self.optimizer = torch.optim.AdamW(
        [{"params": [p for n, p in named if no_weight_decay(n, p)], "weight_decay": 0.0},
         {"params": [p for n, p in named if not no_weight_decay(n, p)],
          "weight_decay": weight_decay}],
        lr=lr, betas=tuple(betas), eps=eps, **({"fused": True} if cuda else {}))
    self.model = model
    self._loss_fn = ClipLoss()
    # Channels-first uint8 on the host (a data-loader concern); normalised in the step.
    self.images = torch.from_numpy(np.ascontiguousarray(batch["image"].transpose(0, 3, 1, 2)))
    self.texts = torch.from_numpy(np.asarray(batch["text"]).astype(np.int64))
    if cuda:
      self.images, self.texts = self.images.pin_memory(), self.texts.pin_memory()
    self._mean = torch.tensor(list(mean), device=self.device).view(1, 3, 1, 1)
    self._std = torch.tensor(list(std), device=self.device).view(1, 3, 1, 1)
    self._autocast = getattr(torch, autocast_dtype) if autocast_dtype else None
    self._loss = None

  @property
  def num_params(self) -> int:
    return sum(p.numel() for p in self.model.parameters())

  def run(self, steps: int) -> int:
    """Trains ``steps`` steps and waits for the device; returns the samples processed."""
    torch = self._torch
    for _ in range(steps):
      x = self.images.to(self.device, non_blocking=True)
      t = self.texts.to(self.device, non_blocking=True)
      with torch.autocast(self.device.type, dtype=self._autocast or torch.bfloat16,
                          enabled=self._autocast is not None):
        x = (x.float() / 255.0 - self._mean) / self._std
        image_features, text_features, logit_scale = self.model(x, t)
        loss = self._loss_fn(image_features, text_features, logit_scale)
      self.optimizer.zero_grad(set_to_none=True)
      loss.backward()
      self.optimizer.step()
      with torch.no_grad():
        self.model.logit_scale.clamp_(0, LOGIT_SCALE_MAX)
      self._loss = loss
    if self.device.type == "cuda":
      torch.cuda.synchronize()
    return steps * self.images.shape[0]

  @property
  def loss(self) -> float:
    """The last step's loss (NaN before the first step)."""
    return float("nan") if self._loss is None else float(self._loss.detach())
