"""The soak tool in tiny form: every fault once, nothing lost to a healthy receiver."""

import json
import subprocess
import sys

import pytest

from .conftest import ROOT


@pytest.mark.model
def test_short_soak_survives_every_fault():
    run = subprocess.run([sys.executable, str(ROOT / "tools" / "soak.py"), "--duration", "45",
                          "--fault-every", "4.5", "--json"], capture_output=True, text=True, timeout=240)
    result = json.loads(run.stdout.strip().splitlines()[-1])
    print(json.dumps(result, indent=1))  # shown when an assertion fails
    for key in ("frames_expected", "frames_lost_healthy", "missed_deadlines", "p99_dev_ms", "drift_frames",
                "rss_start_mb", "rss_end_mb", "faults_injected", "errors"):
        assert key in result
    assert set(result["faults_injected"]) == {"receiver_restart", "stalled_client", "disconnect", "model_raise",
                                              "model_hang", "long_line", "burst"}
    assert result["frames_lost_healthy"] == 0, result["per_sink"]
    # frames the measuring process itself let the kernel drop (its socket buffer overflowed while it was
    # starved of CPU) are reported apart, not as the server's loss; but each healthy receiver must
    # still have checked most of the stream, or this run judged nothing
    assert all(s["frames"] >= 0.75 * result["frames_expected"] for s in result["per_sink"].values()), \
        result["per_sink"]
    assert abs(result["drift_frames"]) <= 1.0
    assert result["errors"].get("done", 0) >= 3  # lines kept being played through the faults
    assert 0 < result["restarted_receiver_frames"] < result["per_sink"]["bob_vmc"]["frames"]
    # memory is judged on the hour-long run (docs/BENCHMARKS.md); 45 s is too short for a 10% bound
    assert run.returncode in (0, 1) and (run.returncode == 0) == result["ok"]
