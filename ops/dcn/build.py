"""Build the native DCN kernels (``ops/dcn/csrc``) into a shared library, ahead of time or on first use.

    python -m ops.dcn.build              # the default flavour (CPU; CUDA with VIDRESTORE_DCN_CUDA=1)
    python -m ops.dcn.build --cuda       # force the CUDA flavour (needs nvcc; set TORCH_CUDA_ARCH_LIST
                                         # for the target GPUs, default 9.0 when no GPU is visible)
    python -m ops.dcn.build --cpu        # C++ kernels only
    TORCH_EXTENSIONS_DIR=/opt/ext python -m ops.dcn.build   # build into that cache; set the same
                                         # variable at run time and nothing is compiled there

The library goes to ``$TORCH_EXTENSIONS_DIR/<name>`` if that variable is set, else to
``~/.cache/vidrestore/torch_extensions/<name>`` (``$XDG_CACHE_HOME`` replaces ``~/.cache``),
where the runtime (``ops.dcn.library``) looks for it. Next to it a ``.stamp`` file holds a
fingerprint of the sources, flags, torch version and CUDA targets: while it matches, nothing is
compiled (and neither ninja nor a compiler is needed). Exit status 1, with the reason and the
fix, when the build fails.

Two flavours, one op: ``cpu`` (C++ kernels) and ``cuda`` (C++ + CUDA kernels); the caller
chooses with ``with_cuda``. Compilation uses ``torch.utils.cpp_extension`` (ninja, the system
C++ compiler, nvcc for the CUDA flavour), imported only when something must be compiled.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import logging
import os
import re
import shutil
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

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


def default_with_cuda() -> bool:
    """The flavour to build and load: ``$VIDRESTORE_DCN_CUDA`` (1/0) if set, else the CPU flavour.

    The CUDA flavour is opt-in: ``auto`` sends CUDA inputs to torchvision (see
    ``backends.auto_order``), so a GPU machine needs neither nvcc nor a CUDA build for the CPU
    kernels. The only place that reads the variable; callers pass the result on as ``with_cuda``.

    Raises:
        NativeBuildError: the variable holds something other than 1/0.
    """
    value = os.environ.get(CUDA_ENV_VAR, "").strip().lower()
    if value in ("1", "true", "yes"):
        return True
    if value in ("0", "false", "no"):
        return False
    if value:
        raise NativeBuildError(f"{CUDA_ENV_VAR}={value!r}: expected 1 or 0")
    return False


def extension_name(with_cuda: bool) -> str:
    return "vidrestore_dcn_cuda" if with_cuda else "vidrestore_dcn_cpu"


def sources(with_cuda: bool) -> list[str]:
    """The C++ (and, for the CUDA flavour, CUDA) source files, sorted."""
    files = [CSRC / "dcn.cpp", *sorted((CSRC / "cpu").glob("*.cpp"))]
    if with_cuda:
        files += sorted((CSRC / "cuda").glob("*.cu"))
    return [str(f) for f in files]


def default_build_directory(with_cuda: bool) -> Path:
    """``$TORCH_EXTENSIONS_DIR/<name>`` if set, else ``<user cache>/vidrestore/torch_extensions/<name>``
    (user cache: ``$XDG_CACHE_HOME``, default ``~/.cache``)."""
    root = os.environ.get("TORCH_EXTENSIONS_DIR")
    if not root:
        cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
        root = Path(cache) / "vidrestore" / "torch_extensions"
    return Path(root) / extension_name(with_cuda)


def library_path(with_cuda: bool, build_directory: str | os.PathLike | None = None) -> Path:
    """Where the shared library of a flavour is (or will be) built."""
    directory = Path(build_directory) if build_directory is not None else default_build_directory(with_cuda)
    return directory / f"{extension_name(with_cuda)}.so"


def is_up_to_date(library: Path, with_cuda: bool) -> bool:
    """Whether ``library`` exists and was built from the current sources, flags, torch and CUDA targets."""
    return _stamp_of(library) == fingerprint(with_cuda)


def _stamp_of(library: Path) -> str | None:
    """The fingerprint ``library`` was built with; None if it or its stamp is missing."""
    stamp = library.with_suffix(".stamp")
    return stamp.read_text() if library.exists() and stamp.exists() else None


def fingerprint(with_cuda: bool) -> str:
    """Hash of everything the library depends on: sources, headers, flags, torch, CUDA targets."""
    digest = hashlib.sha256()
    for path in sorted(CSRC.rglob("*")):
        if path.suffix in (".cpp", ".cu", ".h", ".cuh") and (with_cuda or path.suffix in (".cpp", ".h")):
            digest.update(str(path.relative_to(CSRC)).encode() + b"\0" + path.read_bytes() + b"\0")
    flags = [EXTRA_CFLAGS, EXTRA_LDFLAGS, torch.__version__, str(with_cuda)]
    if with_cuda:
        flags += [EXTRA_CUDA_CFLAGS, _cuda_arch_list(), str(torch.version.cuda)]
    digest.update(repr(flags).encode())
    return digest.hexdigest()


def build(with_cuda: bool, build_directory: str | os.PathLike | None = None, verbose: bool = False) -> Path:
    """Compile one flavour unless it is up to date; return the path of the shared library.

    Compiling goes through ``torch.utils.cpp_extension.load``, which also loads the new library
    into this process. The environment variables and ``cpp_extension`` settings it needs are set
    for the compilation only and restored afterwards.

    Raises:
        NativeBuildError: no compiler/ninja/nvcc, the compilation failed, or an older build of the
            op is already loaded in this process.
    """
    library = library_path(with_cuda, build_directory)
    expected = fingerprint(with_cuda)
    if _stamp_of(library) == expected:
        return library
    if hasattr(torch.ops.vidrestore, "deform_conv2d"):
        # Loading a second build would register the op twice, which aborts the process.
        raise NativeBuildError(
            f"{library} is missing or out of date (sources, flags or torch changed) but another build of "
            f"vidrestore::deform_conv2d is already loaded in this process. Fix: run "
            f"`python -m ops.dcn.build` in a separate process (or restart this one) to rebuild"
        )
    _compile(with_cuda, library, expected, verbose)
    if not library.exists():
        raise NativeBuildError(f"the build of {extension_name(with_cuda)} produced no {library}")
    library.with_suffix(".stamp").write_text(expected)
    return library


def _compile(with_cuda: bool, library: Path, stamp_text: str, verbose: bool) -> None:
    name = extension_name(with_cuda)
    _check_compiler()
    cpp_extension = _import_cpp_extension()
    if not cpp_extension.is_ninja_available():
        raise NativeBuildError("ninja is not installed. Fix: `pip install ninja`, then `python -m ops.dcn.build`")
    # cpp_extension reads these from the environment (MAX_JOBS, TORCH_CUDA_ARCH_LIST) and from its
    # module global CUDA_HOME; they are set for this compilation only.
    environment = {"MAX_JOBS": os.environ.get("MAX_JOBS") or str(min(os.cpu_count() or 1, 2))}
    settings: dict[str, object] = {}
    include_paths: list[str] = []
    if with_cuda:
        cuda_home = _cuda_home(cpp_extension)
        _check_nvcc(cuda_home)
        settings["CUDA_HOME"] = cuda_home  # torch's own guess can be a wrapper script's folder
        if arch_list := _cuda_arch_list():
            environment["TORCH_CUDA_ARCH_LIST"] = arch_list
        include_paths = _pip_cuda_include_dirs()
    library.parent.mkdir(parents=True, exist_ok=True)
    try:
        with _set_environment(environment), _set_attributes(cpp_extension, settings):
            cpp_extension.load(
                name=name,
                sources=sources(with_cuda),
                # The fingerprint in the command line makes ninja rebuild when the sources' content
                # changes, not only their mtime (a build that raced with an edit of the tree).
                extra_cflags=EXTRA_CFLAGS + [f"-DVIDRESTORE_DCN_SOURCE_HASH={stamp_text[:16]}"]
                + (["-DVIDRESTORE_WITH_CUDA"] if with_cuda else []),
                extra_cuda_cflags=EXTRA_CUDA_CFLAGS,
                extra_ldflags=EXTRA_LDFLAGS,
                extra_include_paths=include_paths,
                build_directory=str(library.parent),
                with_cuda=with_cuda,
                is_python_module=False,
                verbose=verbose,
            )
    except Exception as error:  # compiler errors arrive as RuntimeError/CalledProcessError/OSError
        raise NativeBuildError(
            f"building the native DCN kernels ({name}) in {library.parent} failed: {_last_lines(error)}. "
            f"Fix: run `python -m ops.dcn.build --verbose` to see the full compiler output "
            f"(needs a C++17 compiler, ninja{' and nvcc matching torch.version.cuda' if with_cuda else ''}); "
            f"meanwhile set VIDRESTORE_DCN=torchvision to silence this."
        ) from error


@contextlib.contextmanager
def _set_environment(values: dict[str, str]) -> Iterator[None]:
    """Set environment variables for the duration of the block, then restore the previous ones."""
    previous = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in previous.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@contextlib.contextmanager
def _set_attributes(module: ModuleType, values: dict[str, object]) -> Iterator[None]:
    """Set a module's globals for the duration of the block, then restore the previous ones."""
    previous = {key: getattr(module, key) for key in values}
    for key, value in values.items():
        setattr(module, key, value)
    try:
        yield
    finally:
        for key, value in previous.items():
            setattr(module, key, value)


