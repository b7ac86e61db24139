"""Export a network's weights for deployment: ONNX with the standard DeformConv, or a torch.export program.

    python scripts/export.py --model W.pth --out edvr.onnx                 # ONNX (opset 19), any batch/H/W
    python scripts/export.py --model W.pth --opt X.yml --out edvr.onnx --opset 21
    python scripts/export.py --model W.pth --out edvr.pt2                  # torch.export program
    python scripts/export.py --model W.pth --out edvr_aoti.pt2 --aoti      # AOTInductor package (C++)

The architecture comes from --opt (its network section), else from the weights file (ours
record it; BasicSR's are read off their shapes), as for ``test.py --model``; the weights are
loaded strictly (params_ema when the file has it, else params). The ONNX graph takes ``lq``
(B, T, C, H, W) float32 RGB in [0, 1] with H and W multiples of the network's size multiple and
gives ``restored`` (B, C, H*scale, W*scale); its metadata props record the architecture, scale,
size multiple, frames per window, centre index and the SHA-256 of the weights file. Run it
with ``test.py --model edvr.onnx --input ...`` (ONNX Runtime) or any runtime with DeformConv
(TensorRT 10.1+); see docs/deploy.md.

Before anything is written, the export is run (ONNX Runtime, or the exported program) on two
random inputs of sizes other than the traced one and compared with the PyTorch network: more
than 1e-3 apart is a failed export. The file is written beside its destination and renamed
when complete; an existing file is replaced only with --overwrite.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

import options  # noqa: E402
from models.checkpoint import atomic_write, load_network  # noqa: E402
from models.export import example_input, export_metadata, file_sha256, max_difference  # noqa: E402
from models.outputs import check_output_file, partial_file  # noqa: E402
from ops.dcn import BackendUnavailable, get_backend  # noqa: E402
from options import cli  # noqa: E402
from options.weights import network_from_weights  # noqa: E402

logger = logging.getLogger("export")

VERIFY_TOLERANCE = 1e-3  # max |export - PyTorch| on random inputs in [0, 1]; float32 rounding is ~1e-6
# Batches and sizes (in size multiples) of the verification inputs: others than the traced one (2, (2, 3)).
VERIFY_SHAPES = ((1, (3, 2)), (3, (2, 5)))
FIRST_OPSET = 19  # ONNX has DeformConv from opset 19 on
ONNX_DEPENDENCIES_HINT = "pip install -r requirements-onnx.txt"


def opset_number(text: str) -> int:
    """``--opset`` value: an ONNX opset with DeformConv (19 up to ``last_opset()`` here)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < FIRST_OPSET:
        raise argparse.ArgumentTypeError(f"ONNX has DeformConv from opset {FIRST_OPSET} on, got {value}")
    try:
        from ops.dcn.onnx_export import last_opset
    except ImportError:
        return value  # no onnx/onnxscript: the export says what to install
    if value > last_opset():
        raise argparse.ArgumentTypeError(f"the installed onnx and onnxscript export opsets {FIRST_OPSET} to "
                                         f"{last_opset()}, got {value}")
    return value


opset_number.__name__ = "opset"


def exportable_backend() -> str:
    """The DCN backend the exported graph is traced with: our native op, else torchvision's (both
    become DeformConv; the pure-PyTorch reference would be traced into gathers)."""
    try:
        get_backend("native", "cpu")
        return "native"
    except BackendUnavailable as error:
        logger.info("native DCN op unavailable (%s): tracing torchvision's", error)
        return "torchvision"


def build_network(args: argparse.Namespace) -> tuple[torch.nn.Module, dict]:
    """The network with its weights (loaded strictly) on the CPU in eval mode, and its network
    section as recorded in the export (plain values, the centre index resolved, no DCN backend)."""
    spec = options.load(args.opt, args.set).network if args.opt else network_from_weights(args.model)
    spec = dataclasses.replace(spec, kwargs={**spec.kwargs, "dcn_backend": exportable_backend()})
    net = spec.build()
    load_network(net, args.model, key="auto", strict=True)
    net = net.eval().requires_grad_(False)
    architecture = {key: value for key, value in options.to_plain(spec).items() if key != "dcn_backend"}
    if "center_frame_idx" in architecture:
        architecture["center_frame_idx"] = net.center_frame_idx
    return net, architecture


