"""Evaluate a network on test sets, or restore your own frames or video.

    python test.py -opt options/test/reds4.yml [--set path.pretrain_network_g=W.pth] [--bicubic]
    python test.py --model W.pth --input frames_or_video --output OUT [--video out.mp4] [--tile 256]

Evaluation (``-opt``, ``models/evaluation.py``): the weights (``path.pretrain_network_g``; ours or
BasicSR's) are loaded into the network of the option file; every set of ``datasets.test`` is
restored frame by frame (sliding temporal window) and measured as configured in ``val.metrics``,
averaged as the set's protocol says. Results go to ``<results_root>/<name>/<set>_<label>.{csv,md}``
(and restored frames with ``val.save_img``). ``--bicubic`` adds the same table for MATLAB-bicubic
upsampling of the centre frames, the baseline every restoration result is compared with.

Restoration (``--input``, ``models/restoration/``): every frame of a folder of images or a video
file is restored with a sliding window; the architecture comes from ``--opt``, else from the
weights file (ours record it; BasicSR's are read off their shapes). Outputs appear only when
complete (written beside their destination, then renamed); nothing the program did not write
is ever replaced.
"""

from __future__ import annotations

import os

# Transparent huge pages for CPU tensors of 2 MiB and more (PyTorch reads this once, when torch
# is imported): fewer page faults for the activations restoration maps and unmaps (see
# models.restoration.engine.release_freed_activations).
os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")

import argparse
import logging
import resource
import sys
from pathlib import Path

import cv2
import numpy as np
import torch
from torch import nn

import options
from data.video_folder import VideoFolderDataset
from models.checkpoint import load_network
from models.evaluation import EvalResult, evaluate
from models.bicubic import BicubicUpsampler
from models.outputs import check_location, check_output_file, check_replaceable
from models.restoration import (Engine, GroundTruthFolder, PngFolderSink, Tiling, VideoFileSink, WindowSchedule,
                                prepare_for_inference, release_freed_activations, restore_clip)
from models.restoration.onnx_network import OnnxNetwork, is_onnx_model
from models.restoration.sinks import VIDEO_FOURCC
from options import cli
from options.weights import check_exported_network, network_from_weights

logger = logging.getLogger("test")


def main(argv: list[str] | None = None) -> list[EvalResult] | dict:
    """The command line; returns the evaluation results, or the restoration summary."""
    parser = cli.ArgumentParser(description=__doc__)
    parser.add_argument("-opt", "--opt", help="option file (YAML); with --input only its network section is used")
    parser.add_argument("--set", action="append", default=[], metavar="KEY.PATH=VALUE",
                        help="override an option, e.g. --set path.pretrain_network_g=W.pth (repeatable)")
    parser.add_argument("--bicubic", action="store_true", help="also report bicubic upsampling of the same frames")
    add_restore_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        stream=sys.stdout, force=True)
    if args.input is not None or args.model is not None:
        if args.input is None or args.model is None:
            parser.error("restoring needs both --input and --model")
        return restore(args)
    if args.opt is None:
        parser.error("give -opt OPTIONS.yml (evaluation) or --input/--model/--output (restoration)")
    opts = options.load(args.opt, args.set)
    return run(opts, bicubic=args.bicubic)


def run(opts: options.Options, bicubic: bool = False) -> list[EvalResult]:
    if not opts.datasets.test:
        raise options.OptionsError(opts.name, "datasets.test", "test.py needs at least one test set")
    if not opts.path.pretrain_network_g:
        raise options.OptionsError(opts.name, "path.pretrain_network_g",
                                   "test.py needs the weights to evaluate (--set path.pretrain_network_g=W.pth)")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    release_freed_activations()
    if is_onnx_model(opts.path.pretrain_network_g):  # an export of scripts/export.py, run by ONNX Runtime
        net = open_onnx_network(Path(opts.path.pretrain_network_g), opts.network)
        device = net.device
    else:
        net = opts.network.build()
        load_network(net, opts.path.pretrain_network_g, opts.path.param_key_g, opts.path.strict_load_g)
        net = prepare_for_inference(net, device)
    candidates = [(opts.network.type, net)]
    if bicubic:  # the baseline, at any frame size (no padding)
        candidates.append(("bicubic", BicubicUpsampler(net.num_frame, net.center_frame_idx, net.scale)))

    out_dir = Path(opts.path.results_root) / opts.name
    check_location(out_dir, [Path(opts.path.pretrain_network_g)], what="path.results_root / name")
    out_dir.mkdir(parents=True, exist_ok=True)
    results = []
    for number, test in enumerate(opts.datasets.test):
        dataset = test.dataset.build()
        for label, model in candidates:
            result = evaluate(Engine(model), dataset, test.name, opts.val.metrics, device, num_workers=test.num_worker,
                              images=out_dir / test.name / label if opts.val.save_img else None)
            if not result.clips:
                raise options.OptionsError(opts.name, f"datasets.test[{number}].dataset.dataroot_gt",
                                           f"{test.name} has no ground truth to measure against")
            print("\n" + result.save(out_dir / f"{test.name}_{label}", label), flush=True)
            results.append(result)
        if bicubic:
            for metric in results[-1].metric_names:
                gain = results[-2].mean(metric) - results[-1].mean(metric)
                print(f"{test.name}: {opts.network.type} {metric} {results[-2].mean(metric):.4f} vs bicubic "
                      f"{results[-1].mean(metric):.4f} (gain {gain:+.4f})", flush=True)
    logger.info("results written to %s", out_dir)
    return results



