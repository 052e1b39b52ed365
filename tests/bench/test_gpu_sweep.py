"""Tests of bench/gpu_sweep.py: levers, winners, the defaults line, the batch search, smoke runs."""
import json
import os
import subprocess
import sys
import types

import pytest

import bench_modules
from hidden_packages import REPO, hidden_packages_env


@pytest.fixture(scope="module")
def gs():
  return bench_modules.load("gpu_sweep")


def test_levers_combine_and_code_means_the_three_code_levers(gs):
  assert gs.lever_names("code") == ("pallas_ln", "fused_gelu", "fused_adamw")
  both = gs.combine(["cudnn_ln", "gemm_fusion_1", "gemm_fusion_3", "pallas_ln", "fused_adamw"])
  assert both.flags == ("--xla_gpu_enable_cudnn_layer_norm=true",
                        "--xla_gpu_cudnn_gemm_fusion_level=3")
  assert dict(both.model) == {"norm_impl": "pallas"}
  assert dict(both.optimizer) == {"fused": True}
  with pytest.raises(ValueError, match="unknown lever"):
    gs.lever_names("pallas_ln+turbo")


def test_every_planned_job_names_known_shapes_and_levers(gs):
  for plan, shapes in ((gs.PLAN, gs.SHAPES), (gs.SMOKE_PLAN, gs.SMOKE_SHAPES)):
    for shape, job in plan:
      assert shape in shapes
      if job != "winners":
        gs.lever_names(job)
  # The shapes.
  assert gs.SHAPES["b16_224"] == gs.Shape("B/16", 224, 32, 0.0, 256)
  assert gs.SHAPES["l14_224_m30"] == gs.Shape("L/14", 224, 32, 0.3, 256)
  # Every lever is measured alone somewhere in the plan.
  assert {j for _, j in gs.PLAN} >= set(gs.LEVERS)


def _row(shape, job, ms, losses=(5.5, 5.4, 5.3)):
  return {"shape": shape, "label": shape, "job": job, "ms_per_step": ms, "losses": list(losses),
          "compile_s": 1.0, "samples_per_s": 1.0}


def test_winners_need_a_gain_on_every_shape_and_matching_losses(gs):
  results = [_row("b16_224", "base", 100.0), _row("l14_224_m30", "base", 200.0),
             _row("b16_224", "cudnn_ln", 90.0), _row("l14_224_m30", "cudnn_ln", 190.0),
             _row("b16_224", "pallas_ln", 80.0), _row("l14_224_m30", "pallas_ln", 205.0),
             _row("b16_224", "fused_gelu", 80.0, losses=(5.5, 5.4, 6.0)),
             _row("b16_224", "gemm_fusion_1", 95.0), _row("b16_224", "gemm_fusion_2", 92.0),
             _row("b16_224", "fused_adamw", 97.0), _row("l14_224_m30", "fused_adamw", 196.0),
             {"shape": "b16_224", "label": "x", "job": "gemm_fusion_3", "error": "boom"}]
  gs.annotate(results)
  assert results[6]["loss_ok"] is False and results[2]["loss_ok"] is True
  assert results[2]["speedup"] == pytest.approx(100 / 90)
  assert gs.winners(results, 0.02) == ["cudnn_ln", "fused_adamw", "gemm_fusion_2"]
  assert gs.winners(results, 0.02, shape="b16_224") == [
      "cudnn_ln", "fused_adamw", "gemm_fusion_2", "pallas_ln"]
  lines = gs.defaults_lines(results, 0.02, (0, 11))
  assert lines[0] == ('DEFAULT_FLAGS["gpu"] = ((0, 11), (\'--xla_gpu_enable_cudnn_layer_norm=true\', '
                      '\'--xla_gpu_cudnn_gemm_fusion_level=2\'))')
  assert lines[1] == 'MODEL_DEFAULTS["gpu"] = {}'
  assert "fused_adamw won" in lines[2]  # reported, never a default: its state layout differs
  assert gs.defaults_lines([], 0.02, (0, 11))[:2] == ['DEFAULT_FLAGS["gpu"] = ((0, 11), ())',
                                                      'MODEL_DEFAULTS["gpu"] = {}']


def test_the_pasted_lines_are_valid_python_for_the_table(gs):
  results = [_row("b16_224", "base", 100.0), _row("b16_224", "pallas_ln", 90.0),
             _row("b16_224", "cudnn_ln", 90.0)]
  gs.annotate(results)
  table = {"DEFAULT_FLAGS": {}, "MODEL_DEFAULTS": {}}
  exec("\n".join(gs.defaults_lines(results, 0.02, (0, 11))), {}, table)  # pylint: disable=exec-used
  assert table["DEFAULT_FLAGS"]["gpu"] == ((0, 11), ("--xla_gpu_enable_cudnn_layer_norm=true",))
  assert table["MODEL_DEFAULTS"]["gpu"] == {"norm_impl": "pallas"}


def test_next_window_jobs_put_each_baseline_first(gs):
  assert gs.next_jobs(["l14_224_m30:pallas_ln", "b16_224:gemm_fusion_3"]) == [
      "l14_224_m30:base", "b16_224:base", "l14_224_m30:pallas_ln", "b16_224:gemm_fusion_3"]
  assert gs.next_jobs(["b16_224:base", "b16_224:code"]) == ["b16_224:base", "b16_224:code"]


