"""The network registry: option files name a network by its class name (``type: EDVR``)."""

from __future__ import annotations

from torch import nn

from models.edvr import EDVR

NETWORKS: dict[str, type[nn.Module]] = {"EDVR": EDVR}


def build_network(type: str, **kwargs) -> nn.Module:
    """The network registered as ``type``, built with its constructor keywords ``kwargs``."""
    if type not in NETWORKS:
        raise KeyError(f"unknown network type {type!r}; registered: {', '.join(NETWORKS)}")
    return NETWORKS[type](**kwargs)
