"""Kill a command from outside (SIGKILL) once its checkpoint reaches a step: what resume tests start from."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from epverify.io import checkpoint

ENV = {**os.environ, "EPVERIFY_TEST_THREADS": "1", "OMP_NUM_THREADS": "1"}


def run_killed(argv: list[str], saved: Path, at_step: int = 20, within: float = 180) -> int:
    """Start `python -m epverify ARGV`, SIGKILL it once `saved` holds a checkpoint of step >= at_step, and return
    that step; fails when the command ends first."""
    proc = subprocess.Popen([sys.executable, "-m", "epverify", *argv], env=ENV, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    killed_at, deadline = None, time.time() + within
    while time.time() < deadline and proc.poll() is None:
        if saved.exists() and checkpoint.load(saved)["step"] >= at_step:
            proc.send_signal(signal.SIGKILL)
            killed_at = checkpoint.load(saved)["step"]
            break
        time.sleep(0.05)
    proc.wait(timeout=30)
    assert killed_at is not None, "the command finished before it could be killed"
    assert proc.returncode == -signal.SIGKILL
    return killed_at


def run(argv: list[str]) -> subprocess.CompletedProcess:
    """`python -m epverify ARGV` to its end, on one thread, output captured."""
    return subprocess.run([sys.executable, "-m", "epverify", *argv], env=ENV, capture_output=True, text=True,
                          timeout=600)
