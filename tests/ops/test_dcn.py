"""DCNv2 op: the reference against torchvision, its gradients, the API's checks and backends."""

from __future__ import annotations

import logging

import pytest
import torch
import torch.nn.functional as F

import ops.dcn.backends as backends
from ops.dcn import (
    BackendUnavailable,
    DCNv2Pack,
    ModulatedDeformConv2d,
    available_backends,
    deform_conv2d,
    get_backend,
    reset_backends,
)
from tests.ops.dcn_cases import (
    CASES,
    GRADCHECK_CASES,
    TOLERANCE,
    DcnCase,
    gradcheck,
    make_inputs,
    outputs_and_grads,
    run,
)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_reference_matches_torchvision(case: DcnCase, dtype: torch.dtype):
    tensors, kwargs = make_inputs(case, dtype)
    ours = outputs_and_grads(tensors, kwargs, "reference")
    theirs = outputs_and_grads(tensors, kwargs, "torchvision")
    assert ours.keys() == theirs.keys()
    for name in ours:
        error = (ours[name] - theirs[name]).abs().max().item()
        assert error <= TOLERANCE[dtype], f"{name}: max |reference - torchvision| = {error:.3g}"


def test_fully_outside_samples_give_bias_only():
    case = next(c for c in CASES if c.offset_shift >= 40)
    tensors, kwargs = make_inputs(case)
    out = run(tensors, kwargs, "reference")
    expected = tensors["bias"].view(1, -1, 1, 1).expand_as(out)
    torch.testing.assert_close(out, expected, rtol=0, atol=0)


@pytest.mark.parametrize("backend", ["reference", "torchvision"])
@pytest.mark.parametrize(
    "stride,padding,dilation,groups", [(1, 1, 1, 1), (2, 0, 1, 2), (1, 2, 2, 4), ((2, 1), (1, 0), (1, 2), 1)]
)
def test_zero_offsets_and_unit_mask_equal_conv2d(backend, stride, padding, dilation, groups):
    """Pins the offset layout and sampling grid: no deformation is a plain convolution."""
    torch.manual_seed(0)
    x = torch.randn(2, 8, 10, 11, dtype=torch.float64)
    weight = torch.randn(6 * groups // groups * 2, 8 // groups, 3, 3, dtype=torch.float64)
    bias = torch.randn(weight.shape[0], dtype=torch.float64)
    expected = F.conv2d(x, weight, bias, stride, padding, dilation, groups)
    offset = torch.zeros(2, 2 * 2 * 9, *expected.shape[-2:], dtype=torch.float64)
    mask = torch.ones(2, 2 * 9, *expected.shape[-2:], dtype=torch.float64)
    out = deform_conv2d(x, offset, mask, weight, bias, stride, padding, dilation, backend=backend)
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-12)


def test_whole_pixel_offset_shifts_the_input():
    """offset (dy, dx) = (1, -2) everywhere samples x[r + 1, c - 2]: pins [dy, dx] order."""
    x = torch.arange(5 * 7, dtype=torch.float64).view(1, 1, 5, 7)
    weight = torch.zeros(1, 1, 3, 3, dtype=torch.float64)
    weight[0, 0, 1, 1] = 1  # centre tap only
    offset = torch.zeros(1, 18, 5, 7, dtype=torch.float64)
    offset[:, 0::2] = 1.0  # dy
    offset[:, 1::2] = -2.0  # dx
    out = deform_conv2d(x, offset, None, weight, padding=1, backend="reference")
    expected = torch.zeros_like(x)
    expected[..., :4, 2:] = x[..., 1:, :5]
    torch.testing.assert_close(out, expected, rtol=0, atol=0)


def test_half_pixel_outside_takes_half_of_the_edge():
    """A sample at row -0.5 blends row 0 (weight 0.5) with the zero outside."""
    x = torch.full((1, 1, 3, 3), 4.0, dtype=torch.float64)
    weight = torch.zeros(1, 1, 1, 1, dtype=torch.float64)
    weight[...] = 1
    offset = torch.zeros(1, 2, 3, 3, dtype=torch.float64)
    offset[:, 0] = -0.5
    out = deform_conv2d(x, offset, None, weight, backend="reference")
    assert out[0, 0, 0].tolist() == [2.0, 2.0, 2.0]
    assert out[0, 0, 1:].eq(4.0).all()


@pytest.mark.parametrize("case", GRADCHECK_CASES, ids=lambda c: c.id)
def test_reference_gradcheck(case: DcnCase, one_thread):
    assert gradcheck(case, "reference")


