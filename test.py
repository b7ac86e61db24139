"""Evaluate a network on test sets, or restore your own frames or video.

    python test.py -opt options/test/reds4.yml [--set path.pretrain_network_g=W.pth] [--bicubic]
    python test.py --model W.pth --input frames_or_video --output OUT [--video out.mp4] [--tile 256]

Evaluation (``-opt``):
The weights (``path.pretrain_network_g``; ours or BasicSR's) are loaded into the
network of the option file; every set of ``datasets.test`` is restored frame by frame
(sliding temporal window) and measured as configured in ``val.metrics``. Results go
to ``<results_root>/<name>/<set>.{csv,md}`` (and restored frames with ``val.save_img``).
``--bicubic`` adds the same table for MATLAB-bicubic upsampling of the centre frames,
the baseline every restoration result is compared with.

Restoration (``--input``): every frame of a folder of images or a video file is restored
with a sliding window (see ``models/inference.py``); the architecture comes from ``--opt``,
else from the weights file (ours record it; BasicSR's are read off their shapes). Outputs
appear only when complete (written under a ``.partial`` name, then renamed).
"""

from __future__ import annotations

import os

# Transparent huge pages for CPU tensors of 2 MiB and more (PyTorch reads this once, when torch
# is imported): fewer page faults for the activations restoration maps and unmaps (see
# models.inference.release_freed_activations).
os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")

import argparse
import contextlib
import logging
import resource
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch
from torch import Tensor, nn
from tqdm import tqdm

import options
from data import DATASETS
from data.storage import DataError
from data.resize import imresize, imresize_torch
from data.video_folder import IMAGE_EXTENSIONS, VideoFolderDataset
from metrics import psnr, ssim
from models.checkpoint import CheckpointError, atomic_write, load_network, read_checkpoint
from models.edvr import edvr_config_from_state_dict
from models.evaluation import EvalResult, evaluate, write_png
from models.inference import Tiling, prepare_for_inference, release_freed_activations, restore_sequence
from models.outputs import (OutputError, OutputFolder, check_location, check_output_file, check_replaceable,
                            partial_file)
from options import cli
from options.schema import NETWORKS

logger = logging.getLogger("test")


class BicubicUpsampler(nn.Module):
    """Baseline: MATLAB-bicubic x``scale`` of the centre frame, (B, T, C, h, w) -> (B, C, sh, sw)."""

    def __init__(self, center_frame_idx: int, scale: int = 4):
        super().__init__()
        self.center_frame_idx, self.scale = center_frame_idx, scale

    def forward(self, x: Tensor) -> Tensor:
        return imresize_torch(x[:, self.center_frame_idx].double(), scale=self.scale).float()


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
    net = opts.network.build(NETWORKS)
    load_network(net, opts.path.pretrain_network_g, opts.path.param_key_g, opts.path.strict_load_g)
    net = prepare_for_inference(net, device)
    scale, multiple = (1, 16) if getattr(net, "hr_in", False) else (4, 4)
    candidates = [(opts.network.type, net, multiple)]
    if bicubic:  # any frame size: no padding
        candidates.append(("bicubic", BicubicUpsampler(net.center_frame_idx, scale), 1))

    out_dir = Path(opts.path.results_root) / opts.name
    check_location(out_dir, [Path(opts.path.pretrain_network_g)], what="path.results_root / name")
    out_dir.mkdir(parents=True, exist_ok=True)
    results = []
    for number, test in enumerate(opts.datasets.test):
        dataset = test.dataset.build(DATASETS)
        for label, model, size_multiple in candidates:
            with contextlib.ExitStack() as stack:
                # restored frames: an earlier run's folder is replaced only once this one is complete
                images = (stack.enter_context(OutputFolder(out_dir / test.name / label, overwrite=True))
                          if opts.val.save_img else None)
                result = evaluate(model, dataset, test.name, opts.val.metrics, device, scale=scale,
                                  multiple=size_multiple, num_workers=test.num_worker,
                                  save_dir=images.path if images else None)
                if not result.clips:
                    raise options.OptionsError(opts.name, f"datasets.test[{number}].dataset.dataroot_gt",
                                               f"{test.name} has no ground truth to measure against")
                if images is not None:
                    images.commit()
            stem = out_dir / f"{test.name}_{label}"
            table = f"## {test.name}: {label}\n\n{result.table()}\n"
            write_csv_atomically(result, stem.with_suffix(".csv"))
            atomic_write(stem.with_suffix(".md"), lambda handle: handle.write(table.encode()))
            print(f"\n{table}", flush=True)
            results.append(result)
        if bicubic:
            for metric in results[-1].metric_names:
                gain = results[-2].mean(metric) - results[-1].mean(metric)
                print(f"{test.name}: {opts.network.type} {metric} {results[-2].mean(metric):.4f} vs bicubic "
                      f"{results[-1].mean(metric):.4f} (gain {gain:+.4f})", flush=True)
    logger.info("results written to %s", out_dir)
    return results



