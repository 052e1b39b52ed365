"""Every gin/runs/clipav2_*.gin reproduces its CLIPA-v2 row (reference §5), without training."""

import glob
import os

import gin
import pytest

from clipa_t5x import gin_utils
from clipa_t5x import optimizers
from clipa_t5x import runner
from clipa_t5x.models import configs

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PRETRAIN_SAMPLES = 1_281_167 * 10_000   # 12.8B: 10,000 "virtual ImageNet epochs"

# name, image px, text tokens, syntax-reduced captions, batch, samples, peak LR, warmup, mask.
H_PRETRAIN_70 = ("pretrain", 70, 8, True, 65_536, PRETRAIN_SAMPLES, 2.048e-3, 3_200, 0.0)
H_PRETRAIN_84 = ("pretrain", 84, 8, True, 65_536, PRETRAIN_SAMPLES, 2.048e-3, 3_200, 0.0)
H_FT224 = ("finetune_224", 224, 32, False, 32_768, 524_288_000, 5.12e-5, 800, 0.3)
FT336 = ("finetune_336", 336, 32, False, 16_384, 131_072_000, 6.4e-6, 1_600, 0.4)
G_PRETRAIN_84 = ("pretrain", 84, 8, True, 65_536, PRETRAIN_SAMPLES, 1.024e-3, 3_200, 0.0)
G_FT224 = ("finetune_224", 224, 32, False, 16_384, 524_288_000, 2.56e-5, 0, 0.4)

# run file -> (model, model-parallel partitions, stages)
RECIPES = {
    "clipav2_h14_70_224": ("H/14", 1, [H_PRETRAIN_70, H_FT224]),
    "clipav2_h14_84_224": ("H/14", 1, [H_PRETRAIN_84, H_FT224]),
    "clipav2_h14_84_224_336": ("H/14", 1, [H_PRETRAIN_84, H_FT224, FT336]),
    "clipav2_l14_84_224": ("L/14", 1, [H_PRETRAIN_84, H_FT224]),
    "clipav2_l14_84_224_336": ("L/14", 1, [H_PRETRAIN_84, H_FT224, FT336]),
    "clipav2_bigg14_84_224": ("bigG/14", 2, [G_PRETRAIN_84, G_FT224]),
    "clipav2_bigg14_84_224_336": ("bigG/14", 2, [G_PRETRAIN_84, G_FT224, FT336]),
}


pytestmark = pytest.mark.usefixtures("clean_gin")  # fixtures in conftest.py


@pytest.fixture(scope="module")
def imagenet_stand_in(tmp_path_factory):
  """An ImageFolder with ImageNet's 1,000 (empty) class folders: enough to wire the eval."""
  root = tmp_path_factory.mktemp("imagenet_val")
  for i in range(1000):
    os.makedirs(root / f"n{i:08d}")
  return str(root)


def _run(name, tmp_path, bindings=(), imagenet=None):
  imagenet = [f"IMAGENET_DATA = '{imagenet}'"] if imagenet else []
  gin_utils.parse_gin_flags([f"gin/runs/{name}.gin"],
                            [f"MODEL_DIR = '{tmp_path}'", *imagenet, *bindings])
  return gin_utils.configured(runner.run)()


def test_every_clipav2_file_is_covered():
  shipped = {os.path.basename(p)[:-4]
             for p in glob.glob(os.path.join(ROOT, "gin", "runs", "clipav2_*.gin"))}
  assert shipped == set(RECIPES)


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_recipe_matches_reference(captured, tmp_path, imagenet_stand_in, name):
  model, partitions, expected = RECIPES[name]
  _run(name, tmp_path, imagenet=imagenet_stand_in)
  assert len(captured) == len(expected)
  previous = None
  for (stage, previous_dir, kwargs), want in zip(captured, expected):
    (stage_name, image, text, syntax, batch, samples, peak_lr, warmup, mask) = want
    assert stage.name == stage_name
    assert stage.image_size == image and stage.text_length == text
    # Text reduction is the task's: '<task>_syntax' variants syntax-mask, others truncate.
    assert stage.mixture_or_task_name.endswith("_syntax") == syntax
    assert stage.eval_text_reduction == ("syntax" if syntax else "truncate")
    assert stage.batch_size == batch
    assert abs(stage.train_steps * stage.batch_size - samples) < batch
    assert stage.mask_ratio == pytest.approx(mask)
    opt = stage.optimizer
    assert opt.base_learning_rate * batch / 256 == pytest.approx(peak_lr, rel=1e-9)
    assert opt.warmup_steps == warmup
    assert (opt.b1, opt.b2, opt.weight_decay, opt.mu_dtype) == (0.9, 0.95, 0.2, "bfloat16")
    assert opt.grad_clip_norm is None
    # The schedule the trainer builds peaks at the reference LR right after warmup.
    schedule = optimizers.learning_rate_schedule(opt.base_learning_rate, batch,
                                                 stage.train_steps, warmup)
    assert float(schedule(warmup)) == pytest.approx(peak_lr, rel=1e-5)
    assert stage.init_from is None   # each stage starts from the previous one
    assert previous_dir == previous
    previous = os.path.join(str(tmp_path), stage.name)
    config = kwargs["model_config"]
    assert (config.image, config.text, config.embed_dim) == (
        configs.get_config(model).image, configs.get_config(model).text,
        configs.get_config(model).embed_dim)
    assert config.remat_policy == "full"
    assert dict(kwargs["partitioner"].mesh.shape)["model"] == partitions
    # Zero-shot ImageNet (CLIP's names and 80 templates) every 1,000 steps and after each
    # stage, at the stage's resolution and text length; syntax-masked prompts in pre-training.
    (imagenet,) = kwargs["evaluators"]
    assert (imagenet.name, imagenet.class_names, imagenet.templates) == (
        "imagenet", "imagenet1k", "imagenet1k")
    assert imagenet.source.root == imagenet_stand_in
    assert kwargs["eval_period"] == 1000
    assert stage.eval_image_size is None and stage.eval_text_length is None


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_recipe_without_imagenet_stops_before_training_naming_the_macro(captured, tmp_path,
                                                                        name):
  with pytest.raises(ValueError, match=r"IMAGENET_DATA is not set.*--gin.EVALUATORS=\[\]"):
    _run(name, tmp_path)
  assert not captured
  gin.clear_config()
  _run(name, tmp_path, ["EVALUATORS = []"])  # training without the evaluation is one setting
  assert captured


def test_stage_macros_can_be_overridden(captured, tmp_path):
  _run("clipav2_bigg14_84_224", tmp_path,
       ["PRETRAIN_IMAGE_SIZE = 70", "PRETRAIN_TASK = 'laion2b_syntax'", "EVALUATORS = []"])
  pretrain = captured[0][0]
  assert pretrain.image_size == 70 and pretrain.mixture_or_task_name == "laion2b_syntax"
