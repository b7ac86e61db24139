"""A network exported for deployment, with its geometry recorded.

- ``export_onnx``: an ONNX graph of ``net.forward`` through ``torch.onnx.export(..., dynamo=True)``
  (``torch.export`` underneath): input ``lq`` (B, T, C, H, W) float32 in [0, 1], output
  ``restored`` (B, C_out, H*scale, W*scale), batch, height and width dynamic (H and W multiples
  of ``size_multiple``); each DCN layer becomes the standard ``DeformConv`` (``ops.dcn.onnx_export``),
  so no custom domain. The geometry and provenance go into the model's metadata props
  (``onnx_metadata``), which is where ``models.restoration.onnx_network.OnnxNetwork`` reads them.
- ``export_program``: the same graph as a ``torch.export`` program (a ``.pt2`` file,
  ``save_program``); it calls our op by name, so the process that loads it must load the op
  library first (``docs/deploy.md``).

Why the dynamo exporter: it traces with ``torch.export``, which understands our op through its
registered fake kernel, takes dynamic sizes as ``Dim`` constraints (H = 4*h makes the
network's own multiple-of-4 check hold for every size), and maps ops to ONNX with onnxscript
functions. The TorchScript exporter (``register_custom_op_symbolic``) is deprecated in torch 2.x.

onnx and onnxscript are imported inside the ONNX functions only: importing this module, training
and restoring with PyTorch never need them.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, BinaryIO

import torch
from torch import Tensor, nn

ONNX_INPUT = "lq"
ONNX_OUTPUT = "restored"
PROGRAM_METADATA_FILE = "vidrestore.json"  # inside a .pt2 file: the same metadata as an ONNX file's
# Metadata props of an export, all strings: the network section (JSON) and its geometry.
METADATA_KEYS = ("architecture", "scale", "size_multiple", "num_frame", "center_frame_idx", "weights_sha256")


def file_sha256(path: str | os.PathLike) -> str:
    """SHA-256 of a file's bytes, hex: names the weights an export was made from."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def export_metadata(net: nn.Module, architecture: Mapping[str, Any], weights_sha256: str) -> dict[str, str]:
    """Metadata props of an export of ``net``: ``architecture`` (the network section, e.g.
    ``{"type": "EDVR", "num_feat": 64, ...}``, as JSON), the geometry ``net`` states (scale,
    size multiple, frames per window, centre index) and the SHA-256 of the source weights."""
    return {
        "architecture": json.dumps(dict(architecture), sort_keys=True),
        "scale": str(net.scale),
        "size_multiple": str(net.size_multiple),
        "num_frame": str(net.num_frame),
        "center_frame_idx": str(net.center_frame_idx),
        "weights_sha256": weights_sha256,
    }


def example_input(net: nn.Module, batch: int = 2, size: tuple[int, int] = (2, 3)) -> Tensor:
    """A random (batch, T, C, H, W) input for ``net``, H and W = ``size`` times its size multiple.

    Tracing needs a batch other than 1 and sizes other than one multiple, else torch.export
    specialises them (its 0/1 rule) and the dimension would not stay dynamic."""
    multiple = net.size_multiple
    return torch.rand(batch, net.num_frame, net.num_in_ch, size[0] * multiple, size[1] * multiple)


