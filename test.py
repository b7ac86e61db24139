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
os.environ.setdefault("SVT_LOG", "1")  # the AV1 encoder (SVT-AV1) prints errors only, not its banner

import argparse
import logging
import resource
import shlex
import sys
from pathlib import Path

import torch
from torch import nn

import options
from data.storage import DataError
from data.video_file import Colour
from data.video_folder import VideoFolderDataset
from models.bicubic import BicubicUpsampler
from models.checkpoint import load_network
from models.evaluation import EvalResult, evaluate
from models.outputs import check_location, check_output_file, check_replaceable
from models.restoration import (Engine, GroundTruthFolder, PngFolderSink, Tiling, VideoFileSink, WindowSchedule,
                                prepare_for_inference, release_freed_activations, restore_clip)
from models.restoration.encoding import (CODECS, CONTAINERS, PIXEL_FORMATS, FrameTiming, VideoEncoding,
                                         check_encoding, copyable_streams, output_colour)
from models.restoration.resume import file_digest, input_identity
from models.restoration.engine import PRECISION_CHOICES, Precision, choose_precision
from models.restoration.onnx_network import OnnxNetwork, is_onnx_model
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
    args.argv = list(argv) if argv is not None else sys.argv[1:]
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        stream=sys.stdout, force=True)
    if args.input is not None or args.model is not None:
        if args.input is None or args.model is None:
            parser.error("restoring needs both --input and --model")
        return restore(args)
    if args.opt is None:
        parser.error("give -opt OPTIONS.yml (evaluation) or --input/--model/--output (restoration)")
    opts = options.load(args.opt, args.set)
    return run(opts, bicubic=args.bicubic, precision=args.precision or "fp32")


def run(opts: options.Options, bicubic: bool = False, precision: str = "fp32") -> list[EvalResult]:
    """Evaluate on every test set in ``precision`` (float32 unless asked: published-protocol numbers;
    tables of another precision are labelled with it, e.g. ``EDVR_bf16``)."""
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
    chosen = model_precision(precision, net, device)
    logger.info("precision: %s (%s)", chosen.name, chosen.reason)
    candidates = [(opts.network.type if chosen.name == "fp32" else f"{opts.network.type}_{chosen.name}", net)]
    if bicubic:  # the baseline, at any frame size (no padding)
        candidates.append(("bicubic", BicubicUpsampler(net.num_frame, net.center_frame_idx, net.scale)))

    out_dir = Path(opts.path.results_root) / opts.name
    check_location(out_dir, [Path(opts.path.pretrain_network_g)], what="path.results_root / name")
    out_dir.mkdir(parents=True, exist_ok=True)
    weights = Path(opts.path.pretrain_network_g)
    protocol = "; ".join(f"{name} on {'Y (BT.601)' if m.test_y_channel else 'RGB'}, crop {m.crop_border}"
                         for name, m in opts.val.metrics.items())
    settings = {"weights": f"{weights} (sha256 {file_digest(weights)[:12]})",
                "precision": precision_label(chosen),
                "protocol": f"{protocol}; outputs quantised to 8 bits"}
    results = []
    for number, test in enumerate(opts.datasets.test):
        dataset = test.dataset.build()
        for label, model in candidates:
            engine = Engine(model, precision=chosen.dtype if model is net else None)
            result = evaluate(engine, dataset, test.name, opts.val.metrics, device,
                              num_workers=test.num_worker,
                              images=out_dir / test.name / label if opts.val.save_img else None)
            if not result.clips:
                raise options.OptionsError(opts.name, f"datasets.test[{number}].dataset.dataroot_gt",
                                           f"{test.name} has no ground truth to measure against")
            print("\n" + result.save(out_dir / f"{test.name}_{label}", label, settings), flush=True)
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
    group.add_argument("--input", type=Path, help="folder of frames (natural order) or a video file (any container "
                                                  "and codec FFmpeg reads; rotation metadata is applied)")
    group.add_argument("--model", type=Path, help="weights: ours or BasicSR's (params / params_ema), or a "
                                                 "model exported by scripts/export.py (.onnx: ONNX Runtime)")
    group.add_argument("--output", type=Path, help="new folder for the restored PNG frames (same names as the input; "
                                                   "a video's frames are named 00000000, 00000001, ...)")
    group.add_argument("--video", type=Path,
                       help="also (or only) write an encoded video: out.mp4, out.mkv or out.mov (each frame keeps "
                            "the input's timestamp; audio and subtitles copied)")
    group.add_argument("--codec", choices=list(CODECS), default="h264", help="video codec of --video")
    group.add_argument("--crf", type=cli.int_range(0, 63),
                       help="quality of --video, lower is better (default 18; h264/h265 0-51, av1 0-63; none for "
                            "the lossless ffv1)")
    group.add_argument("--preset", help="encoder speed preset (h264/h265: ultrafast ... medium ... veryslow, "
                                        "default medium; av1: 0-13, default 8)")
    group.add_argument("--pix-fmt", choices=list(PIXEL_FORMATS), default="yuv420p",
                       help="pixel format of --video (yuv444p keeps full colour resolution; *10le: 10 bits, "
                            "h265/av1/ffv1, and h264 in 4:2:0, 4:2:2 and 4:4:4)")
    group.add_argument("--no-audio", action="store_true",
                       help="leave the input's audio and subtitle streams out of --video (copied unchanged by default)")
    group.add_argument("--segment-frames", type=cli.positive_int, default=120,
                       help="--video is encoded in closed pieces of this many frames (each starts with a key frame), "
                            "joined at the end without re-encoding")
    group.add_argument("--fps", type=cli.finite_positive_float,
                       help="frames per second of --video: a folder of frames is timed at 25 unless given; a video "
                            "input keeps its own timestamps unless given (then its audio must be left out)")
    group.add_argument("--resume", action="store_true",
                       help="continue an interrupted run from its last restored frame (same command and settings; "
                            "what it kept is in OUTPUT.partial / VIDEO.partial)")
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
                       help="auto: detect hard cuts and never let a window cross one (the cuts found are reported)")
    group.add_argument("--cut-threshold", type=cli.finite_positive_float, default=30.0,
                       help="mean absolute difference (0-255, grey 1/8 thumbnails) that marks a cut")
    group.add_argument("--compare", type=frame_indices, default=[],
                       help="frame indices (e.g. 0,10,50) to save side by side into OUTPUT/compare: "
                            "bicubic | network | GT")
    group.add_argument("--gt", type=Path,
                       help="ground truth for a PSNR/SSIM table: a folder of frames named as the input's (for a "
                            "video input 00000000.png, 00000001.png, ...), or holding exactly one frame per input "
                            "frame (matched in natural order), or a video with as many frames")
    group.add_argument("--allow-gaps", action="store_true",
                       help="restore a folder whose frame numbering has gaps (missing frames) as if it had none")
    precision = group.add_mutually_exclusive_group()
    precision.add_argument("--precision", choices=PRECISION_CHOICES,
                           help="arithmetic of the network (default: auto when restoring: bfloat16 on CPUs "
                                "with AVX512-BF16 or AMX and on GPUs that support it, else float32; fp32 for "
                                "-opt evaluation); fp16 needs a CUDA GPU")
    precision.add_argument("--bf16", dest="precision", action="store_const", const="bf16",
                           help="same as --precision bf16")
    precision.add_argument("--half", dest="precision", action="store_const", const="fp16",
                           help="same as --precision fp16")
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


