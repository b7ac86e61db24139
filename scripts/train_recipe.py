"""The whole EDVR recipe on REDS or Vimeo-90K: prepare -> (LMDB) -> train -> evaluate.

    python scripts/train_recipe.py reds datasets/REDS --gpus 8 [--model L] [--lmdb] [--dry-run]
    python scripts/train_recipe.py vimeo90k datasets/vimeo90k/vimeo_septuplet --gpus 8 [--vid4 datasets/Vid4]

(``scripts/train_reds.sh`` and ``scripts/train_vimeo90k.sh`` call this.)

REDS: prepare_reds.py -> stage 1, EDVR without TSA -> stage 2, EDVR with TSA initialised
from stage 1 (the first tsa_iter iterations train only the fusion) -> REDS4 evaluation.
Vimeo-90K: prepare_vimeo90k.py (LR made where missing) -> EDVR-L, 7 frames ->
Vimeo-90K-T evaluation, and Vid4 when ``--vid4`` is given.

Idempotent and resumable: a finished step is skipped (its output exists), an interrupted
training resumes (``--auto-resume``). ``--dry-run`` prints every command. ``--set K=V``
overrides an option of every stage, ``--train-set K=V`` of the training stages only.
Training runs through ``torchrun --standalone`` when ``--gpus`` > 1, else as one process.
A failed step ends the recipe with that step's exit status (2: the step reported a user error).
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script from anywhere

import options  # noqa: E402
from options.cli import ArgumentParser, positive_int, run  # noqa: E402


@dataclass
class Step:
    name: str
    command: list[str]
    output: Path | None  # the step is done when this exists


def training_step(name: str, preset: str, overrides: list[str], gpus: int) -> tuple[Step, Path]:
    """A training stage and the final weights file it produces."""
    opts = options.load(ROOT / preset, overrides)
    final = Path(opts.path.experiments_root) / opts.name / "models" / f"net_g_{opts.train.total_iter}.pth"
    launcher = (["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={gpus}"] if gpus > 1 else [])
    command = [*launcher, "train.py", "-opt", preset, "--auto-resume", *_sets(overrides)]
    return Step(name, command, final), final


def evaluation_step(name: str, preset: str, overrides: list[str]) -> Step:
    opts = options.load(ROOT / preset, overrides)
    table = Path(opts.path.results_root) / opts.name / f"{opts.datasets.test[0].name}_{opts.network.type}.csv"
    return Step(name, ["test.py", "-opt", preset, *_sets(overrides)], table)


def reds_steps(root: Path, args: argparse.Namespace) -> list[Step]:
    size = args.model.lower()
    meta = root / "meta_info"
    steps = [Step("prepare REDS", ["scripts/prepare_reds.py", str(root)], meta / "meta_info_REDS_GT.txt")]
    gt, lq = root / "train_sharp", root / "train_sharp_bicubic" / "X4"
    if args.lmdb:
        gt_lmdb, lq_lmdb = root / "train_sharp_with_val.lmdb", root / "train_sharp_bicubic_with_val.lmdb"
        steps += [Step("LMDB of GT", ["scripts/create_lmdb.py", str(gt), str(gt_lmdb)], gt_lmdb),
                  Step("LMDB of LR", ["scripts/create_lmdb.py", str(lq), str(lq_lmdb)], lq_lmdb)]
        train_gt, train_lq = gt_lmdb, lq_lmdb
    else:
        train_gt, train_lq = gt, lq
    data = [f"datasets.train.dataset.dataroot_gt={train_gt}", f"datasets.train.dataset.dataroot_lq={train_lq}",
            f"datasets.train.dataset.meta_info_file={meta / 'meta_info_REDS_GT.txt'}",
            f"datasets.val.0.dataset.dataroot_gt={gt}", f"datasets.val.0.dataset.dataroot_lq={lq}",
            f"datasets.val.0.dataset.meta_info_file={meta / 'meta_info_REDS4_test_GT.txt'}"]
    train_sets = args.set + data + args.train_set
    stage1, stage1_weights = training_step("stage 1 (without TSA)", f"options/train/edvr_{size}_wotsa_reds.yml",
                                           train_sets, args.gpus)
    stage2, stage2_weights = training_step("stage 2 (TSA, from stage 1)", f"options/train/edvr_{size}_reds.yml",
                                           train_sets + [f"path.pretrain_network_g={stage1_weights}"], args.gpus)
    test_sets = [f"datasets.test.0.dataset.dataroot_gt={gt}", f"datasets.test.0.dataset.dataroot_lq={lq}",
                 f"datasets.test.0.dataset.meta_info_file={meta / 'meta_info_REDS4_test_GT.txt'}",
                 f"path.pretrain_network_g={stage2_weights}", f"name=EDVR_{args.model.upper()}_x4_SR_REDS4"]
    if size == "l":
        test_sets += ["network.num_feat=128", "network.num_reconstruct_block=40"]
    return steps + [stage1, stage2, evaluation_step("REDS4 evaluation", "options/test/reds4.yml",
                                                    args.set + test_sets)]


def vimeo_steps(root: Path, args: argparse.Namespace) -> list[Step]:
    lr_root = root.parent / "vimeo_septuplet_matlabLRx4" / "sequences"
    steps = [Step("prepare Vimeo-90K (meta info, missing LR frames)",
                  ["scripts/prepare_vimeo90k.py", str(root), "--lr-root", str(lr_root)],
                  root / "meta_info_Vimeo90K_test_GT.txt")]
    gt = root / "sequences"
    train_gt, train_lq = gt, lr_root
    if args.lmdb:
        gt_lmdb = root.parent / "vimeo90k_train_GT_only4th.lmdb"
        lq_lmdb = root.parent / "vimeo90k_train_LR7frames.lmdb"
        trainlist = str(root / "sep_trainlist.txt")
        steps += [Step("LMDB of GT (im4)", ["scripts/create_lmdb.py", str(gt), str(gt_lmdb), "--septuplet-list",
                                           trainlist, "--center-only"], gt_lmdb),
                  Step("LMDB of LR", ["scripts/create_lmdb.py", str(lr_root), str(lq_lmdb), "--septuplet-list",
                                      trainlist], lq_lmdb)]
        train_gt, train_lq = gt_lmdb, lq_lmdb
    data = [f"datasets.train.dataset.dataroot_gt={train_gt}", f"datasets.train.dataset.dataroot_lq={train_lq}",
            f"datasets.train.dataset.meta_info_file={root / 'meta_info_Vimeo90K_train_GT.txt'}"]
    if args.vid4:
        data += [f"datasets.val.0.dataset.dataroot_gt={args.vid4 / 'GT'}",
                 f"datasets.val.0.dataset.dataroot_lq={args.vid4 / 'BIx4'}"]
    else:
        data += ["datasets.val=[]"]
    train, weights = training_step("EDVR-L on Vimeo-90K", "options/train/edvr_l_vimeo90k.yml",
                                   args.set + data + args.train_set, args.gpus)
    steps.append(train)
    steps.append(evaluation_step("Vimeo-90K-T evaluation", "options/test/vimeo90k_t.yml", args.set + [
        f"datasets.test.0.dataset.dataroot_gt={gt}", f"datasets.test.0.dataset.dataroot_lq={lr_root}",
        f"datasets.test.0.dataset.meta_info_file={root / 'sep_testlist.txt'}", f"path.pretrain_network_g={weights}"]))
    if args.vid4:
        steps.append(evaluation_step("Vid4 evaluation", "options/test/vid4.yml", args.set + [
            f"datasets.test.0.dataset.dataroot_gt={args.vid4 / 'GT'}",
            f"datasets.test.0.dataset.dataroot_lq={args.vid4 / 'BIx4'}", f"path.pretrain_network_g={weights}"]))
    return steps


def _sets(overrides: list[str]) -> list[str]:
    return [arg for override in overrides for arg in ("--set", override)]


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(description=__doc__)
    parser.add_argument("dataset", choices=["reds", "vimeo90k"], help="which recipe")
    parser.add_argument("root", type=Path, help="REDS: the extracted archives; Vimeo-90K: vimeo_septuplet/")
    parser.add_argument("--gpus", type=positive_int, default=1, help="processes (GPUs) per training stage")
    parser.add_argument("--model", choices=["M", "L"], default="M", help="REDS: EDVR-M or EDVR-L")
    parser.add_argument("--lmdb", action="store_true", help="train from LMDBs (created if missing)")
    parser.add_argument("--vid4", type=Path, help="Vimeo-90K: Vid4 root (GT/, BIx4/) to validate and test on")
    parser.add_argument("--set", action="append", default=[], metavar="K=V", help="override for every stage")
    parser.add_argument("--train-set", action="append", default=[], metavar="K=V",
                        help="override for the training stages only")
    parser.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
    args = parser.parse_args(argv)
    if not args.root.is_dir():
        raise FileNotFoundError(f"{args.root}: no such folder")

    steps = reds_steps(args.root, args) if args.dataset == "reds" else vimeo_steps(args.root, args)
    for number, step in enumerate(steps, 1):
        done = step.output is not None and step.output.exists()
        command = [sys.executable, *step.command]
        shown = shlex.join(["python", *step.command])
        print(f"[{number}/{len(steps)}] {step.name}{' (done: skipped)' if done else ''}\n  $ {shown}", flush=True)
        if done or args.dry_run:
            continue
        result = subprocess.run(command, cwd=ROOT)
        if result.returncode != 0:
            print(f"error: step {number} ({step.name}) failed with exit status {result.returncode}; "
                  "fix the cause and re-run the same command: finished steps are skipped and training resumes",
                  file=sys.stderr, flush=True)
            return result.returncode
    return 0


if __name__ == "__main__":
    sys.exit(run(main))
