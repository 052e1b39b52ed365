"""Tests of bench/gpu_check.py: rows, rates, the table, and the CPU smoke run."""
import importlib.util
import json
import os
import subprocess
import sys

import pytest

from clipa_t5x import flops
from clipa_t5x.models import configs
from hidden_packages import REPO, hidden_packages_env

_BENCH = os.path.join(REPO, "bench")


@pytest.fixture(scope="module")
def gc():
  spec = importlib.util.spec_from_file_location("gpu_check", os.path.join(_BENCH, "gpu_check.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def test_rows_are_the_issue_shapes(gc):
  by_name = {r.name: r for r in gc.ROWS}
  b16, pre, ft = by_name["b16_224"], by_name["l14_84_t8"], by_name["l14_224_m30"]
  assert (b16.model, b16.image_size, b16.text_length, b16.mask_ratio, b16.batch) == (
      "B/16", 224, 32, 0.0, 256)
  assert (pre.model, pre.image_size, pre.text_length) == ("L/14", 84, 8)
  assert (ft.model, ft.image_size, ft.mask_ratio) == ("L/14", 224, 0.3)
  for row in gc.ROWS + gc.SMOKE_ROWS:
    assert row.model in configs.VARIANTS
    assert row.image_size % configs.VARIANTS[row.model].image.patch_size == 0


def test_add_rates_uses_the_analytic_flops(gc):
  row = gc.Row("x", "Ti/8", 32, 8, 0.0, 8)
  result = gc.add_rates(row, {"seconds": 2.0, "steps": 4}, peak=1e12)
  per_sample = flops.per_example_flops(configs.get_config("Ti/8"), 32, 8)["train"]
  assert result["samples_per_s"] == pytest.approx(16.0)
  assert result["tflops"] == pytest.approx(16.0 * per_sample / 1e12)
  assert result["mfu"] == pytest.approx(16.0 * per_sample / 1e12)
  assert gc.add_rates(row, {"seconds": 1.0, "steps": 1}, peak=None)["mfu"] is None
  assert gc.add_rates(row, {"error": "boom"}, peak=1e12) == {"error": "boom"}


def test_table_shows_errors_and_the_ratio(gc):
  common = {"label": "B/16 @ 224", "compile_s": 1.0, "tflops": 1.0, "mfu": 0.25}
  results = [
      {**common, "framework": "clipa_t5x", "samples_per_s": 300.0, "attention": "cudnn"},
      {**common, "framework": "open_clip", "samples_per_s": 200.0, "attention": "SDPA"},
      {"label": "L/14 @ 84", "framework": "clipa_t5x", "error": "timed out after 9 s"},
  ]
  table = gc.format_table(results)
  assert "clipa_t5x / open_clip = 1.50x" in table
  assert "timed out after 9 s" in table
  assert " 25.0%" in table


def test_unknown_rows_and_frameworks_are_refused(gc, capsys):
  with pytest.raises(SystemExit):
    gc.main(["--rows", "b16_224,nope"])
  assert "unknown --rows ['nope']" in capsys.readouterr().err
  with pytest.raises(SystemExit):
    gc.main(["--frameworks", "clipa_t5x,tf"])
  assert "subset of" in capsys.readouterr().err


def test_a_job_that_cannot_fit_is_skipped_not_started(gc, capsys):
  results = gc.main(["--smoke", "--rows", "ti8_32", "--budget_s", "0"])
  assert [r["error"].split(":")[0] for r in results] == ["skipped", "skipped"]


@pytest.mark.slow
def test_smoke_runs_both_frameworks_without_tensorflow(tmp_path):
  """The GPU machine has no TF/seqio/gin/clu: the smoke run hides them too."""
  out = tmp_path / "gpu_check.json"
  env = hidden_packages_env(tmp_path)
  env["XLA_FLAGS"] = ""
  proc = subprocess.run(
      ["bash", os.path.join(_BENCH, "gpu_check.sh"), "--smoke", "--rows", "ti8_32",
       "--budget_s", "400", "--json", str(out)],
      capture_output=True, text=True, env={**env, "PYTHON": sys.executable}, timeout=600,
      check=False)
  assert proc.returncode == 0, proc.stderr[-2000:]
  results = {r["framework"]: r for r in json.loads(out.read_text())["results"]}
  clipa = results["clipa_t5x"]
  assert clipa["samples_per_s"] > 0 and clipa["attention"] == "chunked"  # CPU default
  torch_ok = importlib.util.find_spec("open_clip") is not None
  if torch_ok or os.environ.get("CLIPA_REQUIRE_TORCH") == "1":
    assert results["open_clip"].get("samples_per_s", 0) > 0, results["open_clip"]
    assert "clipa_t5x / open_clip" in proc.stdout
  else:
    assert "open_clip" in results["open_clip"]["error"]