def model_precision(requested: str, net, device: torch.device) -> Precision:
    """The precision ``net`` restores in: ``requested`` (a ``PRECISION_CHOICES`` entry) for our
    PyTorch network; an exported ONNX model runs its float32 graph."""
    if isinstance(net, OnnxNetwork):
        if requested not in ("auto", "fp32"):
            raise cli.UsageError(f"--precision {requested}: an ONNX model runs in float32 (the precision of its "
                                 f"export)", hint="leave --precision out, or restore with the .pth weights")
        return Precision("fp32", "ONNX Runtime runs the exported float32 graph")
    return choose_precision(requested, device)


def check_restore_arguments(args: argparse.Namespace) -> VideoEncoding | None:
    """Every check that needs no network and no frames, before anything is read or written; returns
    the encoding of --video."""
    if args.output is None and args.video is None:
        raise cli.UsageError("test.py --input: give --output DIR (PNG frames) and/or --video FILE")
    if args.compare and args.output is None:
        raise cli.UsageError("--compare saves its panels into OUTPUT/compare: give --output too")
    if args.precision == "fp16" and not torch.cuda.is_available():
        raise cli.UsageError("--precision fp16 (--half) needs a CUDA GPU (float16 on CPU is slow and "
                             "inaccurate); use --precision auto or bf16 on CPU")
    if not args.input.exists():  # before the network is built: the cheapest mistake is named first
        raise FileNotFoundError(f"{args.input}: no such folder or video file")
    inputs = [p for p in (args.input, args.model, args.gt, args.opt and Path(args.opt)) if p is not None]
    if args.output is not None:
        check_location(args.output, inputs)
        check_replaceable(args.output, args.overwrite)
    if args.video is None:
        for flag, given in (("--codec", args.codec != "h264"), ("--crf", args.crf is not None),
                            ("--preset", args.preset is not None), ("--pix-fmt", args.pix_fmt != "yuv420p")):
            if given:
                raise cli.UsageError(f"{flag} sets how --video is encoded: give --video FILE too")
        return None
    if args.video.suffix.lower() not in CONTAINERS:
        raise cli.UsageError(f"--video {args.video}: unsupported video container {args.video.suffix!r} "
                             f"(use {', '.join(CONTAINERS)})")
    encoding = check_encoding(args.codec, args.crf, args.preset, args.pix_fmt, args.video.suffix)
    check_output_file(args.video, inputs + ([args.output] if args.output is not None else []), args.overwrite)
    return encoding


