"""Kill -9 at random moments (checkpoint writes included), resume, and get bit-identical weights.

The default run kills 3 times; `python scripts/chaos_resume.py --kills 20` is the long version.
"""

from __future__ import annotations

import pytest

from scripts.chaos_resume import run_chaos


@pytest.mark.slow
def test_kill_9_and_resume_gives_bit_identical_weights(tmp_path):
    lines = []
    assert run_chaos(kills=3, iters=12, seed=1, workdir=tmp_path, log=lines.append), "\n".join(lines)
    assert sum("kill " in line for line in lines) == 3
