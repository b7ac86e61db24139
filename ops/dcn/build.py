"""Ahead-of-time build of the native DCN kernels: the same library the first use would JIT-build.

    python -m ops.dcn.build              # flavour for this machine (CUDA if a GPU is visible)
    python -m ops.dcn.build --cuda       # force the CUDA flavour (needs nvcc; set TORCH_CUDA_ARCH_LIST
                                         # for the target GPUs, default 9.0 when no GPU is visible)
    python -m ops.dcn.build --cpu        # C++ kernels only
    TORCH_EXTENSIONS_DIR=/opt/ext python -m ops.dcn.build   # build into that cache; set the same
                                         # variable at run time and nothing is compiled there

The library goes to the JIT cache (``$TORCH_EXTENSIONS_DIR/<name>``, else torch's default),
where the runtime looks for it. Exit status 1, with the reason and the fix, when the build fails.
"""

from __future__ import annotations

import argparse
import os
import sys
import time


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ops.dcn.build", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    flavour = parser.add_mutually_exclusive_group()
    flavour.add_argument("--cuda", action="store_true", help="build the CUDA flavour (C++ + CUDA kernels)")
    flavour.add_argument("--cpu", action="store_true", help="build the CPU-only flavour")
    parser.add_argument("--verbose", action="store_true", help="show the compiler commands and output")
    args = parser.parse_args(argv)

    from . import _ext

    if args.cuda or args.cpu:
        os.environ[_ext.CUDA_ENV_VAR] = "1" if args.cuda else "0"
    try:
        with_cuda = _ext.want_cuda()
        start = time.perf_counter()
        path = _ext.build(with_cuda, verbose=args.verbose)
    except _ext.NativeBuildError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"{_ext.extension_name(with_cuda)} built or up to date ({time.perf_counter() - start:.1f} s): {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
