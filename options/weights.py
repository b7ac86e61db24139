"""The network a weights file stands for, as a validated ``network`` section.

A weights file of ours records the architecture it was trained with (``{"network": {"type":
"EDVR", ...}}``); BasicSR's files record none, and their architecture is read off the shapes of
their weights. Either way the result passes the same types, ranges and rules as an option
file's ``network`` section, and a recorded architecture must agree with the weights' shapes,
before anything is built: a file cannot make us allocate what its own weights do not hold.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from . import parse_network
from .parse import Spec

logger = logging.getLogger(__name__)


def network_from_weights(path: str | os.PathLike) -> Spec:
    """The ``network`` section of the weights file ``path`` (raises ``CheckpointError`` for an
    unreadable or inconsistent file, ``OptionsError`` for an architecture out of range)."""
    from models.checkpoint import CheckpointError, read_checkpoint, recorded_network, state_dict_of
    from models.edvr import edvr_config_from_state_dict

    path = Path(path)
    checkpoint = read_checkpoint(path)
    state, _ = state_dict_of(checkpoint, path)
    try:
        seen, reason = edvr_config_from_state_dict(state), ""
    except ValueError as error:
        seen, reason = None, str(error)
    recorded = recorded_network(checkpoint)
    if recorded is None:
        if seen is None:
            raise CheckpointError(f"{path}: records no architecture and its weights are not EDVR's ({reason})",
                                  hint="pass --opt with the network section the weights were trained with")
        logger.info("architecture read off the weights: %s", seen)
        return parse_network({"type": "EDVR", **seen}, f"{path} (read off its weights)")
    spec = parse_network(recorded, f"{path} [network]")
    differing = {k: v for k, v in (seen or {}).items() if spec.type == "EDVR" and spec.kwargs.get(k) != v}
    if differing:
        listed = ", ".join(f"{k}={spec.kwargs.get(k)!r} but its weights have {v!r}" for k, v in differing.items())
        raise CheckpointError(f"{path}: the recorded architecture does not match the weights: {listed}")
    return spec


def check_exported_network(recorded: Mapping[str, Any], spec: Spec, source: str | os.PathLike) -> None:
    """Refuse an exported model (e.g. ONNX) whose recorded network section is not ``spec`` (an
    option file's): ``CheckpointError`` naming the arguments that differ. The DCN backend is not
    part of an export; an unset centre index means ``num_frame // 2``."""
    from models.checkpoint import CheckpointError

    exported = parse_network(recorded, f"{source} [architecture]")

    def arguments(section: Spec) -> dict[str, Any]:
        kwargs = {key: value for key, value in section.kwargs.items() if key != "dcn_backend"}
        if "center_frame_idx" in kwargs and kwargs["center_frame_idx"] is None:
            kwargs["center_frame_idx"] = kwargs.get("num_frame", 1) // 2
        return kwargs

    theirs, ours = arguments(exported), arguments(spec)
    if exported.type != spec.type:
        differing = [f"type={exported.type!r} in the export but {spec.type!r} in the options"]
    else:
        differing = [f"{key}={theirs.get(key)!r} in the export but {ours.get(key)!r} in the options"
                     for key in sorted(theirs.keys() | ours.keys()) if theirs.get(key) != ours.get(key)]
    if differing:
        raise CheckpointError(f"{source}: exported from another network than the options give: "
                              f"{', '.join(differing)}",
                              hint="use the network section the model was exported with, or export these "
                                   "weights again with scripts/export.py")