def dynamic_shapes(net: nn.Module) -> tuple[dict[int, Any]]:
    """``torch.export`` dynamic dimensions of the input: batch, and height and width as multiples
    of the network's size multiple, at least two of them: the trace assumes the coarsest pyramid
    level is not 1 pixel (torch.export's 0/1 rule), and a ``.pt2`` program checks it when it runs.
    The ONNX graph holds no such checks and gives the network's result at one multiple too (tested)."""
    multiple = net.size_multiple
    batch = torch.export.Dim("batch", min=1, max=4096)
    height = torch.export.Dim("height_blocks", min=2, max=65536 // multiple)
    width = torch.export.Dim("width_blocks", min=2, max=65536 // multiple)
    return ({0: batch, 3: multiple * height, 4: multiple * width},)


def export_program(net: nn.Module) -> torch.export.ExportedProgram:
    """``net.forward`` as a ``torch.export`` program with dynamic batch, height and width (``net``
    is put in eval mode without gradients, in place)."""
    net = net.eval().requires_grad_(False)
    return torch.export.export(net, (example_input(net),), dynamic_shapes=dynamic_shapes(net))


def save_program(program: torch.export.ExportedProgram, handle: BinaryIO,
                 metadata: Mapping[str, str]) -> None:
    """Write ``program`` as a ``.pt2`` file into ``handle``, with ``metadata`` as JSON inside it
    (``PROGRAM_METADATA_FILE``)."""
    torch.export.save(program, handle, extra_files={PROGRAM_METADATA_FILE: json.dumps(dict(metadata))})


def load_program_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The metadata ``save_program`` wrote into a ``.pt2`` file (loads the program: the ops it
    calls must be registered, see ``docs/deploy.md``)."""
    extra = {PROGRAM_METADATA_FILE: ""}
    torch.export.load(Path(path), extra_files=extra)
    return json.loads(extra[PROGRAM_METADATA_FILE])


def export_onnx(net: nn.Module, metadata: Mapping[str, str], opset: int | None = None):
    """``net.forward`` as an ONNX model (``onnx.ModelProto``; weights inside, no external data)
    with ``metadata`` as its metadata props, checked by ``onnx.checker`` and ``check_onnx_graph``.

    ``opset``: the ONNX opset (None: 19, the first with DeformConv; at most
    ``ops.dcn.onnx_export.last_opset()``). The DCN layers must run an op with a translation: our
    native op or torchvision's (``ops.dcn`` backends ``native``, ``torchvision``); anything else
    is refused rather than exported as a decomposition.
    """
    import onnx

    from ops.dcn.onnx_export import DEFORM_CONV_OPSET, last_opset, translation_table

    opset = DEFORM_CONV_OPSET if opset is None else opset
    if not DEFORM_CONV_OPSET <= opset <= last_opset():
        raise ValueError(f"opset {opset}: ONNX has DeformConv from opset {DEFORM_CONV_OPSET} on, and the "
                         f"installed onnx and onnxscript export up to opset {last_opset()}")
    program = export_program(net)  # first: tracing loads the DCN backend, whose op the table then holds
    onnx_program = torch.onnx.export(
        program, dynamo=True, opset_version=opset, input_names=[ONNX_INPUT], output_names=[ONNX_OUTPUT],
        custom_translation_table=translation_table(), verbose=False, optimize=True,
    )
    model = onnx_program.model_proto
    model.doc_string = (f"vidrestore export: input {ONNX_INPUT} (B, T, C, H, W) float32 RGB in [0, 1], "
                        f"H and W multiples of size_multiple; output {ONNX_OUTPUT} (B, C, H*scale, W*scale)")
    for key, value in metadata.items():
        model.metadata_props.add(key=key, value=str(value))
    onnx.checker.check_model(model, full_check=True)
    check_onnx_graph(model, deform_convs=count_dcn_layers(net))
    return model


def count_dcn_layers(net: nn.Module) -> int:
    from ops.dcn import ModulatedDeformConv2d

    return sum(isinstance(module, ModulatedDeformConv2d) for module in net.modules())


def check_onnx_graph(model, deform_convs: int) -> None:
    """Refuse a graph that is not all standard ONNX or does not hold one ``DeformConv`` per DCN
    layer (e.g. a DCN backend whose op was decomposed into gathers)."""
    nodes = list(_all_nodes(model.graph))
    for function in model.functions:  # local functions (the exporter inlines them; refused if not standard)
        nodes.extend(_all_nodes(function))
    custom = sorted({node.domain for node in nodes if node.domain not in ("", "ai.onnx")})
    if custom or any(entry.domain not in ("", "ai.onnx") for entry in model.opset_import):
        raise ValueError(f"the exported graph uses custom domains {custom}: it would need a runtime plugin")
    found = sum(node.op_type == "DeformConv" for node in nodes)
    if found != deform_convs:
        raise ValueError(f"the exported graph has {found} DeformConv nodes for the network's {deform_convs} "
                         "DCN layers: build the network with the native or torchvision DCN backend to export "
                         "it")


def _all_nodes(graph) -> Iterator:
    """Every node of ``graph`` (or of a local function) and of its subgraphs (If/Loop bodies)."""
    for node in graph.node:
        yield node
        for attribute in node.attribute:
            if attribute.g.node:
                yield from _all_nodes(attribute.g)
            for subgraph in attribute.graphs:
                yield from _all_nodes(subgraph)


def max_difference(net: nn.Module, other, inputs: Sequence[Tensor]) -> float:
    """The largest absolute difference between ``net(x)`` and ``other(x)`` over ``inputs``."""
    worst = 0.0
    with torch.no_grad():
        for x in inputs:
            worst = max(worst, float((net(x) - other(x)).abs().max()))
    return worst
