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
