"""The dataset registry: option files name a dataset by its class name (``type: REDSDataset``)."""

from __future__ import annotations

from torch.utils.data import Dataset

from data.reds import REDSDataset
from data.video_folder import VideoFolderDataset
from data.video_test import VideoTestDataset, Vimeo90KTestDataset
from data.vimeo90k import Vimeo90KDataset

DATASETS: dict[str, type[Dataset]] = {
    "REDSDataset": REDSDataset,
    "Vimeo90KDataset": Vimeo90KDataset,
    "VideoTestDataset": VideoTestDataset,
    "Vimeo90KTestDataset": Vimeo90KTestDataset,
    "VideoFolderDataset": VideoFolderDataset,
}


def build_dataset(type: str, **kwargs) -> Dataset:
    """The dataset registered as ``type``, built with its constructor keywords ``kwargs``."""
    if type not in DATASETS:
        raise KeyError(f"unknown dataset type {type!r}; registered: {', '.join(DATASETS)}")
    return DATASETS[type](**kwargs)