def precision_label(precision: Precision) -> str:
    """The dtype restoration computes in, as tables and summaries name it ("float32", "bfloat16")."""
    return str(precision.dtype or torch.float32).removeprefix("torch.")


def restore_settings(args: argparse.Namespace, net: nn.Module, source: VideoFolderDataset, device: torch.device,
                     compare: set[int], precision: str) -> dict:
    """The record of what produces the frames: a continued run (--resume) must share it."""
    network = {"type": type(net).__name__, "num_frame": net.num_frame, "scale": net.scale,
               "parameters": sum(p.numel() for p in net.parameters()) if isinstance(net, nn.Module) else None}
    if args.opt:
        spec = options.load(args.opt, args.set).network
        network.update(type=spec.type, **{k: v for k, v in spec.kwargs.items() if isinstance(v, (int, float, str,
                                                                                                  bool, type(None)))})
    height, width, _ = source.shape
    return {
        "weights": {"file": args.model.name, "sha256": file_digest(args.model)},
        "network": network,
        "precision": precision,
        "tile": args.tile, "tile_overlap": args.tile_overlap if args.tile else None,
        "batch": args.batch, "padding": args.padding,
        "scene_cuts": args.cut_threshold if args.scene_cuts == "auto" else "off",
        "input": {"frames": len(source), "size": [width, height], **input_identity(args.input)},
        "gt": input_identity(args.gt) if args.gt is not None else None,
        "compare": sorted(compare),
        "device": device.type, "threads": torch.get_num_threads(),
    }