def _import_cpp_extension() -> ModuleType:
    """``torch.utils.cpp_extension``, without the "No CUDA runtime is found, using CUDA_HOME=..."
    warning its import logs on machines without a GPU (the CUDA toolkit is chosen by ``_cuda_home``)."""
    logger = logging.getLogger("torch.utils.cpp_extension")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        from torch.utils import cpp_extension
    finally:
        logger.setLevel(level)
    return cpp_extension


def _cuda_arch_list() -> str:
    """The CUDA targets: ``$TORCH_CUDA_ARCH_LIST``, else 9.0 without a visible GPU, else "" (torch
    then compiles for the visible GPUs)."""
    value = os.environ.get("TORCH_CUDA_ARCH_LIST", "")
    if not value and not torch.cuda.is_available():
        return DEFAULT_CUDA_ARCH_LIST  # nvcc needs a target without a GPU
    return value


def _check_compiler() -> None:
    compiler = os.environ.get("CXX", "c++")
    if shutil.which(compiler) is None:
        raise NativeBuildError(
            f"no C++ compiler found ({compiler!r} is not on PATH). Fix: install one "
            f"(e.g. `apt-get install g++`) or set CXX, then run `python -m ops.dcn.build`"
        )


def _check_nvcc(cuda_home: str | None) -> None:
    nvcc = Path(cuda_home or "/usr/local/cuda") / "bin" / "nvcc"
    if not nvcc.exists():
        raise NativeBuildError(
            f"nvcc not found (CUDA_HOME={cuda_home}). Fix: install the CUDA toolkit matching torch "
            f"(CUDA {torch.version.cuda}) and set CUDA_HOME, or set {CUDA_ENV_VAR}=0 for the CPU-only build"
        )


