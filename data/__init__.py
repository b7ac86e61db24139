"""Frame stores, datasets and the dataset registry.

``build_dataset("REDSDataset", dataroot_gt=..., ...)`` constructs a dataset by its registry
name with keyword arguments that map 1:1 onto its constructor. ``DATASETS`` is the plain dict
{name: class}. The dataset modules (and torch) are imported when the registry is first used,
so tools that only need ``data.storage`` (create_lmdb and its worker processes) start light.
"""

from __future__ import annotations

from functools import cache


@cache
def _registry() -> dict[str, type]:
    from data.reds import REDSDataset
    from data.video_folder import VideoFolderDataset
    from data.video_test import VideoTestDataset, Vimeo90KTestDataset
    from data.vimeo90k import Vimeo90KDataset

    return {
        "REDSDataset": REDSDataset,
        "Vimeo90KDataset": Vimeo90KDataset,
        "VideoTestDataset": VideoTestDataset,
        "Vimeo90KTestDataset": Vimeo90KTestDataset,
        "VideoFolderDataset": VideoFolderDataset,
    }


def __getattr__(name: str):
    if name == "DATASETS":
        return _registry()
    raise AttributeError(f"module 'data' has no attribute {name!r}")


def build_dataset(type: str, **kwargs):
    """Instantiate the dataset registered as ``type`` with constructor keywords ``kwargs``."""
    registry = _registry()
    if type not in registry:
        raise KeyError(f"unknown dataset type {type!r}; registered: {', '.join(registry)}")
    return registry[type](**kwargs)
