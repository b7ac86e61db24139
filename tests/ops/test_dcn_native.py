"""The native DCNv2 kernels (ops/dcn/csrc): parity with the reference, gradients, determinism,
torch.compile, and the build (JIT cache, ahead-of-time, CUDA source, failure fallback).

The CPU library is JIT-built on first use into the build cache (``$TORCH_EXTENSIONS_DIR`` or
``~/.cache/vidrestore/torch_extensions``; about 20-40 s on 2 cores, then reused). CUDA runtime
tests skip without a GPU; the CUDA build test compiles the CUDA source wherever nvcc is installed.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import textwrap
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from ops.dcn import BackendUnavailable, DCNv2Pack, deform_conv2d, get_backend
from tests.ops.dcn_cases import (
    CASES,
    GRADCHECK_CASES,
    TOLERANCE,
    UNIT_ROUNDOFF,
    DcnCase,
    gradcheck,
    make_inputs,
    outputs_and_grads,
    run,
)

REPO = Path(__file__).resolve().parents[2]
HAS_CUDA = torch.cuda.is_available()


@pytest.fixture(scope="module")
def native():
    """The loaded native library (built on first use). Fails, not skips, when the build fails
    on a machine that has a compiler: a broken kernel source must not pass silently."""
    from ops.dcn import build, library

    if shutil.which(os.environ.get("CXX", "c++")) is None:
        pytest.skip("no C++ compiler: the native DCN kernels cannot be built here")
    return library.load(with_cuda=build.default_with_cuda())


def assert_close_to_reference(tensors: dict, kwargs: dict, tolerance: float) -> None:
    ours = outputs_and_grads(tensors, kwargs, "native")
    # The reference gets contiguous copies of the same values (it needs contiguous offsets).
    contiguous = {k: v.contiguous() if v is not None else None for k, v in tensors.items()}
    expected = outputs_and_grads(contiguous, kwargs, "reference")
    assert ours.keys() == expected.keys()
    for name in ours:
        assert ours[name].shape == expected[name].shape, name
        error = (ours[name] - expected[name]).abs().max().item() if ours[name].numel() else 0.0
        assert error <= tolerance, f"{name}: max |native - reference| = {error:.3g} > {tolerance:g}"


# ---- CPU parity ---------------------------------------------------------------------------------


@pytest.mark.parametrize("contiguous", [True, False], ids=["contiguous", "strided"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_native_matches_reference(native, case: DcnCase, dtype: torch.dtype, contiguous: bool):
    tensors, kwargs = make_inputs(case, dtype, contiguous=contiguous)
    assert_close_to_reference(tensors, kwargs, TOLERANCE[dtype])


def test_native_cpu_output_takes_the_layout_of_x(native):
    """Channels-last x (a channels-last network's activations) gives a channels-last output,
    channels-last offsets and mask are read without a copy; values equal the contiguous run."""
    tensors, kwargs = make_inputs(DcnCase(batch=2, in_channels=16, out_channels=8, height=9, width=11,
                                          deform_groups=4), torch.float32)
    contiguous = run(tensors, kwargs, "native")
    last = {k: v.contiguous(memory_format=torch.channels_last) if v is not None and v.dim() == 4 else v
            for k, v in tensors.items()}
    out = run(last, kwargs, "native")
    assert contiguous.is_contiguous()
    assert out.is_contiguous(memory_format=torch.channels_last) and not out.is_contiguous()
    torch.testing.assert_close(out, contiguous, rtol=0, atol=1e-6)
    mixed = dict(last, x=tensors["x"])  # channels-last offsets, contiguous x: contiguous output
    assert run(mixed, kwargs, "native").is_contiguous()
    # offsets and mask as channel slices of one channels-last tensor (what DCNv2Pack passes)
    both = torch.cat((tensors["offset"], tensors["mask"]), dim=1).contiguous(memory_format=torch.channels_last)
    offset, mask = both.split((tensors["offset"].shape[1], tensors["mask"].shape[1]), dim=1)
    assert not offset.is_contiguous() and not offset.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(run(dict(last, offset=offset, mask=mask), kwargs, "native"), contiguous,
                               rtol=0, atol=1e-6)


def test_native_cpu_offset_and_mask_gradients_take_their_inputs_layout(native):
    """The backward returns the offset and mask gradients channels-last when the inputs are
    channel slices of one channels-last tensor (what DCNv2Pack passes), so the convolution that
    predicted them gets its gradient without a transpose; contiguous inputs, contiguous
    gradients; the values are the same."""
    tensors, kwargs = make_inputs(DcnCase(batch=2, in_channels=16, out_channels=8, height=9, width=11,
                                          deform_groups=4), torch.float32)
    t = dict(tensors, x=tensors["x"].contiguous(memory_format=torch.channels_last))
    grad_out = torch.linspace(-1, 1, 2 * 8 * 9 * 11).view(2, 8, 9, 11)
    params = (t["bias"] is not None, kwargs["stride"], kwargs["padding"], kwargs["dilation"])

    def backward(offset, mask):
        return torch.ops.vidrestore.deform_conv2d_backward(grad_out, t["x"], offset, mask, t["weight"], *params)

    plain = backward(t["offset"], t["mask"])
    both = torch.cat((t["offset"], t["mask"]), dim=1).contiguous(memory_format=torch.channels_last)
    sliced = backward(*both.split((t["offset"].shape[1], t["mask"].shape[1]), dim=1))
    for index in (1, 2):  # grad_offset, grad_mask
        assert plain[index].is_contiguous()
        assert sliced[index].is_contiguous(memory_format=torch.channels_last) and not sliced[index].is_contiguous()
        torch.testing.assert_close(sliced[index], plain[index], rtol=0, atol=1e-6)


def test_native_is_actually_used(native):
    """The op really dispatches to the compiled kernel (not a silent fallback)."""
    tensors, kwargs = make_inputs(CASES[0], torch.float64)
    t = tensors
    direct = torch.ops.vidrestore.deform_conv2d(
        t["x"], t["offset"], t["mask"], t["weight"], t["bias"], kwargs["stride"], kwargs["padding"], kwargs["dilation"]
    )
    torch.testing.assert_close(direct, run(tensors, kwargs, "native"), rtol=0, atol=0)
    assert "cpu" in native.devices


@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("threads", [1, 2, 3])
def test_native_is_correct_for_any_thread_count(native, threads, batch):
    """The backward's work split (whole images per slot, or bands of one image with private
    input-gradient buffers) changes with the thread count; every split must be right.
    (The problem is big enough for the kernels to use several threads.)"""
    case = DcnCase(batch=batch, in_channels=32, out_channels=32, height=24, width=20, deform_groups=4,
                   groups=2, offset_scale=3.0)
    tensors, kwargs = make_inputs(case, torch.float64)
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        assert_close_to_reference(tensors, kwargs, TOLERANCE[torch.float64])
    finally:
        torch.set_num_threads(previous)


# ---- bfloat16 and float16 on the CPU -----------------------------------------------------------

# The ways 16-bit CPU inputs are computed: bfloat16 natively, its columns multiplied in bfloat16 by
# oneDNN where the CPU has AVX512-BF16 dot products, else in float32 (without those dot products,
# or with oneDNN disabled: the switch these tests use to reach that path); float16 in float32
# (ops/dcn/backends.py).
LOW_PRECISION_PATHS = [(torch.bfloat16, True), (torch.bfloat16, False), (torch.float16, True)]
LOW_PRECISION_IDS = ["bfloat16", "bfloat16-float32-columns", "float16-via-float32"]


@contextlib.contextmanager
def onednn_enabled(enabled: bool) -> Iterator[None]:
    """torch.backends.mkldnn.enabled for the block (its flags() context also sets TF32, with a warning)."""
    previous = torch.backends.mkldnn.enabled
    torch.backends.mkldnn.enabled = enabled
    try:
        yield
    finally:
        torch.backends.mkldnn.enabled = previous


def cpu_has_bfloat16_dot_products() -> bool:
    """AVX512-BF16, as /proc/cpuinfo reports it (Linux x86-64; False elsewhere)."""
    try:
        return "avx512_bf16" in Path("/proc/cpuinfo").read_text().split()
    except OSError:
        return False


def assert_low_precision_close_to_float64(tensors: dict, kwargs: dict, dtype: torch.dtype) -> None:
    """The 16-bit run's output and gradients against the float64 reference on the very same
    (16-bit) inputs and upstream gradient.

    Tolerance, from the format's unit roundoff u (2^-8 bfloat16, 2^-11 float16): every value is
    rounded to the 16-bit format once at the end, and on the way at most twice more (the sampled
    columns, the column gradients or a tile's weight-gradient product), each a relative error of
    at most u of terms no larger than the tensor's largest value: 4 u x max |reference| per
    tensor leaves room for the cancellation in the sums.
    """
    ours = outputs_and_grads(tensors, kwargs, "native")
    exact = {k: v.double().contiguous() if v is not None else None for k, v in tensors.items()}
    expected = outputs_and_grads(exact, kwargs, "reference", upstream_dtype=dtype)
    assert ours.keys() == expected.keys()
    for name in ours:
        assert ours[name].dtype == dtype, name
        tolerance = 4 * UNIT_ROUNDOFF[dtype] * expected[name].abs().max().item()
        error = (ours[name].double() - expected[name]).abs().max().item()
        assert error <= tolerance, f"{name}: max |native - reference| = {error:.3g} > {tolerance:.3g}"


@pytest.mark.parametrize("contiguous", [True, False], ids=["contiguous", "strided"])
@pytest.mark.parametrize("dtype,onednn", LOW_PRECISION_PATHS, ids=LOW_PRECISION_IDS)
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_native_low_precision_matches_float64_reference(native, case, dtype, onednn, contiguous):
    tensors, kwargs = make_inputs(case, dtype, contiguous=contiguous)
    with onednn_enabled(onednn):
        assert_low_precision_close_to_float64(tensors, kwargs, dtype)


@pytest.mark.parametrize("onednn", [True, False], ids=["oneDNN", "oneDNN-off"])
def test_native_bfloat16_never_converts_the_inputs_to_float32(native, onednn, one_thread):
    """The op gets the bfloat16 tensors themselves, and its GEMMs multiply bfloat16 where the CPU
    has bfloat16 dot products (and oneDNN is on), float32 tiles of columns otherwise."""
    from torch.profiler import profile

    tensors, kwargs = make_inputs(CASES[-1], torch.bfloat16)
    with onednn_enabled(onednn), profile(record_shapes=True) as prof:
        outputs_and_grads(tensors, kwargs, "native")
    events = prof.events()
    op_calls = [e for e in events if e.name.startswith("vidrestore::deform_conv2d")]
    assert len(op_calls) == 2  # forward and backward
    for call in op_calls:
        tensor_inputs = {d for d in call.input_dtypes if not d.startswith("Scalar")}
        assert tensor_inputs == {"c10::BFloat16"}, call.name
    gemm_inputs = {d for e in events if e.name in ("aten::addmm_", "aten::mm") for d in e.input_dtypes[:3]}
    assert gemm_inputs == ({"c10::BFloat16"} if onednn and cpu_has_bfloat16_dot_products() else {"float"})


def test_native_cpu_kernel_names_the_dtypes_it_computes(native):
    """float16 reaches the CPU kernel only through a direct torch.ops call: a clear error."""
    t, kwargs = make_inputs(CASES[0], torch.float16)
    with pytest.raises(RuntimeError, match="Half is not supported .*computes float16 CPU inputs in float32"):
        torch.ops.vidrestore.deform_conv2d(t["x"], t["offset"], t["mask"], t["weight"], t["bias"],
                                           kwargs["stride"], kwargs["padding"], kwargs["dilation"])


@pytest.mark.parametrize("dtype,onednn", LOW_PRECISION_PATHS[:2], ids=LOW_PRECISION_IDS[:2])
@pytest.mark.parametrize("threads", [1, 2, 3])
def test_native_bfloat16_is_deterministic_and_correct_for_any_thread_count(native, dtype, onednn, threads):
    """Whole images per slot, or one image split in bands with private float32 input-gradient
    buffers: every split gives the right result, bit-identically from run to run."""
    case = DcnCase(batch=1 + threads % 2, in_channels=32, out_channels=32, height=24, width=20,
                   deform_groups=4, groups=2, offset_scale=3.0)
    tensors, kwargs = make_inputs(case, dtype)
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with onednn_enabled(onednn):
            assert_low_precision_close_to_float64(tensors, kwargs, dtype)
            first = outputs_and_grads(tensors, kwargs, "native")
            second = outputs_and_grads(tensors, kwargs, "native")
    finally:
        torch.set_num_threads(previous)
    for name in first:
        assert torch.equal(first[name], second[name]), name


def test_native_autocast_on_cpu_runs_in_bfloat16(native, fresh_backend_cache):
    """Under CPU autocast the native op runs in bfloat16, as F.conv2d (inputs cast to bfloat16,
    nothing converted to float32), returns bfloat16, and its gradients reach float32 leaves."""
    from torch.profiler import profile

    tensors, kwargs = make_inputs(CASES[-1], torch.float32, requires_grad=True)
    expected = run(tensors, kwargs, "native")
    with torch.autocast("cpu", dtype=torch.bfloat16), profile(record_shapes=True) as prof:
        out = run(tensors, kwargs, "native")
    assert out.dtype == torch.bfloat16
    calls = [e for e in prof.events() if e.name == "vidrestore::deform_conv2d"]
    assert len(calls) == 1
    assert {d for d in calls[0].input_dtypes if not d.startswith("Scalar")} == {"c10::BFloat16"}
    scale = expected.abs().max().item()
    assert (out.float() - expected).abs().max().item() <= 8 * UNIT_ROUNDOFF[torch.bfloat16] * scale
    out.float().square().sum().backward()
    leaves = [t for t in tensors.values() if t is not None]
    assert all(t.grad is not None and t.grad.dtype == torch.float32 for t in leaves)


@pytest.mark.parametrize("case", GRADCHECK_CASES, ids=lambda c: c.id)
def test_native_gradcheck(native, case: DcnCase, one_thread):
    assert gradcheck(case, "native")


def test_native_offset_gradient_at_whole_pixels_is_the_forward_difference(native):
    """Zero offsets (every DCNv2Pack starts there): d out / d dy = x[r + 1] - x[r], row H counting 0."""
    x = torch.randn(1, 1, 5, 5, dtype=torch.float64)
    weight = torch.ones(1, 1, 1, 1, dtype=torch.float64)
    offset = torch.zeros(1, 2, 5, 5, dtype=torch.float64, requires_grad=True)
    deform_conv2d(x, offset, None, weight, backend="native").sum().backward()
    expected_dy = torch.zeros(5, 5, dtype=torch.float64)
    expected_dy[:4] = x[0, 0, 1:] - x[0, 0, :4]
    expected_dy[4] = -x[0, 0, 4]
    torch.testing.assert_close(offset.grad[0, 0], expected_dy, rtol=0, atol=1e-15)


@pytest.mark.parametrize("batch", [1, 4], ids=["one-image-split-in-bands", "whole-images"])
def test_native_cpu_is_deterministic(native, batch):
    """Two runs give bit-identical outputs and gradients (no racy scatter)."""
    case = DcnCase(batch=batch, in_channels=64, out_channels=32, height=24, width=20, deform_groups=8,
                   offset_scale=3.0)
    tensors, kwargs = make_inputs(case, torch.float32, seed=5)
    first = outputs_and_grads(tensors, kwargs, "native")
    second = outputs_and_grads(tensors, kwargs, "native")
    for name in first:
        assert torch.equal(first[name], second[name]), name


def test_opcheck_schema_fake_and_autograd_registrations(native):
    """torch.library.opcheck: schema, fake (meta) kernel, autograd registration, AOT dispatch,
    for contiguous and channels-last inputs (whose output is channels-last)."""
    case = DcnCase(batch=2, in_channels=8, out_channels=4, height=6, width=7, deform_groups=2, groups=2)
    for masked, bias, contiguous in ((True, True, True), (False, False, True), (True, True, False)):
        tensors, kwargs = make_inputs(DcnCase(**{**case.__dict__, "masked": masked, "bias": bias}),
                                      torch.float64, requires_grad=True, contiguous=contiguous)
        t = tensors
        args = (t["x"], t["offset"], t["mask"], t["weight"], t["bias"],
                list(kwargs["stride"]), list(kwargs["padding"]), list(kwargs["dilation"]))
        torch.library.opcheck(torch.ops.vidrestore.deform_conv2d.default, args)


@pytest.mark.filterwarnings("error::UserWarning")  # e.g. dynamo's about tracing through a cache
def test_torch_compile_fullgraph_of_dcnv2_pack(native):
    """torch.compile(fullgraph=True) of a DCNv2Pack on the native backend gives the eager
    output and gradients, without a warning."""
    import torch._dynamo

    torch.manual_seed(0)
    pack = DCNv2Pack(16, 16, 3, padding=1, deformable_groups=4, backend="native")
    torch.nn.init.normal_(pack.conv_offset.weight, std=0.1)
    x = torch.randn(2, 16, 8, 9, requires_grad=True)
    feat = torch.randn(2, 16, 8, 9, requires_grad=True)
    eager = pack(x, feat)
    eager.square().sum().backward()
    expected = [eager.detach(), x.grad, feat.grad, pack.weight.grad, pack.conv_offset.weight.grad]
    x.grad = feat.grad = None
    pack.zero_grad()

    torch._dynamo.reset()
    compiled = torch.compile(pack, fullgraph=True, backend="inductor")
    out = compiled(x, feat)
    out.square().sum().backward()
    got = [out.detach(), x.grad, feat.grad, pack.weight.grad, pack.conv_offset.weight.grad]
    for name, a, b in zip(("out", "x", "feat", "weight", "conv_offset.weight"), got, expected):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5, msg=name)


# ---- build --------------------------------------------------------------------------------------


def test_extensions_dir_is_honoured(monkeypatch, tmp_path):
    from ops.dcn import build

    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    assert build.default_build_directory(False) == tmp_path / "vidrestore_dcn_cpu"


def test_default_build_directory_is_in_the_user_cache(monkeypatch, tmp_path):
    from ops.dcn import build

    monkeypatch.delenv("TORCH_EXTENSIONS_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert build.default_build_directory(True) == tmp_path / "vidrestore/torch_extensions/vidrestore_dcn_cuda"
    monkeypatch.delenv("XDG_CACHE_HOME")
    expected = Path.home() / ".cache/vidrestore/torch_extensions/vidrestore_dcn_cpu"
    assert build.default_build_directory(False) == expected


def test_second_build_reuses_the_cached_library(native):
    """A build that already happened is reused: same file, not recompiled."""
    from ops.dcn import build

    before = native.path.stat().st_mtime_ns
    path = build.build(native.with_cuda)
    assert path == native.path
    assert path.stat().st_mtime_ns == before


def test_import_neither_builds_nor_loads_the_library():
    code = ("import ops.dcn, sys; print('ops.dcn.build' in sys.modules, 'ops.dcn.library' in sys.modules, "
            "'torch.utils.cpp_extension' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    assert result.stdout.split() == ["False", "False", "False"]


def _python(code: str, env: dict[str, str], timeout: int = 600) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "PYTHONPATH": str(REPO), **env}
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          cwd=REPO, env=full_env, timeout=timeout)


def test_missing_compiler_warns_once_and_auto_falls_back_to_torchvision(tmp_path):
    """Fresh cache + no compiler: one warning saying why and how to fix, then torchvision."""
    code = """
        import warnings, torch
        warnings.simplefilter("always")
        with warnings.catch_warnings(record=True) as caught:
            from ops.dcn import available_backends, deform_conv2d, get_backend
            x = torch.randn(1, 4, 5, 5)
            offset = torch.zeros(1, 18, 5, 5)
            weight = torch.randn(2, 4, 3, 3)
            for _ in range(3):
                out = deform_conv2d(x, offset, None, weight, padding=1)
            status = available_backends()
        ours = [str(w.message) for w in caught if "vidrestore DCN" in str(w.message)]
        print(len(ours)); print(ours[0] if ours else ""); print(get_backend().name)
        print(status["native"])
        expected = torch.nn.functional.conv2d(x, weight, padding=1)
        assert torch.allclose(out, expected, atol=1e-5)
    """
    result = _python(code, {"CXX": "/nonexistent/c++", "TORCH_EXTENSIONS_DIR": str(tmp_path),
                            "VIDRESTORE_DCN_CUDA": "0", "VIDRESTORE_DCN": ""})
    assert result.returncode == 0, result.stderr
    count, message, backend, status = result.stdout.strip().splitlines()[-4:]
    assert count == "1"
    assert "no C++ compiler found" in message and "Fix:" in message
    assert backend == "torchvision"
    assert "no C++ compiler found" in status


def test_ahead_of_time_build_is_loaded_without_a_compiler(native):
    """`python -m ops.dcn.build` puts the library where the runtime looks (the extensions
    cache, here the one this session already uses, so nothing is recompiled); a later process
    with that cache and no compiler nor ninja on PATH (e.g. a slim runtime image) loads it."""
    env = {"VIDRESTORE_DCN_CUDA": "1" if native.with_cuda else "0", "PYTHONPATH": str(REPO)}
    flavour = "--cuda" if native.with_cuda else "--cpu"
    build = subprocess.run([sys.executable, "-m", "ops.dcn.build", flavour], capture_output=True, text=True,
                           cwd=REPO, env={**os.environ, **env}, timeout=600)
    assert build.returncode == 0, build.stderr
    assert build.stdout.strip().endswith(str(native.path))
    code = f"""
        import torch
        from ops.dcn import get_backend, library
        assert get_backend().name == "native", get_backend()
        print(library.load(with_cuda={native.with_cuda}).path)
    """
    result = _python(code, {**env, "CXX": "/nonexistent/c++", "PATH": "/nonexistent", "VIDRESTORE_DCN": ""})
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == str(native.path)


def test_loading_the_built_library_is_silent(native):
    """Loading an up-to-date library compiles nothing, imports no torch.utils.cpp_extension (whose
    import looks for a CUDA toolkit and warns "No CUDA runtime is found" without a GPU) and
    prints nothing to stderr."""
    code = """
        import sys, torch
        from ops.dcn import deform_conv2d
        x = torch.randn(1, 4, 5, 5)
        weight = torch.randn(2, 4, 3, 3)
        out = deform_conv2d(x, torch.zeros(1, 18, 5, 5), None, weight, padding=1, backend="native")
        assert torch.allclose(out, torch.nn.functional.conv2d(x, weight, padding=1), atol=1e-5)
        print("torch.utils.cpp_extension" in sys.modules)
    """
    result = _python(code, {"VIDRESTORE_DCN_CUDA": "1" if native.with_cuda else "0"})
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["False"]
    assert "CUDA" not in result.stderr
    assert result.stderr == ""


def test_a_failed_build_is_tried_again(tmp_path):
    """No failure is remembered: each load() runs the build again (here: its compiler check)."""
    code = """
        import os
        from ops.dcn import build, library
        for compiler in ("/nonexistent/c++", "/nonexistent/g++"):
            os.environ["CXX"] = compiler
            try:
                library.load(with_cuda=False)
            except build.NativeBuildError as error:
                print(compiler in str(error))
    """
    result = _python(code, {"TORCH_EXTENSIONS_DIR": str(tmp_path)})
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["True", "True"]


def test_a_build_leaves_the_environment_and_cpp_extension_as_they_were(tmp_path):
    """MAX_JOBS, TORCH_CUDA_ARCH_LIST and cpp_extension.CUDA_HOME are set for the compilation
    only (here a simulated compiler failure), and restored afterwards."""
    with_cuda = shutil.which("nvcc") is not None or Path("/usr/local/cuda/bin/nvcc").exists()
    if shutil.which(os.environ.get("CXX", "c++")) is None or shutil.which("ninja") is None:
        pytest.skip("needs a C++ compiler and ninja")
    code = f"""
        import os
        from ops.dcn import build
        cpp_extension = build._import_cpp_extension()
        seen = {{}}

        def simulated_load(**kwargs):
            seen.update(jobs=os.environ.get("MAX_JOBS"), arch=os.environ.get("TORCH_CUDA_ARCH_LIST"))
            raise RuntimeError("simulated compiler error")

        cpp_extension.load = simulated_load
        before = dict(os.environ), cpp_extension.CUDA_HOME
        try:
            build.build(with_cuda={with_cuda}, build_directory={str(tmp_path)!r})
        except build.NativeBuildError as error:
            print("simulated compiler error" in str(error))
        print(seen["jobs"] is not None, seen["arch"] is not None or not {with_cuda})
        print((dict(os.environ), cpp_extension.CUDA_HOME) == before)
    """
    env = {k: v for k, v in os.environ.items() if k not in ("MAX_JOBS", "TORCH_CUDA_ARCH_LIST")}
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                            cwd=REPO, env={**env, "PYTHONPATH": str(REPO), "CUDA_VISIBLE_DEVICES": ""},
                            timeout=600)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["True", "True", "True", "True"]


def test_forced_native_on_a_device_without_kernels_raises(native, fresh_backend_cache):
    """native asked for by name never runs another backend: inputs on a device the library has no
    kernels for raise BackendUnavailable naming the fix."""
    with pytest.raises(BackendUnavailable, match="no meta kernels. Fix: use the torchvision or reference"):
        get_backend("native", "meta")
    if "cuda" not in native.devices:
        with pytest.raises(BackendUnavailable, match=r"no cuda kernels. Fix: .*ops.dcn.build --cuda"):
            get_backend("native", "cuda")
    assert get_backend("native", "cpu").name == "native"


def test_auto_uses_native_for_cpu_inputs_and_torchvision_for_others_silently(native, fresh_backend_cache):
    """auto: CPU inputs run our kernels; inputs on other devices go to torchvision first (our CUDA
    kernels are opt-in), with no warning."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for device in ("cuda", "meta"):
            assert get_backend("auto", device).name == "torchvision"
        assert get_backend("auto", "cpu").name == "native"


@pytest.mark.slow
def test_cuda_source_compiles():
    """The CUDA flavour (C++ + .cu kernels) builds with nvcc, for TORCH_CUDA_ARCH_LIST (default 9.0
    without a GPU), into the shared extensions cache (reused on later runs), and registers a CUDA
    kernel for the op. Needs no GPU."""
    from torch.utils.cpp_extension import CUDA_HOME

    if shutil.which("nvcc") is None and not (CUDA_HOME and Path(CUDA_HOME, "bin", "nvcc").exists()):
        pytest.skip("nvcc is not installed")
    env = {"VIDRESTORE_DCN_CUDA": "1", "MAX_JOBS": os.environ.get("MAX_JOBS", "2")}
    if not HAS_CUDA:
        env["TORCH_CUDA_ARCH_LIST"] = os.environ.get("TORCH_CUDA_ARCH_LIST", "9.0")
    build = subprocess.run([sys.executable, "-m", "ops.dcn.build", "--cuda"], capture_output=True, text=True,
                           cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO), **env}, timeout=1200)
    assert build.returncode == 0, build.stdout + build.stderr
    code = """
        import torch
        from ops.dcn import build, library
        loaded = library.load(with_cuda=build.default_with_cuda())
        print(loaded.name, sorted(loaded.devices))
        # the CPU kernels of the CUDA flavour work as well
        x = torch.randn(1, 4, 5, 5, dtype=torch.float64)
        offset = torch.randn(1, 18, 5, 5, dtype=torch.float64)
        weight = torch.randn(2, 4, 3, 3, dtype=torch.float64)
        from ops.dcn import deform_conv2d
        a = deform_conv2d(x, offset, None, weight, padding=1, backend="native")
        b = deform_conv2d(x, offset, None, weight, padding=1, backend="reference")
        assert (a - b).abs().max() < 1e-10
    """
    result = _python(code, env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "vidrestore_dcn_cuda ['cpu', 'cuda']"


# ---- CUDA runtime (skipped without a GPU) ---------------------------------------------------------

# Our CUDA kernels are opt-in (ops.dcn.backends.auto_order): their tests run in a process started
# with VIDRESTORE_DCN_CUDA=1 on a machine with a GPU (`VIDRESTORE_DCN_CUDA=1 pytest tests/ops -m cuda`).
CUDA_OPT_IN = os.environ.get("VIDRESTORE_DCN_CUDA", "").strip().lower() in ("1", "true", "yes")
cuda = pytest.mark.skipif(not (HAS_CUDA and CUDA_OPT_IN), reason="needs a CUDA GPU and VIDRESTORE_DCN_CUDA=1")
HALF_TOLERANCE_ULPS = 8


@cuda
@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_native_cuda_matches_reference(native, case: DcnCase, dtype: torch.dtype):
    assert "cuda" in native.devices, "a GPU is visible but the CUDA flavour was not built"
    tensors, kwargs = make_inputs(case, dtype, device="cuda")
    assert_close_to_reference(tensors, kwargs, TOLERANCE[dtype])


@cuda
@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
def test_native_cuda_half_precision_matches_reference(native, dtype):
    """16-bit storage, float32 coordinates and sums: against the float64 reference on the same
    (rounded) inputs, each output and gradient within a few units of the format's roundoff
    (relative to its largest value): the columns and the column gradients are rounded once to
    16 bits, and the offset gradient takes differences of sums of those."""
    case = next(c for c in CASES if c.in_channels == 64)
    tensors, kwargs = make_inputs(case, torch.float32, device="cuda")
    half = {k: v.to(dtype) if v is not None else None for k, v in tensors.items()}
    expected = outputs_and_grads({k: v.double() if v is not None else None for k, v in half.items()},
                                 kwargs, "reference")
    ours = outputs_and_grads(half, kwargs, "native")
    roundoff = {torch.float16: 2.0**-11, torch.bfloat16: 2.0**-8}[dtype]
    for name in expected:
        assert ours[name].dtype == dtype
        scale = expected[name].abs().max().item() + 1e-12
        error = (ours[name].double() - expected[name]).abs().max().item() / scale
        assert error < HALF_TOLERANCE_ULPS * roundoff, f"{name}: relative error {error:.3g} ({error / roundoff:.1f} u)"


@cuda
@pytest.mark.cuda
def test_native_cuda_runs_on_the_current_stream(native):
    case = next(c for c in CASES if c.in_channels == 64)
    tensors, kwargs = make_inputs(case, torch.float32, device="cuda")
    expected = run(tensors, kwargs, "native")
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        out = run(tensors, kwargs, "native")
    torch.cuda.current_stream().wait_stream(stream)
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-5)
