"""CLIPA-v2's base learning rates (clipa_t5x/lr_rule.py) and custom_data.gin with any model."""

import dataclasses

import pytest

import helpers  # tests/helpers.py

from clipa_t5x import gin_utils
from clipa_t5x import lr_rule
from clipa_t5x import optimizers
from clipa_t5x import runner
from clipa_t5x import train_state as train_state_lib
from clipa_t5x.models import clip as clip_lib
from clipa_t5x.models import configs


def test_bases_follow_the_official_recipes():
  h14, bigg = configs.get_config("H/14"), configs.get_config("bigG/14")
  # H/14: 2.048e-3 at 65,536; 5.12e-5 at 32,768; 6.4e-6 at 16,384 (reference section 5).
  assert lr_rule.base_learning_rate(h14, "pretrain") * 65_536 / 256 == pytest.approx(2.048e-3)
  assert lr_rule.base_learning_rate(h14, "finetune_224") * 32_768 / 256 == pytest.approx(5.12e-5)
  assert lr_rule.base_learning_rate(h14, "finetune_336") * 16_384 / 256 == pytest.approx(6.4e-6)
  # bigG/14: 1.024e-3 at 65,536 and 2.56e-5 at 16,384.
  assert lr_rule.base_learning_rate(bigg, "pretrain") * 65_536 / 256 == pytest.approx(1.024e-3)
  assert lr_rule.base_learning_rate(bigg, "finetune_224") * 16_384 / 256 == pytest.approx(2.56e-5)
  for name in ("Ti/8", "Mu/8", "S/16", "B/16", "L/14"):
    assert lr_rule.base_learning_rate(configs.get_config(name)) == 8e-6
  # Overrides that keep the size keep the rule; an unnamed size is a clear error.
  assert lr_rule.variant_name(configs.get_config("bigG/14", dtype="bfloat16")) == "bigG/14"
  odd = dataclasses.replace(h14, image=dataclasses.replace(h14.image, depth=3))
  with pytest.raises(ValueError, match="matches no named variant"):
    lr_rule.base_learning_rate(odd)
  with pytest.raises(ValueError, match="stage must be one of"):
    lr_rule.base_learning_rate(h14, "finetune")


def _shards(tmp_path):
  return helpers.shard_writers().write_webdataset(str(tmp_path / "wds"), 2, 4)


@pytest.mark.usefixtures("clean_gin")
@pytest.mark.parametrize("model_file,name,pretrain_base", [
    ("gin/models/ti8.gin", "Ti/8", 8e-6), ("gin/models/bigg14.gin", "bigG/14", 4e-6)])
@pytest.mark.slow
def test_custom_data_gin_works_with_any_model(captured, tmp_path, model_file, name,
                                              pretrain_base):
  gin_utils.parse_gin_flags(["gin/runs/custom_data.gin", model_file], [
      f"MODEL_DIR = '{tmp_path / 'run'}'", f"TRAIN_DATA = '{_shards(tmp_path)}'",
      "PRETRAIN_BATCH_SIZE = 8", "FINETUNE_BATCH_SIZE = 8"])
  gin_utils.configured(runner.run)()
  (pre, _, kwargs), (ft, _, _) = captured
  model_config = kwargs["model_config"]
  assert model_config == configs.get_config(name)
  assert pre.optimizer.base_learning_rate == pretrain_base
  assert ft.optimizer.base_learning_rate == 4e-7
  for stage in (pre, ft):  # every stage's state builds for this model (shapes only)
    tx, _ = optimizers.make_optimizer(stage.optimizer, stage.batch_size, stage.train_steps)
    abstract, _, _ = train_state_lib.abstract_train_state(
        clip_lib.ClipaModel(model_config), tx, stage.image_size, stage.text_length,
        kwargs["partitioner"])
    assert abstract.step.shape == ()
