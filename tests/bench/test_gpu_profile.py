"""Tests of bench/gpu_profile.py: kernel kinds, the trace reader, and the CPU smoke run."""
import gzip
import json
import os

import pytest

import bench_modules


@pytest.fixture(scope="module")
def gp():
  return bench_modules.load("gpu_profile")


@pytest.mark.parametrize("name,kind", [
    ("nvjet_sm90_tst_128x128_64x6_2x1_v_bz_TNT", "matmul"),
    ("gemm_fusion_dot_560", "matmul"),
    ("cudnn_generated_fort_native_sdpa_sm90_flash_fprop", "attention"),
    ("loop_convert_multiply_fusion_23", "element-wise fusion"),
    ("input_add_reduce_fusion_20", "reduction"),
    ("Memcpy HtoD", "copy"),
    ("something_else", "other"),
])
def test_kernel_kinds(gp, name, kind):
  assert gp.kernel_kind(name) == kind


def _trace():
  """Two GPU kernels on a stream, a summary line on the same device, host events."""
  meta = [
      {"ph": "M", "name": "process_name", "pid": 1, "args": {"name": "/device:GPU:0"}},
      {"ph": "M", "name": "thread_name", "pid": 1, "tid": 7, "args": {"name": "Stream #14(Compute)"}},
      {"ph": "M", "name": "thread_name", "pid": 1, "tid": 8, "args": {"name": "XLA Ops"}},
      {"ph": "M", "name": "process_name", "pid": 2, "args": {"name": "/host:CPU"}},
  ]
  events = [
      {"ph": "X", "pid": 1, "tid": 7, "name": "nvjet_gemm", "ts": 0, "dur": 60},
      {"ph": "X", "pid": 1, "tid": 7, "name": "loop_add_fusion", "ts": 50, "dur": 20},
      {"ph": "X", "pid": 1, "tid": 7, "name": "nvjet_gemm", "ts": 100, "dur": 60},
      {"ph": "X", "pid": 1, "tid": 8, "name": "fusion.1", "ts": 0, "dur": 160},
      {"ph": "X", "pid": 2, "tid": 3, "name": "python", "ts": 0, "dur": 500},
  ]
  return {"traceEvents": meta + events}


def test_device_events_keep_only_the_gpu_streams(gp):
  events = gp.device_events(_trace())
  assert [e["name"] for e in events] == ["nvjet_gemm", "loop_add_fusion", "nvjet_gemm"]


def test_busy_time_merges_overlaps(gp):
  busy, span = gp.busy_time(gp.device_events(_trace()))
  assert (busy, span) == (130.0, 160.0)  # [0, 70] and [100, 160]; idle 30


def test_summary_per_step(gp):
  text = gp.summarize(gp.device_events(_trace()), steps=2)
  assert "span 0.08 ms, device busy 0.07 ms (81.2%), idle 0.01 ms" in text
  assert "matmul" in text and "85.7%" in text  # 120 of 140 us of kernel time
  assert gp.summarize([], steps=1) == "no device events in the trace"


def test_launch_class_from_kernel_details(gp):
  def event(grid, block):
    return {"args": {"kernel_details": f"regs:32 grid:{grid},1,1 block:{block},1,1 occ_pct:100"}}
  assert gp.launch_class(event(200000, 128)) == ">= 20M threads"
  assert gp.launch_class(event(40000, 128)) == "2M-20M threads"
  assert gp.launch_class(event(1000, 128)) == "< 2M threads"
  assert gp.launch_class({"args": {}}) == "unknown"


def test_summary_splits_fusions_by_launch_size(gp):
  trace = _trace()
  trace["traceEvents"][5]["args"] = {"kernel_details": "grid:200000,1,1 block:128,1,1"}
  text = gp.summarize(gp.device_events(trace), steps=1)
  assert "element-wise fusion, >= 20M threads" in text


def test_load_trace_reads_the_newest_perfetto_file(gp, tmp_path):
  folder = tmp_path / "plugins" / "profile" / "run1"
  folder.mkdir(parents=True)
  with gzip.open(folder / "perfetto_trace.json.gz", "wt") as f:
    json.dump(_trace(), f)
  assert len(gp.load_trace(str(tmp_path))["traceEvents"]) == 9
  with pytest.raises(FileNotFoundError, match="no perfetto_trace"):
    gp.load_trace(str(tmp_path / "plugins" / "empty"))


def test_unknown_variant_is_refused(gp):
  with pytest.raises(SystemExit):
    gp.main(["--smoke", "--variants", "host,warp"])


@pytest.mark.slow
def test_smoke_run_on_cpu(gp, tmp_path):
  out = tmp_path / "profile.json"
  hlo = tmp_path / "step.hlo.txt"
  results = gp.main(["--smoke", "--variants", "resident,host,xla", "--json", str(out),
                     "--hlo", str(hlo), "--trace_dir", str(tmp_path / "trace")])
  assert set(results["variants"]) == {"resident", "host", "xla"}
  for row in results["variants"].values():
    assert row["ms_per_step"] > 0 and row["samples_per_s"] > 0
  assert results["variants"]["xla"]["overrides"] == {"attention_impl": "xla"}
  assert results["trace"]["variant"] == "resident"
  assert "ms/step" in results["trace"]["summary"]
  assert "HloModule" in hlo.read_text()
  assert json.loads(out.read_text())["model"] == "Ti/8"