def _cuda_home(cpp_extension: ModuleType) -> str | None:
    """The CUDA toolkit root: $CUDA_HOME/$CUDA_PATH, else torch's guess if it holds the runtime
    headers, else /usr/local/cuda."""
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
    """The compiler's first error lines (the cause; later errors often only follow from it), then the
    last lines of the output, joined on one line."""
    text = str(error).strip() or type(error).__name__
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    first_errors = [line for line in lines if re.search(r"\berror\b", line, re.IGNORECASE)][:2]
    tail = [line for line in lines[-count:] if line not in first_errors]
    return " | ".join(first_errors + tail)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ops.dcn.build", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    flavour = parser.add_mutually_exclusive_group()
    flavour.add_argument("--cuda", action="store_true", help="build the CUDA flavour (C++ + CUDA kernels)")
    flavour.add_argument("--cpu", action="store_true", help="build the CPU-only flavour")
    parser.add_argument("--verbose", action="store_true", help="show the compiler commands and output")
    args = parser.parse_args(argv)

    try:
        with_cuda = args.cuda or (not args.cpu and default_with_cuda())
        start = time.perf_counter()
        path = build(with_cuda, verbose=args.verbose)
    except NativeBuildError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"{extension_name(with_cuda)} built or up to date ({time.perf_counter() - start:.1f} s): {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
