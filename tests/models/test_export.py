"""Exported networks (models/export.py) against the PyTorch network: ONNX graphs run by ONNX Runtime
(models/restoration/onnx_network.py) for every EDVR variant, at two input sizes through one file, with
offsets of a trained network's range; the graph's standard operators and metadata; the engine's
tiles and padding on an ONNX network; torch.export programs."""

from __future__ import annotations

import functools
import io
import json
import warnings

import onnx
import pytest
import torch

from models.checkpoint import CheckpointError
from models.export import (
    ONNX_INPUT,
    ONNX_OUTPUT,
    check_onnx_graph,
    count_dcn_layers,
    export_metadata,
    export_onnx,
    export_program,
    load_program_metadata,
    save_program,
)
from models.restoration import Engine, Tiling
from models.restoration.onnx_network import OnnxNetwork
from ops.dcn import DCNv2Pack
from ops.dcn.onnx_export import DEFORM_CONV_OPSET, last_opset
from tests.builders import TINY_EDVR, spread_offsets, tiny_edvr

PARITY = 1e-4  # max |ONNX Runtime - PyTorch|, float32
# The variants we support, as tiny networks with their flags: EDVR-M/L (TSA), M/L woTSA, L deblur
# (predeblur, hr_in), and a 3-frame window whose reference is its first frame.
VARIANTS = {
    "tsa": {},
    "wotsa": {"with_tsa": False},
    "deblur_hr_in": {"hr_in": True, "with_predeblur": True},
    "3_frames_centre_0": {"num_frame": 3, "center_frame_idx": 0, "with_tsa": True},
}


def metadata_for(net) -> dict[str, str]:
    return export_metadata(net, {"type": "EDVR", **TINY_EDVR}, "0" * 64)


@pytest.fixture(scope="module")
def export_of():
    """variant -> (PyTorch network, its ONNX model, the model in ONNX Runtime), each exported once."""
    @functools.cache
    def export(variant: str) -> tuple[torch.nn.Module, onnx.ModelProto, OnnxNetwork]:
        net = spread_offsets(tiny_edvr(dcn_backend="native", **VARIANTS[variant]))
        model = export_onnx(net, metadata_for(net))
        return net, model, OnnxNetwork(model.SerializeToString())

    return export


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_onnxruntime_equals_pytorch_at_two_sizes_through_one_file(export_of, variant):
    """Two sizes and batches other than the traced one, and the smallest input (one size multiple)."""
    net, _, runtime = export_of(variant)
    m = net.size_multiple
    t = net.num_frame
    for shape in [(1, t, 3, 3 * m, 5 * m), (2, t, 3, 6 * m, 4 * m), (1, t, 3, m, m)]:
        lq = torch.rand(*shape)
        with torch.no_grad():
            expected = net(lq)
        out = runtime(lq)
        assert out.shape == expected.shape == (shape[0], 3, shape[3] * net.scale, shape[4] * net.scale)
        assert (out - expected).abs().max() <= PARITY
    offsets = [pack.offset_magnitude for pack in net.dcn_packs]
    assert min(offsets) > 0.5, offsets  # the alignment samples between pixels, as a trained network's


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_graph_is_standard_onnx_with_one_deform_conv_per_dcn_layer(export_of, variant):
    net, model, _ = export_of(variant)
    assert [(entry.domain, entry.version) for entry in model.opset_import] == [("", 19)]
    assert {node.domain for node in model.graph.node} == {""} and not model.functions
    assert sum(node.op_type == "DeformConv" for node in model.graph.node) == len(net.dcn_packs) == 4
    (lq,), (out,) = model.graph.input, model.graph.output
    assert (lq.name, out.name) == (ONNX_INPUT, ONNX_OUTPUT)
    dims = [d.dim_param or d.dim_value for d in lq.type.tensor_type.shape.dim]
    assert dims[1:3] == [net.num_frame, 3]
    assert all(isinstance(d, str) and d for d in (dims[0], dims[3], dims[4]))  # batch, H, W: symbolic


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_metadata_props_record_the_geometry(export_of, variant):
    net, model, runtime = export_of(variant)
    props = {p.key: p.value for p in model.metadata_props}
    assert json.loads(props["architecture"]) == {"type": "EDVR", **TINY_EDVR}
    assert props["weights_sha256"] == "0" * 64
    geometry = (net.scale, net.size_multiple, net.num_frame, net.center_frame_idx)
    keys = ("scale", "size_multiple", "num_frame", "center_frame_idx")
    assert tuple(int(props[k]) for k in keys) == geometry
    assert (runtime.scale, runtime.size_multiple, runtime.num_frame, runtime.center_frame_idx) == geometry


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_the_engine_tiles_and_pads_an_onnx_network_as_a_pytorch_one(export_of, variant):
    """Frames of any size (reflect-padded to the size multiple), tiles with context, a batch of windows."""
    net, _, runtime = export_of(variant)
    m = net.size_multiple
    lq = torch.rand(2, net.num_frame, 3, 9 * m + 3, 7 * m - 1)
    tiling = Tiling(size=4 * m, overlap=2 * m)
    with torch.no_grad():
        expected = Engine(net, tiling=tiling).restore_batch(lq)
    out = Engine(runtime, tiling=tiling).restore_batch(lq)
    assert out.shape == expected.shape and (out - expected).abs().max() <= PARITY


