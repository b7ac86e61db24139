"""Evaluate a network on test sets: PSNR/SSIM per clip and their mean, as tables and CSV.

    python test.py -opt options/test/reds4.yml [--set path.pretrain_network_g=W.pth] [--bicubic]

The weights (``path.pretrain_network_g``; ours or BasicSR's) are loaded into the
network of the option file; every set of ``datasets.test`` is restored frame by frame
(sliding temporal window) and measured as configured in ``val.metrics``. Results go
to ``<results_root>/<name>/<set>.{csv,md}`` (and restored frames with ``val.save_img``).
``--bicubic`` adds the same table for MATLAB-bicubic upsampling of the centre frames,
the baseline every restoration result is compared with.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import torch
from torch import Tensor, nn

import options
from data import DATASETS
from data.resize import imresize_torch
from models.checkpoint import load_network
from models.evaluation import EvalResult, evaluate
from options.schema import NETWORKS

logger = logging.getLogger("test")


class BicubicUpsampler(nn.Module):
    """Baseline: MATLAB-bicubic x``scale`` of the centre frame, (B, T, C, h, w) -> (B, C, sh, sw)."""

    def __init__(self, center_frame_idx: int, scale: int = 4):
        super().__init__()
        self.center_frame_idx, self.scale = center_frame_idx, scale

    def forward(self, x: Tensor) -> Tensor:
        return imresize_torch(x[:, self.center_frame_idx].double(), scale=self.scale).float()


def main(argv: list[str] | None = None) -> list[EvalResult]:
    parser = argparse.ArgumentParser(description="Evaluate a network on test sets (PSNR/SSIM).")
    parser.add_argument("-opt", "--opt", required=True, help="option file (YAML)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY.PATH=VALUE",
                        help="override an option, e.g. --set path.pretrain_network_g=W.pth (repeatable)")
    parser.add_argument("--bicubic", action="store_true", help="also report bicubic upsampling of the same frames")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        stream=sys.stdout, force=True)
    opts = options.load(args.opt, args.set)
    return run(opts, bicubic=args.bicubic)


def run(opts: options.Options, bicubic: bool = False) -> list[EvalResult]:
    if not opts.datasets.test:
        raise options.OptionsError(opts.name, "datasets.test", "test.py needs at least one test set")
    if not opts.path.pretrain_network_g:
        raise options.OptionsError(opts.name, "path.pretrain_network_g",
                                   "test.py needs the weights to evaluate (--set path.pretrain_network_g=W.pth)")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    net = opts.network.build(NETWORKS).to(device)
    load_network(net, opts.path.pretrain_network_g, opts.path.param_key_g, opts.path.strict_load_g)
    scale = 1 if getattr(net, "hr_in", False) else 4
    candidates = [(opts.network.type, net)]
    if bicubic:
        candidates.append(("bicubic", BicubicUpsampler(net.center_frame_idx, scale)))

    out_dir = Path(opts.path.results_root) / opts.name
    out_dir.mkdir(parents=True, exist_ok=True)
    results = []
    for test in opts.datasets.test:
        dataset = test.dataset.build(DATASETS)
        for label, model in candidates:
            save_dir = out_dir / test.name / label if opts.val.save_img else None
            result = evaluate(model, dataset, test.name, opts.val.metrics, device, scale=scale,
                              num_workers=test.num_worker, save_dir=save_dir)
            if not result.clips:
                raise ValueError(f"datasets.test {test.name}: no ground truth to measure against "
                                 "(set dataroot_gt)")
            stem = out_dir / f"{test.name}_{label}"
            result.write_csv(stem.with_suffix(".csv"))
            table = f"## {test.name}: {label}\n\n{result.table()}\n"
            stem.with_suffix(".md").write_text(table)
            print(f"\n{table}", flush=True)
            results.append(result)
        if bicubic:
            for metric in results[-1].metric_names:
                gain = results[-2].mean(metric) - results[-1].mean(metric)
                print(f"{test.name}: {opts.network.type} {metric} {results[-2].mean(metric):.4f} vs bicubic "
                      f"{results[-1].mean(metric):.4f} (gain {gain:+.4f})", flush=True)
    logger.info("results written to %s", out_dir)
    return results


if __name__ == "__main__":
    main()