def test_reference_offset_gradient_at_whole_pixels_is_the_forward_difference():
    """At integer sample positions (zero offsets, as every DCNv2Pack starts) d out / d dy is
    x[r + 1] - x[r] (the derivative of the bilinear blend from above), as torchvision's."""
    x = torch.randn(1, 1, 5, 5, dtype=torch.float64)
    weight = torch.ones(1, 1, 1, 1, dtype=torch.float64)
    grads = {}
    for backend in ("reference", "torchvision"):
        offset = torch.zeros(1, 2, 5, 5, dtype=torch.float64, requires_grad=True)
        deform_conv2d(x, offset, None, weight, backend=backend).sum().backward()
        grads[backend] = offset.grad
    expected_dy = torch.zeros(5, 5, dtype=torch.float64)
    expected_dy[:4] = x[0, 0, 1:] - x[0, 0, :4]
    expected_dy[4] = -x[0, 0, 4]  # row 5 is outside: counts as 0
    torch.testing.assert_close(grads["reference"][0, 0], expected_dy)
    torch.testing.assert_close(grads["reference"], grads["torchvision"])


def test_reference_accepts_non_contiguous_inputs():
    tensors, kwargs = make_inputs(CASES[3], torch.float64)
    strided, _ = make_inputs(CASES[3], torch.float64, contiguous=False)
    torch.testing.assert_close(run(strided, kwargs, "reference"), run(tensors, kwargs, "reference"), rtol=0, atol=0)


def test_half_precision_inputs_run_in_float32_inside_the_reference():
    tensors, kwargs = make_inputs(CASES[1], torch.float32)
    expected = run(tensors, kwargs, "reference")
    half = {k: v.to(torch.bfloat16) if v is not None else None for k, v in tensors.items()}
    out = run(half, kwargs, "reference")
    assert out.dtype == torch.bfloat16
    assert (out.float() - expected).abs().max() < 0.1


# ---- argument checks --------------------------------------------------------------------------


def valid_inputs():
    x = torch.randn(2, 16, 8, 8)
    offset = torch.zeros(2, 2 * 8 * 9, 8, 8)
    mask = torch.ones(2, 8 * 9, 8, 8)
    weight = torch.randn(4, 16, 3, 3)
    bias = torch.zeros(4)
    return dict(x=x, offset=offset, mask=mask, weight=weight, bias=bias)


def call(**changes):
    args = valid_inputs()
    kwargs = {k: changes.pop(k) for k in ("stride", "padding", "dilation", "backend") if k in changes}
    args.update(changes)
    kwargs.setdefault("padding", 1)
    return deform_conv2d(args["x"], args["offset"], args["mask"], args["weight"], args["bias"], **kwargs)


def test_valid_inputs_run():
    assert call().shape == (2, 4, 8, 8)


@pytest.mark.parametrize(
    "changes,message",
    [
        (dict(offset=torch.zeros(2, 100, 8, 8)), r"offset: channels must be a positive multiple of 2\*kh\*kw = 18"),
        (dict(offset=torch.zeros(2, 0, 8, 8)), r"offset: channels must be a positive multiple"),
        (dict(mask=torch.ones(2, 9, 8, 8)), r"mask: expected shape \(2, 72, 8, 8\).*got \(2, 9, 8, 8\)"),
        (dict(offset=torch.zeros(2, 144, 7, 8)), r"offset: expected shape \(2, 144, 8, 8\).*got \(2, 144, 7, 8\)"),
        (dict(mask=torch.ones(2, 72, 8, 9)), r"mask: expected shape \(2, 72, 8, 8\)"),
        (dict(offset=torch.zeros(1, 144, 8, 8)), r"offset: expected shape \(2, 144, 8, 8\)"),
        (dict(offset=torch.zeros(2, 5 * 18, 8, 8), mask=torch.ones(2, 45, 8, 8)),
         r"x: input channels \(16\) must be divisible by the deformable groups \(5"),
        (dict(weight=torch.randn(4, 5, 3, 3)), r"weight: expected shape \(Cout, Cin/groups, kh, kw\) with Cin=16"),
        (dict(weight=torch.randn(3, 8, 3, 3)), r"weight: expected shape .*divisible by groups"),
        (dict(bias=torch.zeros(5)), r"bias: expected shape \(4,\), got \(5,\)"),
        (dict(x=torch.randn(16, 8, 8)), r"x: expected a 4-D tensor, got shape \(16, 8, 8\)"),
        (dict(weight=torch.randn(4, 16, 3, 3, dtype=torch.float64)), r"weight: expected dtype torch.float32"),
        (dict(mask=torch.ones(2, 72, 8, 8, dtype=torch.float16)), r"mask: expected dtype torch.float32"),
        (dict(offset=torch.zeros(2, 144, 8, 8, dtype=torch.int64)), r"offset: expected a floating-point tensor"),
        (dict(bias=torch.zeros(4, device="meta")), r"bias: expected dtype torch.float32 on cpu"),
        (dict(x=torch.randn(2, 16, 1, 1), padding=0), r"x: spatial size \(1, 1\) is too small"),
        (dict(stride=0), r"stride: expected values >= 1"),
        (dict(padding=(1, 1, 1)), r"padding: expected an int or a pair of ints"),
        (dict(dilation=1.5), r"dilation: expected an int or a pair of ints"),
        (dict(backend="cudnn"), r"argument backend: unknown DCN backend 'cudnn'"),
    ],
)
def test_bad_arguments_raise_value_error(changes, message):
    with pytest.raises(ValueError, match=message):
        call(**changes)


