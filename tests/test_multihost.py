"""Two processes on localhost (2 fake CPU devices each, gloo) train like one process with 4."""

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "multihost", "worker.py")


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


@pytest.mark.slow
def test_two_processes_match_one_process_with_four_devices(tmp_path):
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  reference = subprocess.run([sys.executable, WORKER, str(tmp_path / "ref.json"), "1", "0", "0",
                              "4"], env=env, capture_output=True, text=True, timeout=600)
  assert reference.returncode == 0, reference.stderr[-3000:]
  port = str(_free_port())
  procs = [subprocess.Popen([sys.executable, WORKER, str(tmp_path / f"p{i}.json"), "2", str(i),
                             port, "2"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True) for i in range(2)]
  outputs = [p.communicate(timeout=600)[0] for p in procs]
  for p, out in zip(procs, outputs):
    assert p.returncode == 0, out[-3000:]
  ref = json.loads((tmp_path / "ref.json").read_text())
  hosts = [json.loads((tmp_path / f"p{i}.json").read_text()) for i in range(2)]
  assert ref["devices"] == 4 and ref["processes"] == 1
  assert [h["processes"] for h in hosts] == [2, 2] and [h["devices"] for h in hosts] == [4, 4]
  assert sorted(h["shard_id"] for h in hosts) == [0, 1] and hosts[0]["num_shards"] == 2
  for h in hosts:
    np.testing.assert_allclose(h["losses"], ref["losses"], rtol=1e-5)
    # One checkpoint written jointly by both processes reads back whole on each.
    assert h["checkpoint_step"] == 4 and h["restored_equal"]


SIGMOID_WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "multihost",
                              "sigmoid_worker.py")


def _sigmoid_reference():
  """The worker's batch and the float64 numpy reference of its loss and gradients."""
  sys.path.insert(0, os.path.dirname(SIGMOID_WORKER))
  import sigmoid_worker  # pylint: disable=import-outside-toplevel
  from test_losses import sigmoid_reference  # pylint: disable=import-outside-toplevel
  img, txt = sigmoid_worker.features()
  return sigmoid_reference(img, txt, sigmoid_worker.LOG_T, sigmoid_worker.BIAS)


def check_sigmoid_worker_output(got, ref):
  """Values and gradients within 1e-5 of the dense single-device reference."""
  np.testing.assert_allclose(got["loss"], ref["loss"], rtol=1e-5, atol=1e-5)
  for key in ("d_img", "d_txt", "d_log_t", "d_bias"):
    np.testing.assert_allclose(np.asarray(got[key]), ref[key], atol=1e-5, err_msg=key)
  for key in ("i2t_accuracy", "t2i_accuracy"):
    assert got[key] == pytest.approx(ref[key])


@pytest.mark.slow
def test_sigmoid_ring_over_two_processes_matches_the_dense_reference(tmp_path):
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  port = str(_free_port())
  procs = [subprocess.Popen([sys.executable, SIGMOID_WORKER, str(tmp_path / f"s{i}.json"), "2",
                             str(i), port, "2"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True) for i in range(2)]
  outputs = [p.communicate(timeout=600)[0] for p in procs]
  for p, out in zip(procs, outputs):
    assert p.returncode == 0, out[-3000:]
  ref = _sigmoid_reference()
  for i in range(2):
    got = json.loads((tmp_path / f"s{i}.json").read_text())
    assert (got["processes"], got["devices"], got["data_axis"]) == (2, 4, 4)
    check_sigmoid_worker_output(got, ref)


@pytest.mark.slow
def test_sigmoid_ring_on_eight_devices_matches_the_dense_reference(tmp_path):
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  result = subprocess.run([sys.executable, SIGMOID_WORKER, str(tmp_path / "s.json"), "1", "0",
                           "0", "8"], env=env, capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  got = json.loads((tmp_path / "s.json").read_text())
  assert (got["processes"], got["devices"], got["data_axis"]) == (1, 8, 8)
  check_sigmoid_worker_output(got, _sigmoid_reference())
