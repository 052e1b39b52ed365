"""Tests of clipa_t5x.cli: the quiet console of every entry point."""

import os
import subprocess
import sys

import pytest

from clipa_t5x import cli

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# What a CPU machine used to show at every start (twice): none of it may reach the console.
NOISE = ("absl::InitializeLog", "cuInit", "oneDNN", "cudart_stub", "Could not find cuda drivers",
         "I0000 ")


def _run(*args: str) -> subprocess.CompletedProcess:
  # The user's environment, not the test session's: no TF_CPP_MIN_LOG_LEVEL, and GPUs
  # "visible" (CUDA then reports its failure to find one, as on a user's CPU machine).
  env = {k: v for k, v in os.environ.items()
         if k not in ("TF_CPP_MIN_LOG_LEVEL", "CUDA_VISIBLE_DEVICES")}
  return subprocess.run([sys.executable, *args], cwd=REPO, env=env, capture_output=True,
                        text=True, timeout=300)


def _assert_quiet(stderr: str) -> None:
  for text in NOISE:
    assert text not in stderr, stderr


@pytest.mark.slow
def test_plan_prints_no_tensorflow_startup_noise():
  proc = _run("-m", "clipa_t5x.plan", "--gin_file=gin/runs/demo_cpu.gin")
  assert proc.returncode == 0, proc.stderr
  _assert_quiet(proc.stderr)
  assert "pretrain" in proc.stdout


@pytest.mark.slow
def test_a_command_that_imports_tensorflow_is_quiet_and_keeps_real_errors(tmp_path):
  # eval imports TF (SeqIO); its configuration error must still show, alone.
  proc = _run("-m", "clipa_t5x.eval", "--gin_file=gin/runs/eval_demo.gin",
              f"--gin.CHECKPOINT_PATH='{tmp_path}/no_such_run'")
  assert proc.returncode == 2
  _assert_quiet(proc.stderr)
  lines = [line for line in proc.stderr.splitlines() if line.strip()]
  assert lines and lines[-1].startswith("error: "), proc.stderr
  assert "no_such_run" in lines[-1]


def test_infer_and_convert_errors_are_one_line(tmp_path, capsys):
  # In this process: start-up noise is the subprocess tests' concern, the error path is main's.
  from clipa_t5x import convert, infer  # pylint: disable=import-outside-toplevel
  for main, args in ((infer.main, ["embed-texts", "--checkpoint", str(tmp_path / "none"), "--input",
                                   str(tmp_path / "none.txt"), "--out", str(tmp_path / "o.npy")]),
                     (convert.main, ["to-open-clip", "--checkpoint", str(tmp_path / "none"),
                                     "--out", str(tmp_path / "out")])):
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.strip().splitlines()[-1].startswith("error: "), err
    assert "Traceback" not in err


def test_import_of_tensorflow_is_filtered_and_hides_gpus():
  code = ("from clipa_t5x import cli; cli.quiet_startup(); import tensorflow as tf; "
          "print(tf.config.get_visible_devices('GPU'))")
  proc = _run("-c", code)
  assert proc.returncode == 0, proc.stderr
  _assert_quiet(proc.stderr)
  assert proc.stdout.strip() == "[]"


def test_filter_keeps_real_warnings_and_errors(capfd):
  with cli.tensorflow_startup_noise_hidden():
    for line in ("WARNING: All log messages before absl::InitializeLog() is called are "
                 "written to STDERR",
                 "I0000 00:00:1795978833.033837    5733 port.cc:153] oneDNN custom operations",
                 "E0000 00:00:1795978834.014827    5733 cuda_platform.cc:52] failed call to "
                 "cuInit: UNKNOWN ERROR (303)",
                 "W0000 00:00:1795978834.1    5733 some.cc:1] a real warning",
                 "E0000 00:00:1795978834.2    5733 other.cc:2] a real error",
                 "a Python warning"):
      os.write(2, (line + "\n").encode())
    print("python stderr", file=sys.stderr)
  err = capfd.readouterr().err
  _assert_quiet(err)
  for kept in ("a real warning", "a real error", "a Python warning", "python stderr"):
    assert kept in err


def test_filter_replays_what_was_written_before_an_exception(capfd):
  with pytest.raises(RuntimeError):
    with cli.tensorflow_startup_noise_hidden():
      os.write(2, b"shown anyway\n")
      raise RuntimeError("boom")
  assert "shown anyway" in capfd.readouterr().err
