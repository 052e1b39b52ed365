"""Tests of bench/step_throughput.py and its timing helpers (bench/_timing.py)."""
import json

import pytest

from clipa_t5x import flops
from clipa_t5x.models import configs

import bench_modules  # tests/bench_modules.py


@pytest.fixture(scope="module")
def st():
  return bench_modules.load("step_throughput")


@pytest.fixture(scope="module")
def timing():
  return bench_modules.load("_timing")


# --------------------------------------------------------------- _timing ---
def test_alternate_calls_runners_in_rounds(timing):
  calls = []
  runners = [lambda name=name: calls.append(name) or f"{name}{calls.count(name)}"
             for name in "ABC"]
  results = timing.alternate(runners, rounds=3)
  assert "".join(calls) == "ABCABCABC"
  assert results == [["A1", "A2", "A3"], ["B1", "B2", "B3"], ["C1", "C2", "C3"]]
  with pytest.raises(ValueError, match="rounds must be >= 1"):
    timing.alternate(runners, rounds=0)
  with pytest.raises(ValueError, match="at least one runner"):
    timing.alternate([], rounds=1)


def test_timing_rates_and_median(timing):
  t = timing.Timing(samples=64, wall_s=2.0, cpu_s=4.0)
  assert t.samples_per_s == 32.0
  assert t.samples_per_cpu_s == 16.0
  assert t.cores == 2.0
  rounds = [timing.Timing(10, w, 1.0) for w in (1.0, 5.0, 2.0, 0.5, 4.0)]
  # rates 10, 2, 5, 20, 2.5 -> median 5; a slow outlier round does not move it.
  assert timing.median_of(rounds) == 5.0
  assert timing.median_of(rounds, "samples_per_cpu_s") == 10.0
  with pytest.raises(ValueError, match="Unknown metric"):
    timing.median_of(rounds, "flops")
  with pytest.raises(ValueError, match="at least one"):
    timing.median_of([])


def test_time_call_counts_wall_and_cpu(timing):
  def busy():
    total = 0
    for i in range(200_000):
      total += i
    return 7
  t = timing.time_call(busy)
  assert t.samples == 7 and t.wall_s > 0 and t.cpu_s > 0


# -------------------------------------------------------------- settings ---
def test_parse_settings(st):
  got = st.parse_settings(" 224:32:0, 112:32, 224:32:0.75 ")
  assert got == [st.Setting(224, 32, 0.0), st.Setting(112, 32, 0.0), st.Setting(224, 32, 0.75)]
  assert [s.label for s in got] == ["224:32:0", "112:32:0", "224:32:0.75"]


@pytest.mark.parametrize("text, match", [
    ("", "empty"),
    ("224", "resolution:text_length"),
    ("224:32:0:1", "resolution:text_length"),
    ("224:x:0", "resolution:text_length"),
    ("0:32:0", "must be positive"),
    ("224:-1", "must be positive"),
    ("224:32:1.0", r"must be in \[0, 1\)"),
    ("224:32:-0.1", r"must be in \[0, 1\)"),
    ("224:32:0,224:32", "given twice"),
])
def test_parse_settings_errors(st, text, match):
  with pytest.raises(ValueError, match=match):
    st.parse_settings(text)


def test_check_settings_names_the_fix(st):
  config = configs.get_config("S/16")
  st.check_settings(st.parse_settings("224:32:0,112:8:0.75"), config)
  with pytest.raises(ValueError, match="not a multiple of the patch size 16; use 112 or 128"):
    st.check_settings([st.Setting(120, 32)], config)
  with pytest.raises(ValueError, match="keeps no patch"):
    st.check_settings([st.Setting(16, 32, 0.5)], config)


def test_default_settings_are_full_and_quarter_tokens(st):
  assert st.default_settings(16) == "224:32:0,112:32:0,224:32:0.75"
  config = configs.get_config("Mu/8")
  settings = st.parse_settings(st.default_settings(8))
  assert [st.kept_image_tokens(config, s) for s in settings] == [196, 49, 49]


# ----------------------------------------------------------------- table ---
def _timings(timing, rates, batch=10):
  """Rounds with the given samples/s (wall); CPU time is twice the wall time."""
  return [timing.Timing(batch, batch / r, 2 * batch / r) for r in rates]


def test_make_rows_ratios_against_flops_py(st, timing):
  config = configs.get_config("Mu/8")
  settings = st.parse_settings("112:32:0,56:32:0,112:32:0.75")
  timings = [_timings(timing, [9, 10, 11]), _timings(timing, [31, 30, 1]),
             _timings(timing, [28, 29, 27])]
  rows = st.make_rows(config, settings, timings, [1.0, 2.0, 3.0], peak_flops=None)
  f = [flops.per_example_flops(config, 112, 32)["train"],
       flops.per_example_flops(config, 56, 32)["train"],
       flops.per_example_flops(config, 112, 32, 0.75)["train"]]
  assert [r.image_tokens for r in rows] == [196, 49, 49]
  assert [r.text_tokens for r in rows] == [32, 32, 32]
  assert [r.samples_per_s for r in rows] == pytest.approx([10, 30, 28])
  assert [r.samples_per_cpu_s for r in rows] == pytest.approx([5, 15, 14])
  assert [r.cores for r in rows] == pytest.approx([2, 2, 2])
  assert [r.speedup for r in rows] == pytest.approx([1.0, 3.0, 2.8])
  assert [r.flops_ratio for r in rows] == pytest.approx([1.0, f[0] / f[1], f[0] / f[2]])
  assert rows[1].efficiency == pytest.approx(3.0 / (f[0] / f[1]))
  assert rows[2].efficiency == pytest.approx(2.8 / (f[0] / f[2]))
  assert rows[0].gflops_per_sample == pytest.approx(f[0] / 1e9)
  assert rows[1].achieved_tflops == pytest.approx(30 * f[1] / 1e12)
  assert all(r.mfu is None for r in rows)
  assert rows[1].rounds_samples_per_s == pytest.approx([31, 30, 1])
  assert [r.compile_s for r in rows] == [1.0, 2.0, 3.0]
  # With a known peak (all devices together), MFU = achieved / peak.
  rows = st.make_rows(config, settings, timings, [0, 0, 0], peak_flops=1e12)
  assert rows[0].mfu == pytest.approx(10 * f[0] / 1e12)
  with pytest.raises(ValueError, match="one timing list"):
    st.make_rows(config, settings, timings[:2], [0, 0, 0], None)