# ---- backend selection ------------------------------------------------------------------------


def test_environment_variable_selects_backend(monkeypatch, fresh_backend_cache):
    monkeypatch.setenv("VIDRESTORE_DCN", "reference")
    assert get_backend().name == "reference"
    monkeypatch.setenv("VIDRESTORE_DCN", "TorchVision")
    assert get_backend().name == "torchvision"
    monkeypatch.setenv("VIDRESTORE_DCN", "magic")
    with pytest.raises(ValueError, match="environment variable VIDRESTORE_DCN: unknown DCN backend 'magic'"):
        get_backend()


def test_argument_overrides_environment(monkeypatch, fresh_backend_cache):
    monkeypatch.setenv("VIDRESTORE_DCN", "torchvision")
    assert get_backend("reference").name == "reference"


def test_auto_sends_cuda_inputs_to_torchvision_without_building(monkeypatch, fresh_backend_cache):
    """Our CUDA kernels are opt-in: choosing for CUDA inputs never builds or loads the native
    library (a GPU machine needs no nvcc), and needs no GPU to decide."""
    from ops.dcn import library

    def no_load(with_cuda):
        raise AssertionError("auto loaded the native library for CUDA inputs")

    monkeypatch.delenv("VIDRESTORE_DCN", raising=False)
    monkeypatch.setattr(library, "load", no_load)
    assert get_backend("auto", "cuda").name == "torchvision"


def test_auto_picks_the_best_available_and_logs_once(monkeypatch, caplog, fresh_backend_cache):
    monkeypatch.delenv("VIDRESTORE_DCN", raising=False)
    status = available_backends()
    best = next(name for name in backends.auto_order("cpu") if status[name] == "available")
    with caplog.at_level(logging.INFO, logger="ops.dcn.backends"):
        for _ in range(3):
            assert get_backend().name == best
    messages = [r.getMessage() for r in caplog.records if r.name == "ops.dcn.backends"]
    assert len(messages) == 1 and messages[0].startswith(f"DCN backend: {best} (auto")


def test_auto_skips_unavailable_backends_with_reasons(monkeypatch, caplog, fresh_backend_cache):
    def broken(device_type):
        raise BackendUnavailable("simulated: torchvision is broken")

    monkeypatch.setitem(backends._LOADERS, "native", broken)
    monkeypatch.setitem(backends._LOADERS, "torchvision", broken)
    with (
        caplog.at_level(logging.INFO, logger="ops.dcn.backends"),
        pytest.warns(UserWarning, match="native kernels unavailable for cpu inputs.*: simulated"),
    ):
        assert get_backend("auto").name == "reference"
    assert "skipped native: simulated" in caplog.text and "torchvision: simulated" in caplog.text


def test_forced_unavailable_backend_raises_instead_of_falling_back(monkeypatch, fresh_backend_cache):
    def broken(device_type):
        raise BackendUnavailable("simulated failure")

    monkeypatch.setitem(backends._LOADERS, "torchvision", broken)
    with pytest.raises(BackendUnavailable, match="simulated failure"):
        get_backend("torchvision")
    with pytest.raises(BackendUnavailable):
        call(backend="torchvision")


def test_choices_are_remembered_until_reset(monkeypatch, fresh_backend_cache):
    """A backend that failed (e.g. a native build without a compiler) is tried again after
    reset_backends(), not before."""
    attempts = []

    def fails_once(device_type):
        attempts.append(device_type)
        if len(attempts) == 1:
            raise BackendUnavailable("simulated: no compiler yet")
        return backends._load_reference(device_type)

    monkeypatch.setitem(backends._LOADERS, "native", fails_once)
    with pytest.warns(UserWarning, match="simulated: no compiler yet"):
        assert get_backend("auto").name == "torchvision"
    assert get_backend("auto").name == "torchvision" and attempts == ["cpu"]
    reset_backends()
    assert get_backend("auto").name == "native" and attempts == ["cpu", "cpu"]


