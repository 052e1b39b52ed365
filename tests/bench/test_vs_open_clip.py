"""Tests of bench/vs_open_clip.py: spec, ratio arithmetic, the torch check, a worker smoke run."""
import importlib.util
import json
import os

import pytest

from clipa_t5x import optimizers
from clipa_t5x import xla_flags
from clipa_t5x.interop import open_clip_config
from clipa_t5x.models import configs

_BENCH = os.path.join(os.path.dirname(__file__), "..", "..", "bench")


@pytest.fixture(scope="module")
def vs():
  spec = importlib.util.spec_from_file_location("vs_open_clip",
                                                os.path.join(_BENCH, "vs_open_clip.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def _settings(vs, text):
  return vs.step_throughput.parse_settings(text)


def test_make_spec_describes_the_same_model_for_both(vs):
  spec = vs.make_spec("Mu/8", _settings(vs, "112:32:0,64:16:0.75"), 128, base_lr=1e-4,
                      warmup_steps=2)
  config = configs.get_config("Mu/8")
  assert spec["settings"] == [[112, 32, 0.0], [64, 16, 0.75]]
  want = open_clip_config.open_clip_model_config(config, 64, 16)
  got = spec["open_clip_cfgs"][1]
  assert got["vision_cfg"].pop("patch_dropout") == 0.75
  assert got == want
  assert spec["open_clip_cfgs"][0]["vision_cfg"]["image_size"] == 112
  assert spec["open_clip_cfgs"][0]["vision_cfg"]["patch_dropout"] == 0.0
  opt = optimizers.OptimizerConfig()
  assert (spec["b1"], spec["b2"], spec["weight_decay"]) == (opt.b1, opt.b2, opt.weight_decay)
  assert spec["batch"] == 128 and spec["vocab_size"] == config.text.vocab_size
  json.dumps(spec)  # travels to the workers as JSON


def test_make_spec_errors(vs):
  with pytest.raises(ValueError, match="not a multiple of the patch size 8"):
    vs.make_spec("Mu/8", _settings(vs, "100:32:0"), 8, 1e-4, 1)
  with pytest.raises(ValueError, match="contrastive"):
    vs.make_spec("Mu/8", _settings(vs, "64:32:0"), 1, 1e-4, 1)
  with pytest.raises(ValueError, match="warmup steps"):
    vs.make_spec("Mu/8", _settings(vs, "64:32:0"), 8, 1e-4, 0)
  with pytest.raises(ValueError, match="--threads 999 must be 0"):
    vs.make_spec("Mu/8", _settings(vs, "64:32:0"), 8, 1e-4, 1, threads=999)


def test_make_rows_medians_and_ratios(vs):
  timing = vs._timing
  config = configs.get_config("Mu/8")
  settings = _settings(vs, "112:32:0,112:32:0.75")
  # clipa: samples/s 20, 30, 25 (CPU = 2 x wall); open_clip: 10, 12, 100 (CPU = wall).
  ours = [[timing.Timing(60, 60 / r, 120 / r) for r in rates]
          for rates in ([20, 30, 25], [80, 90, 70])]
  ref = [[timing.Timing(60, 60 / r, 60 / r) for r in rates]
         for rates in ([10, 12, 100], [40, 50, 60])]
  rows = vs.make_rows(config, settings, ours, ref, [[5.0, 4.0], [5.1, 4.5]],
                      [[5.2, 4.1], [5.3, 4.9]])
  assert [r.image_tokens for r in rows] == [196, 49]
  assert rows[0].clipa_samples_per_s == pytest.approx(25)
  assert rows[0].open_clip_samples_per_s == pytest.approx(12)
  assert rows[0].ratio == pytest.approx(25 / 12)
  assert rows[0].cpu_ratio == pytest.approx(12.5 / 12)
  assert (rows[0].clipa_cores, rows[0].open_clip_cores) == pytest.approx((2, 1))
  assert rows[1].ratio == pytest.approx(80 / 50)
  assert rows[1].clipa_rounds == pytest.approx([80, 90, 70])
  assert rows[1].open_clip_loss == [5.3, 4.9]
  lines = vs.goal_lines(rows)
  assert lines[0].startswith("goal MET at 112:32:0: clipa_t5x 2.08x")
  assert lines[1].startswith("goal MET at 112:32:0.75: clipa_t5x 1.60x")
  assert vs.goal_lines(rows, goal=1.8)[1].startswith("goal NOT MET")
  # clipa used 2 cores, open_clip 1: with 2 allowed, the load warning fires.
  assert vs.load_warning(rows, cores=2).startswith("warning: a worker got only 1.00 of its 2")
  assert vs.load_warning(rows, cores=1) is None
  table = vs.format_table(rows).splitlines()
  assert len(table) == 4 and "2.08x" in table[2] and "5.0000->4.0000" in table[2]


def test_main_without_torch_names_the_fix(vs, monkeypatch, capsys):
  monkeypatch.setattr(vs, "missing_torch", lambda: "open_clip")
  with pytest.raises(SystemExit) as exit_info:
    vs.main([])
  assert exit_info.value.code == 2
  err = capsys.readouterr().err
  assert "open_clip is not installed" in err and "pip install .[torch]" in err
  with pytest.raises(ModuleNotFoundError, match=r"pip install \.\[torch\]"):
    vs.run("Ti/8", _settings(vs, "16:8:0"), 8, 1, 1)


def test_main_rejects_bad_settings(vs, monkeypatch, capsys):
  monkeypatch.setattr(vs, "missing_torch", lambda: None)
  with pytest.raises(SystemExit):
    vs.main(["--settings", "112:32:0,112:32"])
  assert "given twice" in capsys.readouterr().err


@pytest.mark.slow
def test_workers_start_run_and_report(vs):
  if vs.missing_torch():
    pytest.skip("torch/open_clip not installed; pip install .[torch]")
  log = []
  result = vs.run("Ti/8", _settings(vs, "16:8:0"), batch_size=8, steps=1, rounds=1,
                  warmup_steps=1, threads=1, log=log.append)
  assert [line.split()[0] for line in log] == ["clipa_t5x", "open_clip"]
  (row,) = result.rows
  assert row.clipa_samples_per_s > 0 and row.open_clip_samples_per_s > 0
  assert len(row.clipa_rounds) == len(row.open_clip_rounds) == 1
  for loss in row.clipa_loss + row.open_clip_loss:
    assert 0 < loss < 10  # finite contrastive losses near ln(8)
  # Same initial weights, same batch, same optimizer: the same losses.
  assert row.clipa_loss == pytest.approx(row.open_clip_loss, abs=2e-4)
  assert "largest loss difference" in vs.report(result)
  # Same architecture: open_clip only adds its learned image position
  # embedding ((grid^2 + 1) x width; clipa_t5x's is fixed sin-cos).
  width = configs.get_config("Ti/8").image.width
  assert result.open_clip_info["params"] - result.clipa_info["params"] == (2 * 2 + 1) * width
  # --threads 1: both workers pinned to one core, torch with one thread.
  assert result.open_clip_info["threads"] == 1
  assert result.open_clip_info["cores"] == result.clipa_info["cores"] == 1
  assert len(result.gemm) == 2
  for by_framework in result.gemm.values():
    assert by_framework["clipa_t5x"] > 0 and by_framework["open_clip"] > 0
  assert "one float32 matmul alone" in vs.report(result)
  # The clipa_t5x worker runs as the trainer does: its CPU attention and XLA flags.
  assert result.clipa_info["attention"] == "chunked"
  for flag in xla_flags.default_flags("cpu"):
    assert xla_flags.flag_name(flag) in result.clipa_info["xla_flags"]


def test_gemm_shapes_follow_the_model(vs):
  config = configs.get_config("Mu/8")
  shapes = vs.gemm_shapes(config, _settings(vs, "112:32:0.75")[0], batch_size=4)
  # 49 kept patches + cls per image, width 128, MLP 512.
  assert list(shapes.values()) == [[4 * 50, 128, 512], [128, 4 * 50, 512]]
  assert "[200x128] @ [128x512]" in list(shapes)[0]
