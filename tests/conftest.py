"""Fixtures shared across the test tree (plain builders live in ``tests/builders.py``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.builders import demo_dataset


@pytest.fixture(scope="session")
def demo(tmp_path_factory) -> Path:
    """The demo dataset (real footage, 6 frames per clip, with LMDB copies), built once per session."""
    return demo_dataset(tmp_path_factory)