# ---- restoring a user's own frames or video ---------------------------------------------------


def frame_indices(text: str) -> list[int]:
    """``--compare`` value: comma-separated frame indices, e.g. ``0,10,50``."""
    try:
        indices = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected frame indices such as 0,10,50, got {text!r}") from None
    if any(i < 0 for i in indices):
        raise argparse.ArgumentTypeError(f"frame indices start at 0, got {text!r}")
    return indices


frame_indices.__name__ = "frame indices"


def add_restore_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("restore a folder of frames or a video (no ground truth needed)")
    group.add_argument("--input", type=Path, help="folder of frames (natural order) or a video file")
    group.add_argument("--model", type=Path, help="weights: ours or BasicSR's (params / params_ema), or a "
                                                 "model exported by scripts/export.py (.onnx: ONNX Runtime)")
    group.add_argument("--output", type=Path, help="new folder for the restored PNG frames (same names as the input)")
    group.add_argument("--video", type=Path, help="also (or only) write an encoded video, e.g. out.mp4")
    group.add_argument("--fps", type=cli.finite_positive_float,
                       help="fps of --video (default: the input video's, or 25)")
    group.add_argument("--tile", type=cli.positive_int,
                       help="restore in tiles of this many LR pixels (bounded memory; a multiple of 4, 16 for "
                            "deblurring networks)")
    group.add_argument("--tile-overlap", type=cli.non_negative_int, default=32,
                       help="context around each tile, LR pixels (same multiple as --tile)")
    group.add_argument("--batch", type=cli.positive_int, default=1, help="windows per forward pass")
    group.add_argument("--padding", default="reflection_circle",
                       choices=["reflection_circle", "reflection", "replicate", "circle"],
                       help="how windows are completed at the clip (or shot) borders")
    group.add_argument("--scene-cuts", choices=["off", "auto"], default="off",
                       help="auto: detect hard cuts and never let a window cross one")
    group.add_argument("--cut-threshold", type=cli.finite_positive_float, default=30.0,
                       help="mean absolute difference (0-255, grey 1/8 thumbnails) that marks a cut")
    group.add_argument("--compare", type=frame_indices, default=[],
                       help="frame indices (e.g. 0,10,50) to save side by side into OUTPUT/compare: "
                            "bicubic | network | GT")
    group.add_argument("--gt", type=Path, help="folder of ground-truth frames (same names): PSNR/SSIM table")
    group.add_argument("--allow-gaps", action="store_true",
                       help="restore a folder whose frame numbering has gaps (missing frames) as if it had none")
    precision = group.add_mutually_exclusive_group()
    precision.add_argument("--half", action="store_true", help="float16 autocast (GPU)")
    precision.add_argument("--bf16", action="store_true", help="bfloat16 autocast")
    group.add_argument("--overwrite", action="store_true",
                       help="replace an earlier result of ours in --output / the --video file (nothing else "
                            "is ever deleted)")


def build_restore_network(args: argparse.Namespace) -> nn.Module:
    """The network of --opt, else the one the weights file stands for; then its weights, loaded strictly."""
    spec = options.load(args.opt, args.set).network if args.opt else network_from_weights(args.model)
    net = spec.build()
    load_network(net, args.model, key="auto", strict=True)
    return net


def open_onnx_network(path: Path, spec=None) -> OnnxNetwork:
    """An exported model (ONNX Runtime); with ``spec`` (an option file's network section) it must
    have been exported from that architecture."""
    net = OnnxNetwork(path)
    if spec is not None:
        check_exported_network(net.architecture, spec, path)
    return net


