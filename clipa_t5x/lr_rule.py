"""CLIPA-v2's base learning rate per stage and model (the peak is base x batch / 256).

The official recipes scale the learning rate with the batch
(``optimizers.learning_rate_schedule``: peak = base x batch / 256) and use
these bases (per 256 examples):

==================  ===========  ==================  ==================
model               pre-training fine-tune 224 px    fine-tune 336 px
==================  ===========  ==================  ==================
bigG/14             4e-6         4e-7                1e-7
every other model   8e-6         4e-7                1e-7
==================  ===========  ==================  ==================

H/14 (``configs/model_h``): 8e-6 -> 4e-7 -> 1e-7; bigG/14 (t5x branch):
4e-6 -> 4e-7 (2.56e-5 at 16,384) -> 1e-7; L/14 mirrors H/14. The smaller
models have no CLIPA-v2 recipe; CLIPA-v1's B/16 pre-trained at 8e-6 as well,
so they take H/14's bases. ``gin/runs/custom_data.gin`` binds
``base_learning_rate`` so that any ``gin/models/*.gin`` gets its own.
"""

from clipa_t5x.models import configs

STAGES = ("pretrain", "finetune_224", "finetune_336")
# stage -> base learning rate per 256 examples; models listed in _MODEL_BASES differ.
_DEFAULT_BASES = {"pretrain": 8e-6, "finetune_224": 4e-7, "finetune_336": 1e-7}
_MODEL_BASES = {"bigG/14": {"pretrain": 4e-6}}


def variant_name(model_config: configs.ClipaConfig) -> str:
  """The ``configs.VARIANTS`` name of the model's size: its image tower's width and depth.

  Overrides that keep the size (patch size, dtype, remat, text tower) keep the name.
  """
  size = (model_config.image.width, model_config.image.depth)
  for name, variant in configs.VARIANTS.items():
    if (variant.image.width, variant.image.depth) == size:
      return name
  raise ValueError("lr_rule: the model matches no named variant "
                   f"({sorted(configs.VARIANTS)}); set the stage's base_learning_rate yourself.")


def base_learning_rate(model_config: configs.ClipaConfig, stage: str = "pretrain") -> float:
  """CLIPA-v2's learning rate per 256 examples for ``stage`` of this model.

  Args:
    model_config: the model (``configs.get_config('L/14')``; gin: ``%MODEL_CONFIG``).
    stage: ``'pretrain'``, ``'finetune_224'`` or ``'finetune_336'``.
  """
  if stage not in STAGES:
    raise ValueError(f"lr_rule: stage must be one of {STAGES}, got {stage!r}.")
  return _MODEL_BASES.get(variant_name(model_config), {}).get(stage, _DEFAULT_BASES[stage])