def test_import_does_not_build_or_load_backends():
    """Importing ops.dcn must never fail nor compile anything: backends load on first use."""
    import subprocess
    import sys

    code = "import ops.dcn, sys; print('torchvision.ops' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"


# ---- layers -----------------------------------------------------------------------------------


def test_modulated_deform_conv2d_layer_matches_function():
    layer = ModulatedDeformConv2d(16, 4, 3, padding=1, deformable_groups=8)
    assert [n for n, _ in layer.named_parameters()] == ["weight", "bias"]
    bound = 1 / (16 * 9) ** 0.5
    assert layer.weight.abs().max() <= bound and layer.bias.eq(0).all()
    args = valid_inputs()
    offset = torch.randn_like(args["offset"])
    expected = deform_conv2d(args["x"], offset, args["mask"], layer.weight, layer.bias, padding=1)
    torch.testing.assert_close(layer(args["x"], offset, args["mask"]), expected)


def test_layer_rejects_inconsistent_groups():
    with pytest.raises(ValueError, match=r"deformable_groups: in_channels \(16\) must be divisible"):
        ModulatedDeformConv2d(16, 4, 3, deformable_groups=3)
    with pytest.raises(ValueError, match=r"groups: in_channels \(16\) and out_channels \(6\)"):
        ModulatedDeformConv2d(16, 6, 3, groups=4)


def test_dcnv2_pack_splits_offsets_and_mask_like_the_reference():
    torch.manual_seed(0)
    pack = DCNv2Pack(16, 16, 3, padding=1, deformable_groups=8).double()
    assert [n for n, _ in pack.named_parameters()] == ["weight", "bias", "conv_offset.weight", "conv_offset.bias"]
    assert pack.conv_offset.weight.shape == (3 * 8 * 9, 16, 3, 3)
    assert pack.conv_offset.weight.eq(0).all() and pack.conv_offset.bias.eq(0).all()
    torch.nn.init.normal_(pack.conv_offset.weight, std=0.1)
    x = torch.randn(2, 16, 6, 7, dtype=torch.float64)
    feat = torch.randn(2, 16, 6, 7, dtype=torch.float64)
    o1, o2, m = torch.chunk(pack.conv_offset(feat), 3, dim=1)
    expected = deform_conv2d(x, torch.cat((o1, o2), 1), torch.sigmoid(m), pack.weight, pack.bias, padding=1)
    torch.testing.assert_close(pack(x, feat), expected)


def test_dcnv2_pack_warns_once_per_divergence(caplog):
    pack = DCNv2Pack(8, 8, 3, padding=1, deformable_groups=1)
    x = feat = torch.randn(1, 8, 6, 6)
    with caplog.at_level(logging.WARNING, logger="ops.dcn.modules"):
        pack(x, feat)
        assert pack.offset_magnitude == 0.0 and not caplog.records
        with torch.no_grad():
            pack.conv_offset.bias.fill_(60.0)
        pack(x, feat)
        pack(x, feat)
        assert pack.offset_magnitude == pytest.approx(60.0)
        assert len(caplog.records) == 1 and "diverging" in caplog.records[0].getMessage()
        with torch.no_grad():
            pack.conv_offset.bias.fill_(1.0)
        pack(x, feat)
        with torch.no_grad():
            pack.conv_offset.bias.fill_(-70.0)
        pack(x, feat)
    assert len(caplog.records) == 2 and "70.0" in caplog.records[1].getMessage()


def test_dcnv2_pack_deepcopies_with_a_fresh_monitor():
    import copy

    pack = DCNv2Pack(8, 8, 3, padding=1)
    pack(torch.randn(1, 8, 4, 4), torch.randn(1, 8, 4, 4))
    clone = copy.deepcopy(pack)
    assert clone.offset_magnitude is None and pack.offset_magnitude == 0.0
    torch.testing.assert_close(clone.weight, pack.weight)


@pytest.mark.parametrize("backend", ["reference", "torchvision"])
def test_autocast_runs_in_float32_and_returns_the_input_dtype(backend):
    args = valid_inputs()
    args["offset"] = torch.randn_like(args["offset"])
    expected = deform_conv2d(**args, padding=1, backend=backend)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        x = args["x"].to(torch.bfloat16)  # as a preceding conv would produce under autocast
        out = deform_conv2d(x, args["offset"], args["mask"], args["weight"], args["bias"], padding=1, backend=backend)
    assert out.dtype == torch.bfloat16
    assert (out.float() - expected).abs().max() < 0.05 * expected.abs().max()