def check_restore_arguments(args: argparse.Namespace) -> None:
    """Every check that needs no network and no frames, before anything is read or written."""
    if args.output is None and args.video is None:
        raise cli.UsageError("test.py --input: give --output DIR (PNG frames) and/or --video FILE")
    if args.compare and args.output is None:
        raise cli.UsageError("--compare saves its panels into OUTPUT/compare: give --output too")
    if args.half and not torch.cuda.is_available():
        raise cli.UsageError("--half needs a CUDA GPU (float16 on CPU is slow and inaccurate); use --bf16 on CPU")
    inputs = [p for p in (args.input, args.model, args.gt, args.opt and Path(args.opt)) if p is not None]
    if args.output is not None:
        check_location(args.output, inputs)
        check_replaceable(args.output, args.overwrite)
    if args.video is not None:
        if args.video.suffix.lower() not in VIDEO_FOURCC:
            raise cli.UsageError(f"--video {args.video}: unsupported video container {args.video.suffix!r} "
                                 f"(use {', '.join(VIDEO_FOURCC)})")
        check_output_file(args.video, inputs + ([args.output] if args.output is not None else []),
                          args.overwrite)


def video_fps(path: Path) -> float:
    """Frames per second recorded in a video file (25 when the container does not say)."""
    capture = cv2.VideoCapture(str(path))
    fps = capture.get(cv2.CAP_PROP_FPS)
    capture.release()
    return fps if fps and np.isfinite(fps) and 0 < fps <= 1000 else 25.0


def restore(args: argparse.Namespace) -> dict:
    """Restore every frame of --input; returns a summary (frames, seconds, fps, peak memory, metrics)."""
    check_restore_arguments(args)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    release_freed_activations()
    if is_onnx_model(args.model):  # an export of scripts/export.py, run by ONNX Runtime in float32
        if args.half or args.bf16:
            raise cli.UsageError("--half/--bf16: an ONNX model runs in float32 (the precision of its export)")
        net = open_onnx_network(args.model, options.load(args.opt, args.set).network if args.opt else None)
        device = net.device
    else:
        net = prepare_for_inference(build_restore_network(args), device)
    if args.tile is not None and (args.tile % net.size_multiple or args.tile_overlap % net.size_multiple):
        raise cli.UsageError(f"--tile {args.tile} and --tile-overlap {args.tile_overlap} must be multiples of "
                             f"{net.size_multiple} for this network")
    precision = torch.float16 if args.half else torch.bfloat16 if args.bf16 else None
    engine = Engine(net, precision=precision, tiling=Tiling(args.tile, args.tile_overlap))
    source = VideoFolderDataset(args.input, num_frame=net.num_frame, padding=args.padding, allow_gaps=args.allow_gaps)
    (height, width, _), scale = source.shape, net.scale
    compare = {i for i in args.compare if i < len(source)}
    if len(compare) < len(set(args.compare)):
        ignored = ", ".join(map(str, sorted(set(args.compare) - compare)))
        logger.warning("--compare: ignoring %s (the input has frames 0-%d)", ignored, len(source) - 1)
    schedule = WindowSchedule(net.num_frame, args.padding, args.cut_threshold if args.scene_cuts == "auto" else None)
    ground_truth = GroundTruthFolder(args.gt) if args.gt is not None else None

    sinks = [PngFolderSink(args.output, args.overwrite)] if args.output else []
    try:
        if args.video:
            fps = args.fps or (video_fps(args.input) if source.video is not None else 25.0)
            sinks.append(VideoFileSink(args.video, fps, (width * scale, height * scale)))
    except BaseException:
        for sink in sinks:
            sink.discard()
        raise
    side_files = sinks[0].path if args.output else None
    summary = restore_clip(source, engine, schedule, device, sinks, batch_size=args.batch, ground_truth=ground_truth,
                           compare=compare, side_files=side_files)

    if len(summary.scores):
        print(summary.scores.table())
    peak_rss_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    gpu = f", peak GPU memory {torch.cuda.max_memory_allocated() / 2**20:.0f} MiB" if device.type == "cuda" else ""
    print(f"restored {summary.frames} frames of {width}x{height} -> {width * scale}x{height * scale} in "
          f"{summary.seconds:.1f} s ({summary.fps:.3g} frames/s, {summary.seconds / summary.frames:.3g} s/frame), "
          f"peak RSS {peak_rss_mib:.0f} MiB{gpu}", flush=True)
    return {"frames": summary.frames, "seconds": summary.seconds, "fps": summary.fps, "peak_rss_mib": peak_rss_mib,
            "psnr": summary.scores.mean("psnr"), "bicubic_psnr": summary.scores.mean("bicubic_psnr")}


if __name__ == "__main__":
    sys.exit(cli.run(main))