def write_csv_atomically(result: EvalResult, path: Path) -> None:
    """``result.write_csv`` under a temporary name, renamed when complete."""
    tmp = partial_file(path)
    try:
        result.write_csv(tmp)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


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
    group.add_argument("--model", type=Path, help="weights: ours or BasicSR's (params / params_ema)")
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
    precision = group.add_mutually_exclusive_group()
    precision.add_argument("--half", action="store_true", help="float16 autocast (GPU)")
    precision.add_argument("--bf16", action="store_true", help="bfloat16 autocast")
    group.add_argument("--overwrite", action="store_true",
                       help="replace an earlier result of ours in --output / the --video file (nothing else "
                            "is ever deleted)")


def build_restore_network(args: argparse.Namespace) -> nn.Module:
    """The architecture from --opt, else from the weights' metadata, else read off the weights."""
    if args.opt:
        spec = options.load(args.opt, args.set).network
        network_type, kwargs = spec.type, spec.kwargs
    else:
        checkpoint = read_checkpoint(args.model)
        if isinstance(checkpoint, dict) and isinstance(checkpoint.get("network"), dict):
            kwargs = dict(checkpoint["network"])
            network_type = kwargs.pop("type", "EDVR")
        else:
            state = checkpoint.get("params_ema") or checkpoint.get("params") or checkpoint
            try:
                kwargs = edvr_config_from_state_dict(state)
            except (ValueError, AttributeError) as error:
                raise CheckpointError(f"{args.model}: cannot tell the architecture from the weights ({error}); "
                                      "pass --opt with a network section") from error
            network_type = "EDVR"
            logger.info("architecture read off the weights: %s", kwargs)
    if network_type not in NETWORKS:
        raise CheckpointError(f"{args.model}: unknown network type {network_type!r}")
    net = NETWORKS[network_type](**kwargs)
    load_network(net, args.model, key="auto", strict=True)
    return net


VIDEO_FOURCC = {".mp4": "mp4v", ".m4v": "mp4v", ".mov": "mp4v", ".avi": "MJPG", ".mkv": "XVID"}


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


def open_video_writer(path: Path, fps: float, size: tuple[int, int]) -> cv2.VideoWriter:
    fourcc = VIDEO_FOURCC[path.suffix.lower()]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, size)
    if not writer.isOpened():
        raise OutputError(f"{path}: OpenCV cannot encode {fourcc} into {path.suffix} on this machine")
    return writer


def side_by_side(panels: list[np.ndarray], labels: list[str]) -> np.ndarray:
    """Panels of equal size next to each other, each labelled in its top-left corner (RGB)."""
    labelled = []
    for panel, label in zip(panels, labels):
        panel = np.ascontiguousarray(panel)
        cv2.putText(panel, label, (8, 24), cv2.FONT_HERSHEY_SIMPLEX, 0.7, (255, 255, 255), 2, cv2.LINE_AA)
        labelled.append(panel)
    return np.concatenate(labelled, axis=1)


def video_fps(path: Path) -> float:
    """Frames per second recorded in a video file (25 when the container does not say)."""
    capture = cv2.VideoCapture(str(path))
    fps = capture.get(cv2.CAP_PROP_FPS)
    capture.release()
    return fps if fps and np.isfinite(fps) and 0 < fps <= 1000 else 25.0


def read_gt(folder: Path, name: str) -> np.ndarray:
    for suffix in IMAGE_EXTENSIONS:
        if (folder / f"{name}{suffix}").is_file():
            bgr = cv2.imread(str(folder / f"{name}{suffix}"), cv2.IMREAD_COLOR)
            if bgr is None:
                raise DataError(f"{folder / (name + suffix)}: not a readable image")
            return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    raise DataError(f"--gt {folder}: no ground-truth frame named {name}.* ({', '.join(IMAGE_EXTENSIONS)})")