def test_the_last_opset_the_exporter_reaches_runs_in_onnxruntime():
    """DeformConv changed at opset 22 (more types); the exporter converts the graph up to
    ``last_opset()``, and beyond it refuses rather than fail inside onnx's converter."""
    net = spread_offsets(tiny_edvr(dcn_backend="native", with_tsa=False))
    model = export_onnx(net, metadata_for(net), opset=last_opset())
    assert [(entry.domain, entry.version) for entry in model.opset_import] == [("", last_opset())]
    lq = torch.rand(1, net.num_frame, 3, 3 * net.size_multiple, 2 * net.size_multiple)
    with torch.no_grad():
        assert (OnnxNetwork(model.SerializeToString())(lq) - net(lq)).abs().max() <= PARITY
    for opset in (DEFORM_CONV_OPSET - 1, last_opset() + 1):
        with pytest.raises(ValueError, match=f"opset {opset}: ONNX has DeformConv from opset 19 on"):
            export_onnx(net, metadata_for(net), opset=opset)


def test_a_graph_without_deform_conv_or_with_custom_domains_is_refused(export_of):
    """The pure-PyTorch reference backend traces into gathers, not DeformConv: such a graph, or one
    that needs a custom domain (a runtime plugin), is not an export."""
    layer = DCNv2Pack(8, 8, 3, padding=1, deformable_groups=2, backend="reference").eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        decomposed = torch.onnx.export(layer, (torch.rand(1, 8, 6, 6), torch.rand(1, 8, 6, 6)), dynamo=True,
                                       verbose=False).model_proto
    with pytest.raises(ValueError, match="0 DeformConv nodes for the network's 1 DCN layers"):
        check_onnx_graph(decomposed, count_dcn_layers(layer))

    _, model, _ = export_of("tsa")
    custom = onnx.ModelProto()
    custom.CopyFrom(model)
    custom.graph.node[0].domain = "mmcv"
    with pytest.raises(ValueError, match="custom domains \\['mmcv'\\]"):
        check_onnx_graph(custom, 4)


def test_an_onnx_network_checks_its_input_and_cannot_be_trained(export_of):
    net, _, runtime = export_of("tsa")
    m = net.size_multiple
    with pytest.raises(ValueError, match=f"multiples of {m}"):
        runtime(torch.rand(1, net.num_frame, 3, m + 2, m))
    with pytest.raises(ValueError, match=f"expected \\(B, {net.num_frame}, 3, H, W\\)"):
        runtime(torch.rand(1, net.num_frame + 1, 3, m, m))
    assert runtime.eval() is runtime.train(False) is runtime and not runtime.training
    with pytest.raises(RuntimeError, match="inference only"):
        runtime.train()


def test_models_without_an_exports_metadata_are_refused(export_of, tmp_path):
    _, model, _ = export_of("tsa")
    for key, value, message in [("num_frame", None, "have no 'num_frame'"), ("scale", "x4", "not an integer"),
                                ("center_frame_idx", "5", "not a frame of num_frame=5"),
                                ("architecture", "[1]", "not a JSON network section")]:
        broken = onnx.ModelProto()
        broken.CopyFrom(model)
        kept = [(p.key, p.value) for p in broken.metadata_props if p.key != key]
        del broken.metadata_props[:]
        for k, v in kept + ([(key, value)] if value is not None else []):
            broken.metadata_props.add(key=k, value=v)
        with pytest.raises(CheckpointError, match=message):
            OnnxNetwork(broken.SerializeToString())
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"\x00not a model" * 100)
    with pytest.raises(CheckpointError, match="ONNX Runtime cannot load it"):
        OnnxNetwork(garbage)
    with pytest.raises(CheckpointError, match="no such ONNX model file"):
        OnnxNetwork(tmp_path / "missing.onnx")


def test_torch_export_program_round_trips_through_a_pt2_file_with_its_metadata(tmp_path):
    net = spread_offsets(tiny_edvr(dcn_backend="native", hr_in=True, with_predeblur=True))
    program = export_program(net)
    assert {str(node.target) for node in program.graph.nodes if "deform" in str(node.target)} == {
        "vidrestore.deform_conv2d.default"}
    buffer = io.BytesIO()
    save_program(program, buffer, metadata_for(net))
    path = tmp_path / "edvr.pt2"
    path.write_bytes(buffer.getvalue())
    loaded = torch.export.load(path).module()
    for shape in [(1, 5, 3, 32, 48), (3, 5, 3, 64, 32)]:
        lq = torch.rand(*shape)
        with torch.no_grad():
            assert (loaded(lq) - net(lq)).abs().max() <= PARITY
    with pytest.raises(AssertionError, match="Guard failed"):  # one size multiple: below the program's range
        loaded(torch.rand(1, 5, 3, 32, 16))
    assert load_program_metadata(path) == metadata_for(net)
