"""An exported ONNX model (``scripts/export.py``) run by ONNX Runtime, as a network ``Engine`` drives.

``OnnxNetwork`` has what the engine and evaluation use of a network: its geometry (``scale``,
``size_multiple``, ``num_frame``, ``center_frame_idx``, read from the model's metadata props),
``net(lq)``: (B, T, C, H, W) -> (B, C_out, H*scale, W*scale) torch tensors, and eval mode. So
windows, padding, scene cuts, tiles, batches and the sinks work as with the PyTorch network.
Each window runs the whole graph: it has no ``extract_features``, so the pyramids of frames that
windows share are recomputed. Exporting the two halves instead is what
``scripts/bench/onnx_split.py`` measures; no measurement is recorded yet, so it is not built.

Providers: CUDA when onnxruntime has it and a GPU is present, else CPU. onnxruntime is imported
here only, when a model is opened.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..checkpoint import CheckpointError

logger = logging.getLogger(__name__)

ONNX_SUFFIX = ".onnx"
EXPORT_HINT = "export the weights with: python scripts/export.py --model W.pth --out model.onnx"
# Geometry metadata props (written by models.export.export_metadata) and their allowed ranges.
GEOMETRY_RANGES = {"scale": (1, 16), "size_multiple": (1, 1024), "num_frame": (1, 99),
                   "center_frame_idx": (0, 98)}


def is_onnx_model(path: str | os.PathLike | None) -> bool:
    """Whether ``path`` names an ONNX model (by its suffix), rather than PyTorch weights."""
    return path is not None and Path(path).suffix.lower() == ONNX_SUFFIX


def default_providers() -> list[str]:
    """ONNX Runtime execution providers, best first: CUDA where onnxruntime has it (the
    onnxruntime-gpu package) and a GPU is present, else CPU."""
    import onnxruntime

    if "CUDAExecutionProvider" in onnxruntime.get_available_providers() and torch.cuda.is_available():
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


def read_geometry(metadata: Mapping[str, str], source: str) -> tuple[dict[str, Any], dict[str, int]]:
    """(architecture, geometry) from an export's metadata props; ``CheckpointError`` naming the
    first prop that is missing or out of range."""
    def fail(message: str) -> CheckpointError:
        return CheckpointError(f"{source}: {message}; it is not a model exported by vidrestore",
                               hint=EXPORT_HINT)

    geometry = {}
    for key, (low, high) in GEOMETRY_RANGES.items():
        text = metadata.get(key)
        if text is None:
            raise fail(f"its metadata props have no {key!r}")
        try:
            value = int(text)
        except ValueError:
            raise fail(f"metadata prop {key!r} is {text[:40]!r}, not an integer") from None
        if not low <= value <= high:
            raise fail(f"metadata prop {key}={value} is outside [{low}, {high}]")
        geometry[key] = value
    if geometry["center_frame_idx"] >= geometry["num_frame"]:
        raise fail(f"metadata prop center_frame_idx={geometry['center_frame_idx']} is not a frame of "
                   f"num_frame={geometry['num_frame']}")
    try:
        architecture = json.loads(metadata.get("architecture", ""))
    except ValueError:
        architecture = None
    if not isinstance(architecture, dict) or not isinstance(architecture.get("type"), str):
        raise fail("its metadata prop 'architecture' is missing or not a JSON network section")
    return architecture, geometry


class OnnxNetwork:
    """An exported model restoring windows with ONNX Runtime (inference only; float32).

    ``model``: the ``.onnx`` file, or its bytes. ``providers``: ONNX Runtime execution providers
    (None: ``default_providers()``). Raises ``CheckpointError`` for a file ONNX Runtime cannot
    load or one without an export's metadata.
    """

    training = False  # evaluation reads and restores the mode of the network it is given

    def __init__(self, model: str | os.PathLike | bytes, providers: Sequence[str] | None = None):
        self.source = "<ONNX bytes>" if isinstance(model, bytes) else str(model)
        try:
            import onnxruntime
        except ImportError as error:
            raise CheckpointError(f"{self.source}: running an ONNX model needs onnxruntime ({error})",
                                  hint="pip install -r requirements-onnx.txt") from None
        if not isinstance(model, bytes) and not Path(model).is_file():
            raise CheckpointError(f"{model}: no such ONNX model file")
        options = onnxruntime.SessionOptions()
        # Allocation patterns pre-plan one block per input shape: off, to bound the peak RSS (effect not
        # recorded in docs/benchmarks.md; see docs/deploy.md).
        options.enable_mem_pattern = False
        options.log_severity_level = 3  # errors only: ONNX Runtime's warnings go to stderr
        try:
            self.session = onnxruntime.InferenceSession(
                model if isinstance(model, bytes) else str(model), options,
                providers=list(providers or default_providers()))
        except Exception as error:  # onnxruntime's own classes (InvalidProtobuf, InvalidGraph, Fail, ...)
            reason = str(error).strip().splitlines()[0][:300] if str(error).strip() else type(error).__name__
            raise CheckpointError(f"{self.source}: ONNX Runtime cannot load it ({reason})",
                                  hint=EXPORT_HINT) from error
        metadata = self.session.get_modelmeta().custom_metadata_map
        self.architecture, geometry = read_geometry(metadata, self.source)
        self.scale = geometry["scale"]
        self.size_multiple = geometry["size_multiple"]
        self.num_frame = geometry["num_frame"]
        self.center_frame_idx = geometry["center_frame_idx"]
        self.weights_sha256 = metadata.get("weights_sha256")
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        one_float_input = len(inputs) == 1 and len(inputs[0].shape) == 5 and inputs[0].type == "tensor(float)"
        if not one_float_input or len(outputs) != 1:
            found = f"{[(i.name, i.type, i.shape) for i in inputs]} -> {[o.name for o in outputs]}"
            raise CheckpointError(f"{self.source}: expected one float input (B, T, C, H, W) and one output, "
                                  f"got {found}", hint=EXPORT_HINT)
        self.input_name, self.output_name = inputs[0].name, outputs[0].name
        channels = inputs[0].shape[2]
        self.num_in_ch = channels if isinstance(channels, int) else None
        self.providers = self.session.get_providers()
        self.device = torch.device("cuda" if self.providers[0] == "CUDAExecutionProvider" else "cpu")
        logger.info("ONNX model %s: %s, scale %d, %d frames, providers %s", self.source,
                    self.architecture.get("type"), self.scale, self.num_frame, ", ".join(self.providers))

    def __call__(self, lq: Tensor) -> Tensor:
        """(B, T, C, H, W) in [0, 1], H and W multiples of ``size_multiple`` -> (B, C_out, H*scale,
        W*scale) float32, on the device of ``lq``."""
        self._check_input(lq)
        array = lq.detach().to("cpu", torch.float32).contiguous().numpy()
        (out,) = self.session.run([self.output_name], {self.input_name: array})
        return torch.from_numpy(out).to(lq.device)

    def _check_input(self, lq: Tensor) -> None:
        """The shape checks the network does before its forward (the graph holds none)."""
        if lq.dim() != 5 or lq.shape[1] != self.num_frame or self.num_in_ch not in (None, lq.shape[2]):
            raise ValueError(f"{self.source}: expected (B, {self.num_frame}, {self.num_in_ch}, H, W) input, "
                             f"got shape {tuple(lq.shape)}")
        height, width = lq.shape[-2:]
        if height % self.size_multiple or width % self.size_multiple:
            raise ValueError(f"{self.source}: H and W must be multiples of {self.size_multiple}, got "
                             f"{height}x{width}; pad the frames (e.g. reflect) and crop the output")

    def eval(self) -> OnnxNetwork:
        return self

    def train(self, mode: bool = True) -> OnnxNetwork:
        if mode:
            raise RuntimeError(f"{self.source}: an ONNX model runs inference only; it cannot be trained")
        return self

    def __repr__(self) -> str:
        return f"OnnxNetwork({self.source!r}, {self.architecture.get('type')}, providers={self.providers})"