def export_onnx_file(net: torch.nn.Module, metadata: dict, args: argparse.Namespace) -> str:
    try:
        import onnxruntime  # noqa: F401
        import onnxscript  # noqa: F401

        from models.export import export_onnx
        from models.restoration.onnx_network import OnnxNetwork
    except ImportError as error:
        raise cli.UsageError(f"exporting to ONNX needs onnx, onnxscript and onnxruntime ({error}); "
                             f"install them: {ONNX_DEPENDENCIES_HINT}") from None
    model = export_onnx(net, metadata, args.opset)
    data = model.SerializeToString()
    runtime = OnnxNetwork(data, providers=["CPUExecutionProvider"])
    difference = verify(net, runtime, "ONNX Runtime")
    atomic_write(args.out, lambda handle: handle.write(data))
    deform_convs = sum(node.op_type == "DeformConv" for node in model.graph.node)
    return (f"opset {model.opset_import[0].version}, {deform_convs} DeformConv nodes, "
            f"max |ONNX Runtime - PyTorch| {difference:.1e}")


def export_program_file(net: torch.nn.Module, metadata: dict, args: argparse.Namespace) -> str:
    from models.export import export_program, save_program

    program = export_program(net)
    if not args.aoti:
        difference = verify(net, program.module(), "the exported program")
        atomic_write(args.out, lambda handle: save_program(program, handle, metadata))
        return f"torch.export program, max |program - PyTorch| {difference:.1e}"
    partial = partial_file(args.out)
    try:
        torch._inductor.aoti_compile_and_package(program, package_path=str(partial))
        difference = verify(net, torch._inductor.aoti_load_package(str(partial)), "the AOTInductor package")
        os.replace(partial, args.out)
    finally:
        partial.unlink(missing_ok=True)
    return f"AOTInductor package, max |package - PyTorch| {difference:.1e}"


def verify(net: torch.nn.Module, exported, what: str) -> float:
    """Max |exported - net| on random inputs of ``VERIFY_SHAPES``; above ``VERIFY_TOLERANCE`` the
    export failed."""
    inputs = [example_input(net, batch, size) for batch, size in VERIFY_SHAPES]
    difference = max_difference(net, exported, inputs)
    if not difference <= VERIFY_TOLERANCE:
        shapes = [tuple(x.shape) for x in inputs]
        raise RuntimeError(f"{what} differs from the PyTorch network by {difference:.3g} "
                           f"(> {VERIFY_TOLERANCE}) on inputs of shapes {shapes}: the export is wrong, "
                           "nothing written")
    return difference


def main(argv: list[str] | None = None) -> int:
    parser = cli.ArgumentParser(description=__doc__)
    parser.add_argument("--model", type=Path, required=True,
                        help="weights: ours or BasicSR's (params / params_ema)")
    parser.add_argument("--out", type=Path, required=True,
                        help="the export: NAME.onnx, or NAME.pt2 (torch.export)")
    parser.add_argument("-opt", "--opt", help="option file whose network section gives the architecture")
    parser.add_argument("--set", action="append", default=[], metavar="KEY.PATH=VALUE",
                        help="override an option of --opt (repeatable)")
    parser.add_argument("--opset", type=opset_number,
                        help=f"ONNX opset (default {FIRST_OPSET}, the first with DeformConv)")
    parser.add_argument("--aoti", action="store_true",
                        help="with a .pt2 --out: compile an AOTInductor package")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        stream=sys.stdout, force=True)
    for chatty in ("onnxscript", "onnx_ir"):  # the exporter's optimiser logs every rewrite at INFO
        logging.getLogger(chatty).setLevel(logging.WARNING)
    kind = args.out.suffix.lower()
    if kind not in (".onnx", ".pt2"):
        raise cli.UsageError(f"--out {args.out}: name an .onnx file (ONNX) or a .pt2 file (torch.export)")
    if args.aoti and kind != ".pt2":
        raise cli.UsageError("--aoti makes an AOTInductor package: name a .pt2 --out file")
    if args.opset is not None and kind != ".onnx":
        raise cli.UsageError("--opset is for ONNX exports: name an .onnx --out file")
    if args.model.suffix.lower() in (".onnx", ".pt2"):
        raise cli.UsageError(f"--model {args.model}: this is an export, not weights; give the PyTorch weights "
                             "file (.pth, ours or BasicSR's) it was made from")
    if args.set and not args.opt:
        raise cli.UsageError("--set overrides options of --opt: give --opt too")
    inputs = [args.model] + ([Path(args.opt)] if args.opt else [])
    check_output_file(args.out, inputs, args.overwrite, what="--out")

    net, architecture = build_network(args)
    metadata = export_metadata(net, architecture, file_sha256(args.model))
    summary = (export_onnx_file if kind == ".onnx" else export_program_file)(net, metadata, args)
    size_mib = args.out.stat().st_size / 2**20
    print(f"wrote {args.out} ({size_mib:.1f} MiB): {architecture['type']} x{net.scale}, {net.num_frame} "
          f"frames (centre {net.center_frame_idx}), H and W multiples of {net.size_multiple}; {summary}",
          flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