def restore(args: argparse.Namespace) -> dict:
    """Restore every frame of --input; returns a summary (frames, seconds, fps, peak memory, metrics)."""
    check_restore_arguments(args)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    amp_dtype = torch.float16 if args.half else torch.bfloat16 if args.bf16 else None
    release_freed_activations()
    net = prepare_for_inference(build_restore_network(args), device)
    scale = 1 if net.hr_in else 4
    multiple = 16 if net.hr_in else 4
    if args.tile is not None and (args.tile % multiple or args.tile_overlap % multiple):
        raise cli.UsageError(f"--tile {args.tile} and --tile-overlap {args.tile_overlap} must be multiples of "
                             f"{multiple} for this network")
    source = VideoFolderDataset(args.input, num_frame=net.num_frame, padding=args.padding)
    count, (height, width, _) = len(source), source.shape
    compare = {i for i in args.compare if i < count}
    if len(compare) < len(set(args.compare)):
        ignored = sorted(set(args.compare) - compare)
        logger.warning("--compare: ignoring %s (the input has frames 0-%d)", ", ".join(map(str, ignored)), count - 1)
    fps = args.fps or (video_fps(args.input) if source.video is not None else 25.0)

    with contextlib.ExitStack() as stack:
        folder = stack.enter_context(OutputFolder(args.output, args.overwrite)) if args.output else None
        video_tmp = partial_file(args.video) if args.video else None
        writer = None
        if video_tmp is not None:
            stack.callback(video_tmp.unlink, missing_ok=True)  # a no-op once renamed into place
            writer = open_video_writer(video_tmp, fps, (width * scale, height * scale))
            stack.callback(writer.release)
        metrics: dict[str, list[float]] = {"psnr": [], "ssim": [], "bicubic_psnr": [], "bicubic_ssim": []}
        start = time.perf_counter()
        frames = restore_sequence(
            net, source.read_frame, count, net.num_frame, device, padding=args.padding,
            tiling=Tiling(args.tile, args.tile_overlap), scale=scale, multiple=multiple,
            scene_cut_threshold=args.cut_threshold if args.scene_cuts == "auto" else None,
            batch_size=args.batch, amp_dtype=amp_dtype)
        for index, lq, restored in tqdm(frames, total=count, unit="frame", desc=f"restore {source.clip}"):
            name = source.names[index]
            if folder is not None:
                write_png(folder.path / f"{name}.png", restored)
            if writer is not None:
                writer.write(cv2.cvtColor(restored, cv2.COLOR_RGB2BGR))
            gt = read_gt(args.gt, name) if args.gt is not None else None
            if gt is not None and gt.shape != restored.shape:
                raise DataError(f"--gt {args.gt}/{name}: ground truth is {gt.shape[1]}x{gt.shape[0]}, "
                                f"the restored frame {restored.shape[1]}x{restored.shape[0]}")
            bicubic = None
            if gt is not None or index in compare:  # the baseline: MATLAB bicubic (the input itself for hr_in)
                bicubic = imresize(lq, scale) if scale != 1 else lq
            if gt is not None:
                metrics["psnr"].append(psnr(restored, gt))
                metrics["ssim"].append(ssim(restored, gt))
                metrics["bicubic_psnr"].append(psnr(bicubic, gt))
                metrics["bicubic_ssim"].append(ssim(bicubic, gt))
            if index in compare:
                panels, labels = [bicubic, restored], ["bicubic", type(net).__name__]
                if gt is not None:
                    panels, labels = panels + [gt], labels + ["GT"]
                (folder.path / "compare").mkdir(exist_ok=True)
                write_png(folder.path / "compare" / f"{name}.png", side_by_side(panels, labels))
        seconds = time.perf_counter() - start

        if metrics["psnr"]:
            mean = {key: float(np.mean(values)) for key, values in metrics.items()}
            table = (f"| frames | PSNR | SSIM | bicubic PSNR | bicubic SSIM |\n|---|---|---|---|---|\n"
                     f"| {len(metrics['psnr'])} | {mean['psnr']:.2f} | {mean['ssim']:.4f} | {mean['bicubic_psnr']:.2f} | "
                     f"{mean['bicubic_ssim']:.4f} |")
            print(table)
            if folder is not None:
                (folder.path / "metrics.md").write_text(table + "\n")
        if writer is not None:
            writer.release()
            video_tmp.replace(args.video)
        if folder is not None:  # only now does the output folder appear, complete
            folder.commit()
    peak_rss_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    summary = {"frames": count, "seconds": seconds, "fps": count / seconds, "peak_rss_mib": peak_rss_mib,
               "psnr": float(np.mean(metrics["psnr"])) if metrics["psnr"] else None,
               "bicubic_psnr": float(np.mean(metrics["bicubic_psnr"])) if metrics["bicubic_psnr"] else None}
    gpu = f", peak GPU memory {torch.cuda.max_memory_allocated() / 2**20:.0f} MiB" if device.type == "cuda" else ""
    print(f"restored {count} frames of {width}x{height} -> {width * scale}x{height * scale} in {seconds:.1f} s "
          f"({summary['fps']:.3g} frames/s, {seconds / count:.3g} s/frame), peak RSS {peak_rss_mib:.0f} MiB{gpu}",
          flush=True)
    return summary


if __name__ == "__main__":
    sys.exit(cli.run(main))
