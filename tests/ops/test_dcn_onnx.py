"""The DCN ops exported as the standard ONNX ``DeformConv`` (ops/dcn/onnx_export.py) and run by ONNX
Runtime, against our op on the shared grid's hard cases (per-axis arguments, groups, DCNv1, samples
across and beyond the borders), for our native op and torchvision's."""

from __future__ import annotations

import warnings

import numpy as np
import onnx
import onnxruntime
import pytest
import torch
from torch import nn

from ops.dcn import deform_conv2d, get_backend
from ops.dcn.onnx_export import DEFORM_CONV_OPSET, translation_table
from tests.ops.dcn_cases import CASES, TOLERANCE, DcnCase, make_inputs

ONNX_CASES = [
    CASES[1],  # stride 1, padding 0, dilation 1, 8 offset groups, 2 groups
    CASES[-8],  # non-square kernel
    CASES[-7],  # per-axis stride, padding, dilation
    CASES[-6],  # DCNv1 (no mask)
    CASES[-5],  # no bias, 2 offset groups, 4 groups
    CASES[-4],  # many samples partly outside the image
    CASES[-2],  # every sample fully outside: output = bias
    DcnCase(batch=1, stride=2, padding=2, dilation=2, deform_groups=8, groups=2),
]


class DeformConvLayer(nn.Module):
    """``deform_conv2d`` with the weights as parameters and (x, offset[, mask]) as inputs."""

    def __init__(self, tensors: dict, kwargs: dict, backend: str):
        super().__init__()
        self.weight = nn.Parameter(tensors["weight"], requires_grad=False)
        bias = tensors["bias"]
        self.bias = nn.Parameter(bias, requires_grad=False) if bias is not None else None
        self.kwargs, self.backend = kwargs, backend

    def forward(self, x, offset, mask=None):
        return deform_conv2d(x, offset, mask, self.weight, self.bias, **self.kwargs, backend=self.backend)


def export_and_run(layer: nn.Module, inputs: tuple) -> tuple[onnx.ModelProto, np.ndarray]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.export.export(layer, inputs)  # loads the backend's op before the table is made
        model = torch.onnx.export(program, dynamo=True, opset_version=DEFORM_CONV_OPSET, verbose=False,
                                  custom_translation_table=translation_table()).model_proto
    onnx.checker.check_model(model, full_check=True)
    session = onnxruntime.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    feeds = {i.name: t.numpy() for i, t in zip(session.get_inputs(), inputs)}
    return model, session.run(None, feeds)[0]


@pytest.mark.parametrize("backend", ["native", "torchvision"])
@pytest.mark.parametrize("case", ONNX_CASES, ids=lambda c: c.id)
def test_deform_conv_is_the_standard_op_and_runs_in_onnxruntime(case, backend):
    get_backend(backend, "cpu")
    tensors, kwargs = make_inputs(case, dtype=torch.float32)
    inputs = (tensors["x"], tensors["offset"]) + ((tensors["mask"],) if case.masked else ())
    model, out = export_and_run(DeformConvLayer(tensors, kwargs, backend), inputs)

    expected = deform_conv2d(*inputs[:2], tensors["mask"], tensors["weight"], tensors["bias"], **kwargs,
                             backend="reference")
    assert out.shape == tuple(expected.shape)
    assert np.abs(out - expected.numpy()).max() <= TOLERANCE[torch.float32]
    (node,) = [n for n in model.graph.node if n.op_type == "DeformConv"]
    assert node.domain == "" and len(model.graph.node) == 1
    attributes = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    stride, padding, dilation = kwargs["stride"], kwargs["padding"], kwargs["dilation"]
    pads = [padding[0], padding[1], padding[0], padding[1]]  # top, left, bottom, right
    assert attributes == {"group": case.groups, "offset_group": case.deform_groups, "pads": pads,
                          "kernel_shape": list(case.kernel), "strides": list(stride),
                          "dilations": list(dilation)}
    with_bias = case.bias or backend == "torchvision"  # torchvision passes zeros for a missing bias
    expected_inputs = [True, True, True, with_bias, case.masked]  # X, W, offset, B, mask; trailing omitted
    assert [bool(name) for name in node.input] == expected_inputs[: len(node.input)]


def test_the_table_holds_the_ops_registered_here():
    get_backend("native", "cpu")
    table = translation_table()
    assert set(table) == {torch.ops.vidrestore.deform_conv2d.default,
                          torch.ops.torchvision.deform_conv2d.default}
