"""Tests of clipa_t5x.plan: numbers against hand computation, the baseline, the CLI."""

import json
import os
import subprocess
import sys

import gin
import pytest

import entry_points
from clipa_t5x import device_profiles
from clipa_t5x import flops
from clipa_t5x import gin_utils
from clipa_t5x import plan as plan_lib
from clipa_t5x.models import configs

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GIGA = 1e9


@pytest.fixture(autouse=True)
def _clean_gin():
  gin.clear_config()
  yield
  gin.clear_config()


def _blocks(tokens, width, depth, mlp):
  """Hand count: q,k,v,out (4 w^2) + MLP (2 w mlp) per token, QK^T and AV (2 t^2 w), x2 FLOPs."""
  return depth * (2 * tokens * (4 * width ** 2 + 2 * width * mlp) + 2 * 2 * tokens ** 2 * width)


def _h14_forward(image_px, text_len, kept=None):
  patches = (image_px // 14) ** 2
  kept = patches if kept is None else kept
  image = (2 * patches * 14 * 14 * 3 * 1280 + _blocks(kept + 1, 1280, 32, 5120)
           + 2 * 1280 * 1024)
  text = _blocks(text_len, 1024, 24, 4096) + 2 * 1024 * 1024
  return image, text


def test_h14_224_32_matches_open_clip_profile():
  per = flops.per_example_flops(configs.get_config("H/14"), 224, 32)
  assert per["image_forward"] / GIGA == pytest.approx(334.6, rel=0.02)
  assert per["text_forward"] / GIGA == pytest.approx(19.4, rel=0.02)


def _parse(run_file, *extra_files, bindings=()):
  gin_utils.parse_gin_flags([run_file, *extra_files],
                            ["MODEL_DIR = 'unused'", *bindings])
  model_config, stages = plan_lib.recipe_from_gin()
  return plan_lib.plan(model_config, stages, plan_lib.device_from_gin())


def test_h14_70_224_plan_against_hand_computation():
  result = _parse("gin/runs/clipav2_h14_70_224.gin", "gin/devices/a100.gin")
  pretrain, finetune = result.stages
  # Pre-training: 70 px -> 5x5 = 25 patches, 8 tokens, 195,490 x 65,536 samples.
  # The contrastive logits add 2 x batch x embed_dim per pair (either loss).
  image, text = _h14_forward(70, 8)
  loss = 2 * 65_536 * 1024
  assert (pretrain.image_tokens, pretrain.text_tokens) == (25, 8)
  assert pretrain.forward_gflops == pytest.approx((image + text + loss) / GIGA, rel=1e-12)
  assert pretrain.train_gflops == pytest.approx(3 * (image + text + loss) / GIGA, rel=1e-12)
  assert pretrain.samples == 195_490 * 65_536
  pre_flops = 3 * (image + text + loss) * 195_490 * 65_536
  assert pretrain.train_flops == pytest.approx(pre_flops, rel=1e-12)
  # Fine-tuning: 224 px, 30% of 256 masked -> 179 kept, 32 tokens, 16,000 x 32,768.
  image, text = _h14_forward(224, 32, kept=179)
  assert (finetune.image_tokens, finetune.text_tokens) == (179, 32)
  ft_flops = 3 * (image + text + 2 * 32_768 * 1024) * 16_000 * 32_768
  assert finetune.train_flops == pytest.approx(ft_flops, rel=1e-12)
  # Totals on the A100 profile: 312 TFLOP/s x 27.5%, $1.575 per GPU-hour.
  total = pre_flops + ft_flops
  hours = total / (312e12 * 0.275) / 3600
  assert result.train_flops == pytest.approx(total, rel=1e-12)
  assert result.device_hours == pytest.approx(hours, rel=1e-12)
  assert result.cost == pytest.approx(hours * 1.575, rel=1e-12)
  # The calibration reproduces the CLIPA README's estimate (5,920 A100-hours, $9,324).
  assert result.device_hours == pytest.approx(5_920, rel=0.02)
  assert result.cost == pytest.approx(9_324, rel=0.02)


def test_baseline_is_224_32_on_the_same_samples():
  result = _parse("gin/runs/clipav2_h14_70_224.gin")
  image, text = _h14_forward(224, 32)
  samples = 195_490 * 65_536 + 16_000 * 32_768
  assert result.baseline.samples == samples
  assert (result.baseline.image_tokens, result.baseline.text_tokens) == (256, 32)
  loss = 2 * 65_536 * 1024  # the logits at the first stage's batch
  assert result.baseline.train_flops == pytest.approx(3 * (image + text + loss) * samples,
                                                      rel=1e-12)
  assert result.speedup == pytest.approx(result.baseline.train_flops / result.train_flops)
  # Low-res pre-training makes the recipe several times cheaper than full tokens.
  assert 7.0 < result.speedup < 8.5


def test_device_profile_files_and_overrides():
  result = _parse("gin/runs/clipav2_h14_70_224.gin", "gin/devices/tpu_v4.gin",
                  bindings=["device_profiles.get_profile.utilization = 0.55"])
  assert result.device.name == "TPU v4" and result.device.peak_flops == 275e12
  assert result.device.utilization == 0.55
  assert result.device_hours == pytest.approx(result.train_flops / (275e12 * 0.55) / 3600)


@pytest.mark.parametrize("kind, name", [
    ("TPU v4", "TPU v4"), ("TPU v3", "TPU v3"), ("NVIDIA A100-SXM4-80GB", "A100"),
    ("NVIDIA H100 80GB HBM3", "H100"), ("NVIDIA H100 PCIe", "H100-PCIe"),
    ("NVIDIA H200", "H200"), ("TPU v5 lite", "TPU v5e"), ("cpu", None)])
def test_profile_for_device_kind(kind, name):
  profile = device_profiles.profile_for_device_kind(kind)
  assert (profile.name if profile else None) == name


def test_bad_inputs_are_clear():
  with pytest.raises(ValueError, match="unknown device profile"):
    device_profiles.get_profile("V100")
  with pytest.raises(ValueError, match="utilization"):
    device_profiles.get_profile("A100", utilization=1.5)
  with pytest.raises(ValueError, match="no stages"):
    plan_lib.plan(configs.get_config("H/14"), [], device_profiles.get_profile("A100"))


def test_cli_json_and_table():
  code, out, err = entry_points.run(
      plan_lib, "--gin_file=gin/runs/clipav2_h14_84_224_336.gin",
      "--gin_file=gin/devices/h100.gin", "--json")
  assert code == 0, err
  data = json.loads(out)
  assert [s["name"] for s in data["stages"]] == ["pretrain", "finetune_224", "finetune_336"]
  assert [s["image_tokens"] for s in data["stages"]] == [36, 179, 345]
  assert data["device"]["name"] == "H100"
  assert data["total"]["train_flops"] == pytest.approx(
      sum(s["train_flops"] for s in data["stages"]))
  assert data["baseline_over_recipe"] > 1
  # Memory per device on this machine's mesh (4 fake CPU devices in the tests: 1 without XLA_FLAGS).
  assert [s["name"] for s in data["memory"]["stages"]] == ["pretrain", "finetune_224",
                                                           "finetune_336"]
  assert all(s["total"] > s["params"] > 0 for s in data["memory"]["stages"])
  code, out, _ = entry_points.run(plan_lib, "--gin_file=gin/runs/clipav2_h14_84_224_336.gin")
  assert code == 0 and "baseline / recipe:" in out and "finetune_336" in out


def test_cli_memory_for_a_pod_and_a_misspelt_setting():
  code, out, err = entry_points.run(plan_lib, "--gin_file=gin/runs/clipav2_h14_70_224.gin",
                                    "--devices=256", "--device_memory=16GB")
  assert code == 0, err
  assert "memory per device: mesh data=256 x model=1, device = 16GB per device" in out
  assert "finetune_224: does not fit; to fit: " in out
  line = entry_points.error_line(entry_points.run(
      plan_lib, "--gin_file=gin/runs/clipav2_h14_70_224.gin", "--gin.FINETUNE_224_STEPS=3"))
  assert "FINETUNE_224_STEPS -> FT224_STEPS?" in line


# ------------------------------------------------------------------ memory per device
def _recipe(run_file, *bindings):
  gin_utils.parse_gin_flags([run_file], ["MODEL_DIR = 'unused'", *bindings])
  return plan_lib.recipe_from_gin()


def test_mesh_from_gin_reads_partitions_and_rules():
  _recipe("gin/runs/clipav2_bigg14_84_224.gin")
  mesh = plan_lib.mesh_from_gin(256)
  assert (mesh.data, mesh.model) == (128, 2)
  # The recipe's 2-D rules: parameters' embed over data, activations' embed over model.
  assert ("embed", "data") in mesh.rules and ("embed", "model") in mesh.rules
  gin.clear_config()
  _recipe("gin/runs/clipav2_h14_70_224.gin")
  mesh = plan_lib.mesh_from_gin(64)
  assert (mesh.data, mesh.model) == (64, 1)
  assert ("embed", "data") not in mesh.rules


def test_memory_plan_uses_the_stage_settings():
  from clipa_t5x import memory  # pylint: disable=import-outside-toplevel
  model_config, stages = _recipe("gin/runs/clipav2_h14_70_224.gin")
  mesh = plan_lib.mesh_from_gin(256)
  pretrain, finetune = plan_lib.memory_plan(model_config, stages, mesh, memory.parse_bytes("80GB"))
  assert pretrain.estimate.examples_per_device == 65_536 // 256
  assert finetune.estimate.examples_per_device == 32_768 // 256
  assert pretrain.estimate.remat_policy == "full"
  assert pretrain.estimate.optimizer == pytest.approx(1.5 * pretrain.estimate.params)  # bf16 mu
  assert pretrain.fits and finetune.fits
  small = plan_lib.memory_plan(model_config, stages, mesh, memory.parse_bytes("8GB"))
  text = plan_lib.format_memory_plan(small, mesh)
  assert "finetune_224: does not fit; to fit: " in text and "FSDP" in text


def test_cli_help_and_errors():
  help_ = subprocess.run([sys.executable, "-m", "clipa_t5x.plan", "--help"], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
  assert help_.returncode == 0 and "Compute planner" in help_.stdout
  line = entry_points.error_line(entry_points.run(plan_lib, "--gin_file=gin/runs/no_such_run.gin"))
  assert "no_such_run.gin" in line
