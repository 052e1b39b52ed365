"""Tests of bench/open_clip_step.py: open_clip's weight-decay groups and one training step."""
import math
import os
import sys

import numpy as np
import pytest

from bench_modules import load

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "interop"))
import torch_required  # noqa: E402  (tests/interop: torch after TensorFlow, safely)
from clipa_t5x.interop import open_clip_config
from clipa_t5x.models import configs


class _P:
  def __init__(self, ndim):
    self.ndim = ndim


@pytest.mark.parametrize("name, ndim, excluded", [
    ("visual.transformer.resblocks.0.mlp.c_fc.weight", 2, False),
    ("visual.transformer.resblocks.0.mlp.c_fc.bias", 1, True),
    ("visual.ln_post.weight", 1, True),
    ("visual.proj", 2, False),
    ("logit_scale", 0, True),
    ("visual.conv1.weight", 4, False),
    ("trunk.bn1.weight", 2, True),  # open_clip's rule also spares BatchNorm gains
])
def test_no_weight_decay_is_open_clips_rule(name, ndim, excluded):
  assert load("open_clip_step").no_weight_decay(name, _P(ndim)) is excluded


def test_one_step_trains_and_groups_the_parameters():
  torch_required.require_torch()
  step_lib, steps = load("open_clip_step"), load("step_throughput")
  config = configs.get_config("Ti/8")
  cfg = open_clip_config.open_clip_model_config(config, 16, 8)
  batch = steps.random_batch(4, steps.Setting(16, 8), config.text.vocab_size)
  trainer = step_lib.OpenClipStep(cfg, batch, lr=1e-3, weight_decay=0.2, betas=(0.9, 0.95),
                                  eps=1e-8, mean=(0.5,) * 3, std=(0.25,) * 3)
  assert math.isnan(trainer.loss)
  assert trainer.run(2) == 8
  assert 0 < trainer.loss < 10
  no_decay, decay = trainer.optimizer.param_groups
  assert (no_decay["weight_decay"], decay["weight_decay"]) == (0.0, 0.2)
  assert all(p.ndim >= 2 for p in decay["params"])
  assert not trainer.model.visual.positional_embedding.requires_grad  # CLIPA's is fixed
  assert trainer.model.logit_scale.item() <= step_lib.LOGIT_SCALE_MAX
  assert np.isfinite(trainer.num_params)
