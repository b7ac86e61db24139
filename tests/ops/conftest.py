"""Fixtures shared by the DCN tests (helpers that run a backend live in dcn_cases.py)."""

from __future__ import annotations

import pytest
import torch

from ops.dcn import reset_backends


@pytest.fixture
def one_thread():
    """gradcheck makes thousands of tiny calls; on a busy machine each multi-threaded BLAS call
    inside them can wait milliseconds for a core, and a second thread only adds wake-ups."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def fresh_backend_cache():
    """Backends are chosen afresh in the test, and the test's choices are forgotten after it."""
    reset_backends()
    yield
    reset_backends()
