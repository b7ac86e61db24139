"""Build and load the native DCN kernels (``ops/dcn/csrc``) as the op ``torch.ops.vidrestore``.

The library is compiled on first use with ``torch.utils.cpp_extension.load`` (ninja +
the system C++ compiler; nvcc for the CUDA flavour) into a cache:
``$TORCH_EXTENSIONS_DIR`` if set, else torch's default (``~/.cache/torch_extensions``).
Next to the library a ``.stamp`` file holds a fingerprint of the sources, flags, torch
version and CUDA targets; when it matches, the library is loaded directly (no ninja, no
compiler: an ahead-of-time build also runs where no compiler is installed); otherwise ninja
rebuilds what changed. ``python -m ops.dcn.build`` runs the very same build ahead of time.

Two flavours, one op: ``cpu`` (C++ only) and ``cuda`` (C++ + CUDA kernels; chosen when
``torch.cuda.is_available()``, or forced with ``VIDRESTORE_DCN_CUDA=1``/``0``).
Loading registers, next to the C++ kernels, the autograd formula (the fused backward op)
and the fake kernels that ``torch.compile`` traces with.

Nothing here runs at import time: ``load()`` is called by the ``native`` backend on first use.
Failures raise ``NativeBuildError`` with the reason and the fix.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

CSRC = Path(__file__).resolve().parent / "csrc"
CUDA_ENV_VAR = "VIDRESTORE_DCN_CUDA"
DEFAULT_CUDA_ARCH_LIST = "9.0"  # used only when no GPU is visible and TORCH_CUDA_ARCH_LIST is unset

# Portable flags: no -march=native, so a cached/AOT library runs on any x86-64 CPU.
EXTRA_CFLAGS = ["-O3", "-fopenmp", "-fno-trapping-math"]  # no FP traps used: lets selects vectorise
EXTRA_LDFLAGS = ["-fopenmp"]
EXTRA_CUDA_CFLAGS = ["-O3"]


class NativeBuildError(RuntimeError):
    """The native DCN library cannot be built or loaded; the message says why and how to fix it."""


@dataclass(frozen=True)
class NativeLibrary:
    """A loaded flavour of the library."""

    name: str  # extension name, e.g. "vidrestore_dcn_cpu"
    with_cuda: bool
    path: Path  # the shared library
    build_seconds: float  # time spent building (when needed) and loading
    devices: frozenset[str]  # device types with a kernel: {"cpu"} or {"cpu", "cuda"}


def sources(with_cuda: bool) -> list[str]:
    """The C++ (and, for the CUDA flavour, CUDA) source files, sorted."""
    files = [CSRC / "dcn.cpp", *sorted((CSRC / "cpu").glob("*.cpp"))]
    if with_cuda:
        files += sorted((CSRC / "cuda").glob("*.cu"))
    return [str(f) for f in files]


def extension_name(with_cuda: bool) -> str:
    return "vidrestore_dcn_cuda" if with_cuda else "vidrestore_dcn_cpu"


def want_cuda() -> bool:
    """Build the CUDA flavour? ``$VIDRESTORE_DCN_CUDA`` (1/0) if set, else whether a GPU is visible."""
    value = os.environ.get(CUDA_ENV_VAR, "").strip().lower()
    if value in ("1", "true", "yes"):
        return True
    if value in ("0", "false", "no"):
        return False
    if value:
        raise NativeBuildError(f"{CUDA_ENV_VAR}={value!r}: expected 1 or 0")
    return torch.cuda.is_available()


def default_build_directory(with_cuda: bool) -> Path:
    """Where the JIT build goes: ``$TORCH_EXTENSIONS_DIR/<name>`` or torch's default cache."""
    from torch.utils.cpp_extension import _get_build_directory

    return Path(_get_build_directory(extension_name(with_cuda), verbose=False))


