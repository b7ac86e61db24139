"""A DDP rank that dies makes the whole job exit non-zero within a bounded time (no hang)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from scripts.chaos_resume import write_options
from tests.builders import demo_dataset

ROOT = Path(__file__).resolve().parents[2]


def worker_pids(parent: int) -> dict[int, int]:
    """rank -> pid of the training processes started (directly or not) by ``parent``."""
    ranks = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes().split(b"\0")
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        variables = dict(v.split(b"=", 1) for v in environ if b"=" in v)
        if b"train.py" in cmdline and variables.get(b"TORCHELASTIC_RUN_ID") and b"RANK" in variables:
            if int(entry.name) != parent:
                ranks[int(variables[b"RANK"])] = int(entry.name)
    return ranks


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="needs /proc to find the worker processes")
def test_killed_rank_fails_the_job_quickly(tmp_path_factory, tmp_path):
    demo = demo_dataset(tmp_path_factory)
    opts = write_options(tmp_path / "ddp.yml", demo, tmp_path / "exp", iters=100000)
    log = tmp_path / "exp" / "chaos" / "logs" / "train.log"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
               str(ROOT / "train.py"), "-opt", str(opts), "--set", "logger.save_checkpoint_freq=1000",
               "--dist-timeout", "30"]
    job = subprocess.Popen(command, cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""},
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 180
        while not (log.is_file() and "iter 3/" in log.read_text()):
            assert job.poll() is None, "the job ended before training started"
            assert time.monotonic() < deadline, "training did not start"
            time.sleep(0.5)
        ranks = worker_pids(job.pid)
        assert set(ranks) == {0, 1}, ranks
        os.kill(ranks[1], signal.SIGKILL)
        killed_at = time.monotonic()
        returncode = job.wait(timeout=120)
        elapsed = time.monotonic() - killed_at
    finally:
        if job.poll() is None:
            job.kill()
    assert returncode != 0
    assert elapsed < 60, f"the job took {elapsed:.0f} s to fail"
    assert not any(worker_pids(job.pid).values())  # no orphaned rank left running