def test_format_table_and_goal(st, timing):
  config = configs.get_config("Mu/8")
  settings = st.parse_settings("112:32:0,56:32:0,80:32:0")
  f0 = flops.per_example_flops(config, 112, 32)["train"]
  f1 = flops.per_example_flops(config, 56, 32)["train"]
  ideal = f0 / f1
  # 56 px at 0.9 x the FLOPs ratio: met; then at 0.8 x: not met.
  timings = [_timings(timing, [10]), _timings(timing, [10 * 0.9 * ideal]),
             _timings(timing, [15])]
  rows = st.make_rows(config, settings, timings, [0, 0, 0], peak_flops=2e12)
  table = st.format_table(rows)
  lines = table.splitlines()
  assert len(lines) == 3 + 3 and "by wall clock" in lines[0] and "by CPU time" in lines[0]
  assert "%" in lines[3] and "0.90" in lines[4]
  assert st.goal_row(rows).setting == "56:32:0"  # 49/196 is nearest 1/4 (100/196 is not)
  (line,) = st.goal_lines(rows)
  assert line.startswith("goal MET: at 56:32:0 (49/196 = 0.25") and "0.90 x" in line
  timings[1] = _timings(timing, [10 * 0.8 * ideal])
  rows = st.make_rows(config, settings, timings, [0, 0, 0], peak_flops=None)
  assert st.goal_lines(rows)[0].startswith("goal NOT MET")
  assert " - |" in st.format_table(rows).splitlines()[3]  # no peak: MFU "-"
  assert st.goal_lines(rows[:1]) == [
      "goal: not judged (give a second setting with ~1/4 of the image tokens)"]


def test_goal_judges_every_tied_setting(st, timing):
  config = configs.get_config("Mu/8")
  settings = st.parse_settings("112:32:0,56:32:0,112:32:0.75")
  rows = st.make_rows(config, settings, [_timings(timing, [r]) for r in (10, 30, 10)],
                      [0, 0, 0], None)
  lines = st.goal_lines(rows)
  assert [line.split(":")[0] for line in lines] == ["goal MET", "goal NOT MET"]


def test_random_batch_shapes(st):
  b = st.random_batch(4, st.Setting(16, 8), vocab_size=32000, seed=3)
  assert b["image"].shape == (4, 16, 16, 3) and b["image"].dtype.name == "uint8"
  assert b["text"].shape == (4, 8) and b["text"].dtype.name == "int32"
  assert (b["text"][:, 0] == 101).all() and b["text"].max() < 32000
  again = st.random_batch(4, st.Setting(16, 8), vocab_size=32000, seed=3)
  assert (again["image"] == b["image"]).all() and (again["text"] == b["text"]).all()


# ------------------------------------------------------------ end to end ---
@pytest.mark.slow
def test_main_smoke_ti8(st, tmp_path, capsys):
  out = tmp_path / "r.json"
  result = st.main(["--model", "Ti/8", "--settings", "16:8:0,8:8:0", "--batch", "8",
                    "--steps", "1", "--rounds", "2", "--json", str(out)])
  text = capsys.readouterr().out
  assert "fed through Trainer.step" in text and "goal " in text
  assert [r.setting for r in result.rows] == ["16:8:0", "8:8:0"]
  assert [r.image_tokens for r in result.rows] == [4, 1]
  assert all(r.samples_per_s > 0 and len(r.rounds_samples_per_s) == 2 for r in result.rows)
  assert result.rows[0].speedup == 1.0 and result.dtype == "float32"
  assert all(v == v for v in result.losses.values())  # finite, not NaN
  saved = json.loads(out.read_text())
  assert saved["model"] == "Ti/8" and len(saved["rows"]) == 2
  assert saved["rows"][1]["flops_ratio"] > 1


def test_main_rejects_bad_arguments(st, capsys):
  with pytest.raises(SystemExit):
    st.main(["--settings", "224:32:2"])
  assert "must be in [0, 1)" in capsys.readouterr().err
  with pytest.raises(SystemExit):
    st.main(["--model", "Q/3"])
  assert "unknown --model 'Q/3'" in capsys.readouterr().err
  with pytest.raises(SystemExit):
    st.main(["--model", "Ti/8", "--settings", "20:8:0"])
  assert "not a multiple of the patch size 8" in capsys.readouterr().err