def build(
    with_cuda: bool, build_directory: str | os.PathLike | None = None, verbose: bool = False
) -> Path:
    """Compile (if needed) and load one flavour; return the path of the shared library.

    Raises:
        NativeBuildError: no compiler/ninja/nvcc, or the compilation failed.
    """
    from torch.utils import cpp_extension

    name = extension_name(with_cuda)
    directory = Path(build_directory) if build_directory is not None else default_build_directory(with_cuda)
    if with_cuda and not os.environ.get("TORCH_CUDA_ARCH_LIST") and not torch.cuda.is_available():
        os.environ["TORCH_CUDA_ARCH_LIST"] = DEFAULT_CUDA_ARCH_LIST  # nvcc needs a target without a GPU
    library = directory / f"{name}.so"
    stamp = directory / f"{name}.stamp"
    fingerprint = _fingerprint(with_cuda)
    if library.exists() and stamp.exists() and stamp.read_text() == fingerprint:
        # Built from these very sources, flags and torch: load it without ninja or a compiler
        # (an ahead-of-time build can run where no compiler is installed).
        try:
            torch.ops.load_library(str(library))
            return library
        except OSError as error:
            raise NativeBuildError(
                f"{library} exists but cannot be loaded ({error}). Fix: delete {directory} and rebuild "
                f"with `python -m ops.dcn.build`"
            ) from error

    if _op_registered():
        # Loading a second build would register the op twice, which aborts the process.
        raise NativeBuildError(
            f"{library} is out of date (sources, flags or torch changed) but an older build of "
            f"vidrestore::deform_conv2d is already loaded in this process. Fix: run "
            f"`python -m ops.dcn.build` (or restart the process) to rebuild"
        )
    _check_toolchain(with_cuda)
    include_paths: list[str] = []
    if with_cuda:
        cpp_extension.CUDA_HOME = _cuda_home()  # torch's guess from `which nvcc` can be a wrapper's folder
        include_paths = _pip_cuda_include_dirs()
    directory.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("MAX_JOBS", str(min(os.cpu_count() or 1, 2)))
    try:
        cpp_extension.load(
            name=name,
            sources=sources(with_cuda),
            # The fingerprint in the command line makes ninja rebuild when the sources' content
            # changes, not only their mtime (a build that raced with an edit of the tree).
            extra_cflags=EXTRA_CFLAGS + [f"-DVIDRESTORE_DCN_SOURCE_HASH={fingerprint[:16]}"]
            + (["-DVIDRESTORE_WITH_CUDA"] if with_cuda else []),
            extra_cuda_cflags=EXTRA_CUDA_CFLAGS,
            extra_ldflags=EXTRA_LDFLAGS,
            extra_include_paths=include_paths,
            build_directory=str(directory),
            with_cuda=with_cuda,
            is_python_module=False,
            verbose=verbose,
        )
    except Exception as error:  # compiler errors arrive as RuntimeError/CalledProcessError/OSError
        raise NativeBuildError(
            f"building the native DCN kernels ({name}) in {directory} failed: {_last_lines(error)}. "
            f"Fix: run `python -m ops.dcn.build --verbose` to see the full compiler output "
            f"(needs a C++17 compiler, ninja{' and nvcc matching torch.version.cuda' if with_cuda else ''}); "
            f"meanwhile set VIDRESTORE_DCN=torchvision to silence this."
        ) from error
    if not library.exists():
        raise NativeBuildError(f"the build of {name} in {directory} produced no {library.name}")
    stamp.write_text(fingerprint)
    return library


def _op_registered() -> bool:
    return hasattr(torch.ops.vidrestore, "deform_conv2d")


def _fingerprint(with_cuda: bool) -> str:
    """Hash of everything the library depends on: sources, headers, flags, torch, CUDA targets."""
    digest = hashlib.sha256()
    for path in sorted(CSRC.rglob("*")):
        if path.suffix in (".cpp", ".cu", ".h", ".cuh") and (with_cuda or path.suffix in (".cpp", ".h")):
            digest.update(str(path.relative_to(CSRC)).encode() + b"\0" + path.read_bytes() + b"\0")
    flags = [EXTRA_CFLAGS, EXTRA_LDFLAGS, torch.__version__, str(with_cuda)]
    if with_cuda:
        flags += [EXTRA_CUDA_CFLAGS, os.environ.get("TORCH_CUDA_ARCH_LIST", ""), str(torch.version.cuda)]
    digest.update(repr(flags).encode())
    return digest.hexdigest()


def load() -> NativeLibrary:
    """Build (first time) and load the flavour for this machine, then register autograd and
    the fake kernels. The outcome is cached: later calls return (or raise) at once.

    Raises:
        NativeBuildError: why the library cannot be built or loaded, and the fix.
    """
    global _loaded
    if isinstance(_loaded, BaseException):
        raise _loaded
    if _loaded is None:
        try:
            _loaded = _build_and_register()
        except NativeBuildError as error:
            _loaded = error
            raise
    return _loaded


_loaded: NativeLibrary | NativeBuildError | None = None


def _build_and_register() -> NativeLibrary:
    with_cuda = want_cuda()
    start = time.perf_counter()
    path = build(with_cuda)
    seconds = time.perf_counter() - start
    if not hasattr(torch.ops.vidrestore, "deform_conv2d"):
        raise NativeBuildError(f"{path} loaded but registered no vidrestore::deform_conv2d op")
    _register_python_parts()
    devices = frozenset(d for d in ("cpu", "cuda") if has_kernel(d))
    return NativeLibrary(extension_name(with_cuda), with_cuda, path, seconds, devices)


_warned: set[str] = set()


def warn_once(message: str) -> None:
    """A UserWarning, once per process and message (the backend resolution may retry a load)."""
    if message not in _warned:
        _warned.add(message)
        warnings.warn(message, stacklevel=3)


def has_kernel(device_type: str) -> bool:
    """Whether the loaded op has a kernel for ``device_type`` ("cpu", "cuda")."""
    key = {"cpu": "CPU", "cuda": "CUDA"}.get(device_type)
    return key is not None and torch._C._dispatch_has_kernel_for_dispatch_key("vidrestore::deform_conv2d", key)


