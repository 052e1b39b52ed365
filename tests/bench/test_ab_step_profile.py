"""Tests of bench/ab_step.py (report) and bench/step_profile.py (HLO parsing, grouping)."""
import pytest

import bench_modules  # tests/bench_modules.py


@pytest.fixture(scope="module")
def profile():
  return bench_modules.load("step_profile")


@pytest.fixture(scope="module")
def ab():
  return bench_modules.load("ab_step")


HLO = """
%fused_computation.1 (param_0: f32[4,8]) -> f32[4,8] {
  %param_0 = f32[4,8]{1,0} parameter(0)
  ROOT %tanh.1 = f32[4,8]{1,0} tanh(%param_0), metadata={op_name="jit(train_step)/jvp(TwoTower)/TwoTower.encode_images/img/encoder/encoderblock_0/mlp/tanh"}
}

ENTRY %main (p: f32[4,8]) -> f32[4,8] {
  %p = f32[4,8]{1,0} parameter(0)
  %custom-call.7.clone = (f32[4,8]{1,0}, u8[4]{0}) custom-call(%p, %p), custom_call_target="__onednn$matmul", metadata={op_name="jit(train_step)/transpose(jvp(TwoTower))/TwoTower.encode_texts/txt/encoder/encoderblock_1/attention/query/dot_general" stack_frame_id=3}
  ROOT %tanh_fusion = f32[4,8]{1,0} fusion(%p), kind=kLoop, calls=%fused_computation.1
}
"""


def test_hlo_metadata_is_read_per_instruction_and_per_fusion(profile):
  names = profile.hlo_op_names(HLO)
  assert names["custom-call.7.clone"].endswith("attention/query/dot_general")
  fused = profile.fusion_op_names(HLO)
  assert fused["tanh_fusion"].endswith("mlp/tanh")


def test_ops_are_grouped_by_tower_and_part(profile):
  meta = "jit(train_step)/jvp(TwoTower)/TwoTower.encode_texts/txt/encoder/encoderblock_1/"
  assert profile.tower_of(meta + "mlp/tanh") == "text"
  assert profile.tower_of("jit(train_step)/TwoTower.encode_images/img/x") == "image"
  assert profile.group_of(meta + "mlp/fc_in/dot_general") == "MLP"
  assert profile.group_of(meta + "attention/key/dot_general") == "q/k/v projections"
  assert profile.group_of(meta + "attention/while/body/checkpoint/softmax") == "attention core"
  assert profile.group_of(meta + "norm_mlp/mul") == "LayerNorm"
  assert profile.group_of("jit(train_step)/scale_by_adam/mul") == "optimizer update"
  assert profile.op_kind("custom-call.7.clone__onednn$matmul") == "oneDNN matmul"
  assert profile.op_kind("wrapped_reduce-window.186") == "wrapped_reduce-window"


def test_ab_report_gives_ratios_to_the_first_tree(ab):
  result = {"trees": ["/a", "/b"], "settings": [{"setting": "112:32:0", "trees": [
      {"samples_per_s": [10.0, 12.0], "median": 10.0, "median_per_cpu_s": 5.0,
       "loss": [5.0, 4.0]},
      {"samples_per_s": [12.0, 13.0], "median": 12.5, "median_per_cpu_s": 6.0,
       "loss": [5.0, 4.0]}]}]}
  text = ab.report(result)
  assert "1.25x" in text and "[1] /b" in text