def video_sink(args: argparse.Namespace, encoding: VideoEncoding, source: VideoFolderDataset,
               size: tuple[int, int], settings: dict) -> VideoFileSink:
    """The --video sink: the input's timing, colour and streams carried over (see --fps, --no-audio)."""
    info = source.video.info if source.video is not None else None
    if info is not None and args.fps is None:
        timing = FrameTiming(info.pts, info.durations, info.time_base)
    else:
        timing = FrameTiming.constant(len(source), args.fps or 25.0)
    copy_streams: list[int] = []
    if info is not None and not args.no_audio:
        copy_streams, left_out = copyable_streams(args.input, CONTAINERS[args.video.suffix.lower()])
        if copy_streams and args.fps is not None:
            raise cli.UsageError("--fps re-times the video, so its audio and subtitles would fall out of step",
                                 hint="add --no-audio, or leave --fps out to keep the input's timestamps")
        for what in left_out:
            logger.warning("--video: the input's %s is not copied (only audio and subtitles are)", what)
    colour = output_colour(info.colour if info is not None else Colour(), *size)
    segment_frames = -(-args.segment_frames // args.batch) * args.batch  # whole batches (see restore_clip)
    return VideoFileSink(args.video, encoding, timing, size, colour, settings,
                         sample_aspect_ratio=info.sample_aspect_ratio if info is not None else None,
                         copy_from=args.input if copy_streams else None, copy_streams=copy_streams,
                         segment_frames=segment_frames, overwrite=args.overwrite, resume=args.resume)


def restore(args: argparse.Namespace) -> dict:
    """Restore every frame of --input; returns a summary (frames, seconds, fps, peak memory, metrics)."""
    encoding = check_restore_arguments(args)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    release_freed_activations()
    if is_onnx_model(args.model):  # an export of scripts/export.py, run by ONNX Runtime in float32
        net = open_onnx_network(args.model, options.load(args.opt, args.set).network if args.opt else None)
        device = net.device
    else:
        net = prepare_for_inference(build_restore_network(args), device)
    if args.tile is not None and (args.tile % net.size_multiple or args.tile_overlap % net.size_multiple):
        raise cli.UsageError(f"--tile {args.tile} and --tile-overlap {args.tile_overlap} must be multiples of "
                             f"{net.size_multiple} for this network")
    precision = model_precision(args.precision or "auto", net, device)
    logger.info("precision: %s (%s)", precision.name, precision.reason)
    engine = Engine(net, precision=precision.dtype, tiling=Tiling(args.tile, args.tile_overlap))
    source = VideoFolderDataset(args.input, num_frame=net.num_frame, padding=args.padding, allow_gaps=args.allow_gaps)
    (height, width, _), scale = source.shape, net.scale
    compare = {i for i in args.compare if i < len(source)}
    if len(compare) < len(set(args.compare)):
        ignored = ", ".join(map(str, sorted(set(args.compare) - compare)))
        logger.warning("--compare: ignoring %s (the input has frames 0-%d)", ignored, len(source) - 1)
    schedule = WindowSchedule(net.num_frame, args.padding, args.cut_threshold if args.scene_cuts == "auto" else None)
    ground_truth = GroundTruthFolder(args.gt, source.names) if args.gt is not None else None
    settings = restore_settings(args, net, source, device, compare, precision_label(precision))

    sinks: list = []
    try:
        if args.output:
            sinks.append(PngFolderSink(args.output, source.names, settings, args.overwrite, args.resume))
        if args.video:
            sinks.append(video_sink(args, encoding, source, (width * scale, height * scale), settings))
    except BaseException:
        for sink in sinks:
            sink.keep() if sink.resumed else sink.discard()
        raise
    header = {"weights": f"{args.model.name} (sha256 {settings['weights']['sha256'][:12]})",
              "precision": settings["precision"], "input": str(args.input)}
    try:
        summary = restore_clip(source, engine, schedule, device, sinks, batch_size=args.batch,
                               ground_truth=ground_truth, compare=compare,
                               side_files=sinks[0].path if args.output else None,
                               scores_journal=sinks[0].path / "metrics.csv", table_header=header)
    except DataError:
        raise
    except BaseException as error:
        done = min(sink.completed() for sink in sinks)
        kept = " and ".join(str(sink.path) for sink in sinks)
        what = "interrupted" if isinstance(error, KeyboardInterrupt) else "stopped by the error below"
        print(f"{what}: {done} of {len(source)} frames are restored and kept in {kept}; to continue from there, "
              f"run the same command with --resume:\n  {resume_command(args)}", file=sys.stderr, flush=True)
        raise
    return report(args, summary, source, net.scale, encoding, device, settings["precision"])


def resume_command(args: argparse.Namespace) -> str:
    """The command line that continues this run."""
    argv = list(getattr(args, "argv", None) or sys.argv[1:])
    return shlex.join(["python", "test.py", *argv, *([] if "--resume" in argv else ["--resume"])])


def report(args: argparse.Namespace, summary, source: VideoFolderDataset, scale: int,
           encoding: VideoEncoding | None, device: torch.device, precision: str) -> dict:
    """Print the scene cuts, the score table and the final line; returns the summary as a dict."""
    (height, width, _), cuts = source.shape, summary.cuts
    if args.scene_cuts == "auto":
        shown = ", ".join(map(str, cuts[:30])) + (f", ... ({len(cuts) - 30} more)" if len(cuts) > 30 else "")
        print(f"scene cuts: {len(cuts)} found" + (f", at frames {shown} (each starts a new shot)" if cuts else ""))
    if len(summary.scores):
        print(summary.scores.table({"weights": args.model.name, "precision": precision}))
    peak_rss_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    gpu = f", peak GPU memory {torch.cuda.max_memory_allocated() / 2**20:.0f} MiB" if device.type == "cuda" else ""
    resumed = f" (continued at frame {summary.start} of {summary.total})" if summary.start else ""
    video = f"; video {encoding.describe()} -> {args.video}" if encoding is not None else ""
    per_frame = summary.seconds / summary.frames if summary.frames else 0.0
    print(f"restored {summary.frames} frames{resumed} of {width}x{height} -> {width * scale}x{height * scale} in "
          f"{summary.seconds:.1f} s ({summary.fps:.3g} frames/s, {per_frame:.3g} s/frame), peak RSS "
          f"{peak_rss_mib:.0f} MiB{gpu}, {precision}{video}", flush=True)
    return {"frames": summary.frames, "start": summary.start, "seconds": summary.seconds, "fps": summary.fps,
            "peak_rss_mib": peak_rss_mib, "precision": precision, "cuts": cuts,
            "codec": encoding.codec if encoding is not None else None,
            "psnr": summary.scores.mean("psnr"), "bicubic_psnr": summary.scores.mean("bicubic_psnr")}


if __name__ == "__main__":
    sys.exit(cli.run(main))