def _check_toolchain(with_cuda: bool) -> None:
    compiler = os.environ.get("CXX", "c++")
    if shutil.which(compiler) is None:
        raise NativeBuildError(
            f"no C++ compiler found ({compiler!r} is not on PATH). Fix: install one "
            f"(e.g. `apt-get install g++`) or set CXX, then run `python -m ops.dcn.build`"
        )
    from torch.utils.cpp_extension import is_ninja_available

    if not is_ninja_available():
        raise NativeBuildError("ninja is not installed. Fix: `pip install ninja`, then `python -m ops.dcn.build`")
    if with_cuda:
        CUDA_HOME = _cuda_home()
        nvcc = Path(CUDA_HOME or "/usr/local/cuda") / "bin" / "nvcc"
        if not nvcc.exists():
            raise NativeBuildError(
                f"nvcc not found (CUDA_HOME={CUDA_HOME}). Fix: install the CUDA toolkit matching torch "
                f"(CUDA {torch.version.cuda}) and set CUDA_HOME, or set {CUDA_ENV_VAR}=0 for the CPU-only build"
            )


def _cuda_home() -> str | None:
    """The CUDA toolkit root: $CUDA_HOME/$CUDA_PATH, else torch's guess if it holds the runtime
    headers, else /usr/local/cuda."""
    from torch.utils import cpp_extension

    if os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH"):
        return cpp_extension.CUDA_HOME
    for candidate in (cpp_extension.CUDA_HOME, "/usr/local/cuda"):
        if candidate and (Path(candidate) / "include" / "cuda_runtime.h").exists():
            return candidate
    return cpp_extension.CUDA_HOME


def _pip_cuda_include_dirs() -> list[str]:
    """Headers of the CUDA libraries torch's wheel depends on (cuBLAS, cuSPARSE... installed as
    ``nvidia-*`` pip packages), which a minimal toolkit (nvcc + cudart) lacks."""
    try:
        import nvidia  # namespace package of the nvidia-* wheels
    except ImportError:
        return []
    found = []
    for root in getattr(nvidia, "__path__", []):
        for header in sorted(Path(root).glob("*/include/cusparse.h")) + sorted(Path(root).glob("*/include/cublas_v2.h")):
            if str(header.parent) not in found:
                found.append(str(header.parent))
    return found


def _last_lines(error: BaseException, count: int = 6) -> str:
    text = str(error).strip() or type(error).__name__
    lines = [line for line in text.splitlines() if line.strip()]
    return " | ".join(lines[-count:])


# ---- autograd and fake kernels ------------------------------------------------------------------


def _output_size(x, weight, stride, padding, dilation) -> tuple[int, int]:
    kernel = weight.shape[-2:]
    return tuple(
        (x.shape[2 + d] + 2 * padding[d] - dilation[d] * (kernel[d] - 1) - 1) // stride[d] + 1 for d in range(2)
    )


def _fake_forward(x, offset, mask, weight, bias, stride, padding, dilation):
    """(N, Cout, Ho, Wo) in the real kernels' layout: channels-last on the CPU when x is
    channels-last (and not also contiguous), else contiguous."""
    out_h, out_w = _output_size(x, weight, stride, padding, dilation)
    channels_last = x.device.type == "cpu" and not x.is_contiguous() and x.is_contiguous(
        memory_format=torch.channels_last)
    return torch.empty((x.shape[0], weight.shape[0], out_h, out_w), dtype=x.dtype, device=x.device,
                       memory_format=torch.channels_last if channels_last else torch.contiguous_format)


def _fake_backward(grad_out, x, offset, mask, weight, with_bias, stride, padding, dilation):
    """Same shapes and strides as the real kernels: grad_x is channels-last strided."""
    n, c, h, w = x.shape
    grad_x = x.new_empty((n, h, w, c)).permute(0, 3, 1, 2)
    grad_mask = mask.new_empty(mask.shape) if mask is not None else x.new_empty((0,))
    grad_bias = x.new_empty((weight.shape[0],)) if with_bias else x.new_empty((0,))
    return grad_x, offset.new_empty(offset.shape), grad_mask, weight.new_empty(weight.shape), grad_bias


def _setup_context(ctx, inputs, output) -> None:
    x, offset, mask, weight, bias, stride, padding, dilation = inputs
    ctx.save_for_backward(x, offset, mask, weight)
    ctx.with_mask = mask is not None
    ctx.with_bias = bias is not None
    ctx.params = (stride, padding, dilation)


def _backward(ctx, grad_out):
    x, offset, mask, weight = ctx.saved_tensors
    grad_x, grad_offset, grad_mask, grad_weight, grad_bias = torch.ops.vidrestore.deform_conv2d_backward(
        grad_out, x, offset, mask, weight, ctx.with_bias, *ctx.params
    )
    return (
        grad_x,
        grad_offset,
        grad_mask if ctx.with_mask else None,
        grad_weight,
        grad_bias if ctx.with_bias else None,
        None,
        None,
        None,
    )


_registered = False


def _register_python_parts() -> None:
    global _registered
    if _registered:
        return
    torch.library.register_fake("vidrestore::deform_conv2d")(_fake_forward)
    torch.library.register_fake("vidrestore::deform_conv2d_backward")(_fake_backward)
    torch.library.register_autograd("vidrestore::deform_conv2d", _backward, setup_context=_setup_context)
    _registered = True