def test_find_max_batch_on_a_known_curve(gs):
  calls = []
  curve = lambda b: int(1e9 + 1e8 * b + 2e5 * b * b)  # 1 GB fixed, 100 MB/sample, a curve

  def bytes_at(b):
    calls.append(b)
    return curve(b)

  cap = int(20e9)
  batch, sizes, slope, fixed = gs.find_max_batch(bytes_at, cap, 32, max_bisect=6)
  true_max = max(b for b in range(1, 400) if curve(b) <= cap)
  assert sizes[batch] <= cap and batch % 8 == 0 and true_max - batch < 8
  assert len(calls) <= 9 and slope > 1e8
  # Nothing fits: the smallest measured batch is returned, and it does not fit.
  batch, sizes, _, _ = gs.find_max_batch(bytes_at, int(1e9), 4)
  assert sizes[batch] > 1e9


def test_find_max_batch_when_the_straight_line_overshoots_far(gs):
  """A fixed cost that dwarfs the per-sample one at small batches (the CPU smoke's case)."""
  curve = lambda b: int(50e6 + 7e3 * b + 1e3 * b * b)
  batch, sizes, _, _ = gs.find_max_batch(curve, int(53.7e6), 2, max_bisect=5)
  true_max = max(b for b in range(1, 1000) if curve(b) <= 53.7e6)  # 57
  assert sizes[batch] <= 53.7e6 and batch >= true_max - 16 and len(sizes) <= 8


def test_largest_fitting_bisects(gs):
  assert gs.largest_fitting(lambda b: b * 3 <= 100) == 33
  assert gs.largest_fitting(lambda b: False) == 0


def test_planner_adapter_is_the_planners_estimate(gs):
  from clipa_t5x import memory  # pylint: disable=import-outside-toplevel
  from clipa_t5x.models import configs  # pylint: disable=import-outside-toplevel
  config = configs.get_config("Mu/8")
  shape = gs.MEMORY_STAGES["h14_224_ft_m30"]
  want = memory.estimate(config, image_size=shape.image_size, text_length=shape.text_length,
                         batch_size=7, mesh=memory.mesh_shape(1), mask_ratio=shape.mask_ratio)
  assert gs.planner_estimate(config, shape, 7) == int(want.total) > 0


def test_planner_adapter_gives_none_for_another_api(gs, monkeypatch):
  import clipa_t5x  # pylint: disable=import-outside-toplevel
  fake = types.ModuleType("clipa_t5x.memory")
  fake.mesh_shape = lambda devices: ("mesh", devices)
  fake.estimate = lambda config: None  # another signature: no estimate rather than a crash
  monkeypatch.setitem(sys.modules, "clipa_t5x.memory", fake)
  monkeypatch.setattr(clipa_t5x, "memory", fake, raising=False)
  assert gs.planner_estimate(None, gs.MEMORY_STAGES["h14_224_ft_m30"], 7) is None


def test_bad_jobs_are_refused(gs, capsys):
  with pytest.raises(SystemExit):
    gs.main(["--smoke", "--jobs", "b16_224:warp"])
  assert "unknown lever" in capsys.readouterr().err
  with pytest.raises(SystemExit):
    gs.main(["--smoke", "--jobs", "vit_g:base"])
  assert "shape:lever" in capsys.readouterr().err


def _run(tmp_path, args):
  env = hidden_packages_env(tmp_path)  # the GPU image has no TF/seqio/gin/clu
  env.update({"XLA_FLAGS": "", "JAX_PLATFORMS": "cpu", "PYTHON": sys.executable})
  return subprocess.run(["bash", os.path.join(REPO, "bench", "gpu_sweep.sh"), "--smoke"] + args,
                        capture_output=True, text=True, env=env, timeout=1200, check=False)


@pytest.mark.slow
def test_smoke_sweep_runs_every_code_lever_and_a_flag_process(tmp_path):
  out = tmp_path / "sweep.json"
  proc = _run(tmp_path, ["--jobs", "b16_224:base,b16_224:code,b16_224:cudnn_ln",
                         "--json", str(out)])
  assert proc.returncode == 0, proc.stderr[-2000:]
  data = json.loads(out.read_text())
  rows = {r["job"]: r for r in data["results"]}
  assert set(rows) == {"base", "code", "cudnn_ln"}
  for job, row in rows.items():
    assert "error" not in row, row
    assert row["ms_per_step"] > 0 and len(row["losses"]) == 3 and row["loss_ok"], job
  assert rows["code"]["lever"]["model"] == [["mlp_impl", "fused_gelu"], ["norm_impl", "pallas"]]
  assert rows["code"]["lever"]["optimizer"] == [["fused", True]]
  assert rows["cudnn_ln"]["lever"]["flags"] == ["--xla_gpu_enable_cudnn_layer_norm=true"]
  assert data["defaults"][0].startswith('DEFAULT_FLAGS["gpu"]')
  assert "defaults to paste" in proc.stdout


@pytest.mark.slow
def test_smoke_memory_search(tmp_path):
  out = tmp_path / "memory.json"
  proc = _run(tmp_path, ["--memory", "--stages", "h14_70_pre", "--remat", "full",
                         "--json", str(out)])
  assert proc.returncode == 0, proc.stderr[-2000:]
  (row,) = json.loads(out.read_text())["rows"]
  assert "error" not in row, row
  assert row["max_batch"] >= 1 and row["bytes_at_max"] <= row["capacity_bytes"]
  assert row["compiles"] >= 3
