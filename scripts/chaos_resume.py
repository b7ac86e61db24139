"""Kill -9 a CPU training at random moments, resume it each time, compare with an uninterrupted run.

    python scripts/chaos_resume.py [--kills 20] [--iters 60] [--seed 0] [--workdir DIR]

A tiny EDVR is trained on demo clips (made from real footage) with a checkpoint at every
iteration, so kills land in every phase: start-up, data loading, the step, and the middle
of writing weights or training states. After each SIGKILL the run is restarted with
``--auto-resume``; at the end its weights (``params`` and ``params_ema``) must be
bit-identical to those of a run that was never interrupted. Exit status 1 otherwise.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script from anywhere

import torch  # noqa: E402

from options import cli  # noqa: E402
from scripts.make_demo_data import make_demo_data  # noqa: E402

# The bit-identical guarantee is for CPU training: hide GPUs from the trainings.
CPU_ONLY = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}


def write_options(path: Path, data: Path, experiments: Path, iters: int) -> Path:
    """A tiny EDVR recipe on the demo clips, a checkpoint at every iteration, no validation."""
    path.write_text(f"""
name: chaos
manual_seed: 3
network: {{type: EDVR, num_feat: 8, deformable_groups: 2, num_extract_block: 1, num_reconstruct_block: 1,
          with_tsa: true}}
datasets:
  train:
    dataset: {{type: REDSDataset, dataroot_gt: {data / 'train_sharp'}, dataroot_lq: {data / 'train_sharp_bicubic/X4'},
              meta_info_file: {data / 'meta_info_demo_train_GT.txt'}, val_partition: null, gt_size: 32}}
    batch_size_per_gpu: 2
    num_worker_per_gpu: 1
train:
  total_iter: {iters}
  scheduler: {{periods: [{iters}], restart_weights: [1], eta_min: 1.0e-6}}
  optim: {{lr: 1.0e-3}}
  tsa_iter: {iters // 3}
  ema_decay: 0.9
logger: {{print_freq: 1, save_checkpoint_freq: 1, use_tb_logger: false}}
path: {{experiments_root: {experiments}}}
""")
    return path


def train_command(options_path: Path) -> list[str]:
    return [sys.executable, str(ROOT / "train.py"), "-opt", str(options_path), "--auto-resume"]


def final_weights(experiments: Path, iters: int) -> dict:
    return torch.load(experiments / "chaos" / "models" / f"net_g_{iters}.pth", weights_only=True)


def run_chaos(kills: int, iters: int, seed: int, workdir: Path, log=print) -> bool:
    """Returns True when the resumed run's final weights equal the uninterrupted run's."""
    rng = random.Random(seed)
    data = workdir / "demo"
    if not data.exists():
        make_demo_data(data, max_frames=6, progress=False)

    reference_opts = write_options(workdir / "reference.yml", data, workdir / "reference", iters)
    start = time.perf_counter()
    subprocess.run(train_command(reference_opts), cwd=ROOT, env=CPU_ONLY, check=True, capture_output=True)
    duration = time.perf_counter() - start
    per_iteration = _seconds_per_iteration(workdir / "reference" / "chaos" / "logs" / "train.log")
    log(f"uninterrupted run: {iters} iterations in {duration:.1f} s ({per_iteration:.2f} s per iteration)")

    chaos_opts = write_options(workdir / "chaos.yml", data, workdir / "chaos", iters)
    chaos_log = workdir / "chaos" / "chaos" / "logs" / "train.log"
    done_kills = 0
    while done_kills < kills:
        done = _newest_state(workdir / "chaos" / "chaos")
        if done >= iters - 1:
            log(f"  only iteration {iters} is left after {done_kills} kills (raise --iters for more)")
            break
        # Kill a little after a chosen iteration is logged: inside the next step or inside the
        # checkpoint being written (one per iteration), spreading the kills over the whole run.
        target = min(iters - 1, done + rng.randint(1, max(1, iters // kills)))
        extra = rng.uniform(0.0, 1.5 * per_iteration)
        offset = chaos_log.stat().st_size if chaos_log.exists() else 0
        process = subprocess.Popen(train_command(chaos_opts), cwd=ROOT, env=CPU_ONLY, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL)
        while process.poll() is None and f"iter {target}/" not in _read_from(chaos_log, offset):
            time.sleep(0.02)
        if process.poll() is not None:
            log(f"  the run ended before iteration {target} was logged (exit {process.returncode})")
            continue
        time.sleep(extra)
        process.send_signal(signal.SIGKILL)
        process.wait()
        done_kills += 1
        log(f"  kill {done_kills}/{kills}: {extra:.2f} s after iteration {target}; newest training state: "
            f"{_newest_state(workdir / 'chaos' / 'chaos')}")
    result = subprocess.run(train_command(chaos_opts), cwd=ROOT, env=CPU_ONLY, capture_output=True, text=True)
    if result.returncode != 0:
        log(result.stdout[-2000:] + result.stderr[-2000:])
        return False

    expected, resumed = final_weights(workdir / "reference", iters), final_weights(workdir / "chaos", iters)
    identical = all(
        expected[key].keys() == resumed[key].keys()
        and all(torch.equal(expected[key][name], resumed[key][name]) for name in expected[key])
        for key in ("params", "params_ema")
    )
    log(f"{done_kills} kills: final weights {'bit-identical' if identical else 'DIFFER'} to the uninterrupted run")
    return identical


def _newest_state(experiment: Path) -> int:
    return max((int(p.stem) for p in experiment.glob("training_states/*.state")), default=0)


def _read_from(path: Path, offset: int) -> str:
    """What was appended to ``path`` after ``offset`` (the log grows across restarts)."""
    if not path.exists():
        return ""
    with open(path, "rb") as handle:
        handle.seek(offset)
        return handle.read().decode(errors="replace")


def _seconds_per_iteration(log_path: Path) -> float:
    """Mean time between consecutive 'iter' lines of a train.log."""
    stamps = [datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f")
              for line in log_path.read_text().splitlines() if "] train: iter " in line]
    if len(stamps) < 2:
        return 1.0
    return (stamps[-1] - stamps[0]).total_seconds() / (len(stamps) - 1)


def main(argv: list[str] | None = None) -> int:
    parser = cli.ArgumentParser(description=__doc__)
    parser.add_argument("--kills", type=cli.positive_int, default=20, help="SIGKILLs spread over the run")
    parser.add_argument("--iters", type=cli.positive_int, default=60, help="training iterations (one checkpoint each)")
    parser.add_argument("--seed", type=cli.non_negative_int, default=0, help="seed of the kill times")
    parser.add_argument("--workdir", type=Path, help="keep the runs here (default: a temporary folder)")
    args = parser.parse_args(argv)
    if args.workdir is not None:
        args.workdir.mkdir(parents=True, exist_ok=True)
        ok = run_chaos(args.kills, args.iters, args.seed, args.workdir)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            ok = run_chaos(args.kills, args.iters, args.seed, Path(tmp))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(cli.run(main))
