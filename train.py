"""Train a video restoration network from an option file.

    python train.py -opt options/train/edvr_m_wotsa_reds.yml [--set train.total_iter=1000] [--auto-resume]
    torchrun --nproc_per_node=8 train.py -opt ...          # DDP (NCCL on GPU, gloo on CPU)

The story, top to bottom: options -> processes and devices -> experiment folder and
logs -> data -> network, trainer and divergence guard -> resume -> the loop (step, guard,
log, validate, checkpoint) -> final checkpoint. Every decision inside the loop is a function
of the iteration number and of the saved state (the guard's included), so a resumed run
continues exactly where the interrupted one was, rollbacks included.
"""

from __future__ import annotations

import argparse
import logging
import os
import random
import re
import sys
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader

import options
from data.sampling import SeededDataset, SeededSampler
from models.checkpoint import (CheckpointError, atomic_link, atomic_torch_save, atomic_write, load_network,
                               save_network)
from models.evaluation import evaluate
from models.guard import DivergenceGuard, Rollback, TrainingDiverged
from models.restoration import Engine
from models.trainer import StepStats, Trainer
from options import cli

logger = logging.getLogger("train")


@dataclass(frozen=True)
class Processes:
    """This process's place in the job: rank 0 of 1 when not launched by torchrun."""

    rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    opts = options.load(args.opt, args.set)
    procs = setup_processes(args.dist_timeout)
    try:
        train(opts, procs, auto_resume=args.auto_resume)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = cli.ArgumentParser(description=__doc__)
    parser.add_argument("-opt", "--opt", required=True, help="option file (YAML)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY.PATH=VALUE",
                        help="override an option, e.g. --set train.optim.lr=2e-4 (repeatable)")
    parser.add_argument("--auto-resume", action="store_true",
                        help="resume from the latest complete training state of this experiment")
    parser.add_argument("--dist-timeout", type=cli.positive_int, default=600,
                        help="seconds a process waits for the others before the job fails (DDP)")
    return parser.parse_args(argv)


def setup_processes(timeout_s: int) -> Processes:
    """Single process, or one process of a torchrun job (env:// rendezvous)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1:
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        return Processes(0, 1, device)
    local_rank = int(os.environ["LOCAL_RANK"])
    if torch.cuda.is_available():
        if local_rank >= torch.cuda.device_count():
            raise cli.UsageError(
                f"process {local_rank} of this machine has no GPU: {torch.cuda.device_count()} visible. Start one "
                f"process per GPU (torchrun --nproc_per_node={torch.cuda.device_count()}), or train on the CPU "
                f"with CUDA_VISIBLE_DEVICES=''")
        torch.cuda.set_device(local_rank)
        device, backend = torch.device("cuda", local_rank), "nccl"
    else:
        device, backend = torch.device("cpu"), "gloo"
    dist.init_process_group(backend, timeout=timedelta(seconds=timeout_s))
    return Processes(dist.get_rank(), world_size, device)


def train(opts: options.Options, procs: Processes, auto_resume: bool = False) -> Path:
    if opts.train is None:
        raise options.OptionsError(opts.name, "train", "train.py needs a train section")
    if opts.datasets.train is None:
        raise options.OptionsError(opts.name, "datasets.train", "train.py needs a training dataset")
    exp_dir = Path(opts.path.experiments_root) / opts.name
    resuming = bool(opts.path.resume_state) or (auto_resume and bool(training_states(exp_dir)))
    if not resuming:
        refuse_to_train_over(exp_dir)
    setup_logging(exp_dir, procs)
    if resuming:
        check_resume_options(exp_dir, opts)
    seed_everything(opts.manual_seed)

    # ---- data -------------------------------------------------------------------------------
    train_opts = opts.datasets.train
    train_set = train_opts.dataset.build()
    sampler = SeededSampler(len(train_set), opts.manual_seed, procs.world_size, procs.rank)
    batch_size = train_opts.batch_size_per_gpu
    iters_per_epoch = sampler.num_samples // batch_size
    if iters_per_epoch < 1:
        raise options.OptionsError(opts.name, "datasets.train.batch_size_per_gpu",
                                   f"{len(train_set)} samples over {procs.world_size} process(es) do not fill "
                                   f"one batch of {batch_size}")
    loader = DataLoader(SeededDataset(train_set, train_opts.skip_bad_frames), batch_size=batch_size, sampler=sampler, drop_last=True,
                        num_workers=train_opts.num_worker_per_gpu, pin_memory=procs.device.type == "cuda",
                        persistent_workers=False)
    val_sets = [(v.name, v.dataset.build()) for v in opts.datasets.val] if procs.is_main else []
    logger.info("training set: %d samples, %d iterations per epoch, batch %d per process x %d process(es)",
                len(train_set), iters_per_epoch, batch_size, procs.world_size)

    # ---- network and training recipe --------------------------------------------------------
    net = opts.network.build().to(procs.device)
    logger.info("network: %s (%s parameters)", opts.network.type, f"{sum(p.numel() for p in net.parameters()):,}")
    if opts.path.pretrain_network_g:
        load_network(net, opts.path.pretrain_network_g, opts.path.param_key_g, opts.path.strict_load_g)
    trainer = Trainer(net, opts.train, procs.device, distributed=procs.world_size > 1)
    guard = DivergenceGuard(opts.train.guard, opts.train.max_nonfinite_steps, trainer.pack_names,
                            training_patch_size(opts))
    logger.info("%s", guard.describe())

    # ---- resume -------------------------------------------------------------------------------
    if procs.is_main:
        remove_stale_temporaries(exp_dir)
    resumed = resume_training(exp_dir, opts.path.resume_state, auto_resume, trainer, guard)
    start_iter, best = resumed if resumed is not None else (0, {})
    if procs.is_main:  # the options in effect (on a resume: with the changes it applied)
        text = options.dump(opts)
        atomic_write(exp_dir / "options.yml", lambda handle: handle.write(text.encode()))

    tb = open_tensorboard(exp_dir) if opts.logger.use_tb_logger and procs.is_main else None
    total_iter = opts.train.total_iter
    network_spec = options.to_plain(opts.network)
    if resumed is None and guard.enabled:  # the initial weights: the guard's first rollback target
        save_checkpoint(exp_dir, trainer, guard, 0, best, procs, network_spec)

    # ---- the loop -----------------------------------------------------------------------------
    timer = StepTimer()
    iteration = start_iter
    batches = iterate_batches(loader, sampler, iteration, iters_per_epoch, batch_size)
    try:
        while iteration < total_iter:
            iteration += 1
            epoch, batch = next(batches)
            timer.data_ready()
            stats = trainer.train_step(batch, iteration)
            timer.step_done()

            trigger = guard.observe(iteration, stats.health)
            if trigger is not None:  # back to a healthy checkpoint, with lower learning rates
                try:
                    dcn_lr_mul = opts.train.optim.dcn_lr_mul * trainer.dcn_lr_scale  # relative to the others
                    rollback = guard.plan_rollback(trigger, dcn_lr_mul)
                except TrainingDiverged as error:
                    stop_diverged(exp_dir, error, guard, procs, tb)
                    raise
                iteration = roll_back(exp_dir, rollback, trainer, guard, best, procs, tb)
                batches.close()
                batches = iterate_batches(loader, sampler, iteration, iters_per_epoch, batch_size)
                timer.reset()
                timer.restart()
                continue

            if iteration % opts.logger.print_freq == 0 or iteration == total_iter:
                log_progress(iteration, total_iter, epoch, stats, timer, trainer, guard, tb)
            if iteration % opts.val.val_freq == 0 or iteration == total_iter:
                if validate(trainer, val_sets, opts, procs, iteration, best, tb):
                    save_network(checkpoint_path(exp_dir, "best"), trainer.net, trainer.net_ema,
                                 network=network_spec)
            if iteration % opts.logger.save_checkpoint_freq == 0 or iteration == total_iter:
                save_checkpoint(exp_dir, trainer, guard, iteration, best, procs, network_spec)
            timer.restart()  # validation and checkpoints do not count as data or step time
    except KeyboardInterrupt:
        logger.warning("interrupted during iteration %d; continue from the last checkpoint with: "
                       "python train.py -opt ... --auto-resume", iteration + 1)
        raise

    if tb is not None:
        tb.close()
    logger.info("training done: %d iterations; experiment in %s", total_iter, exp_dir)
    return exp_dir


# ---- pieces of the story ----------------------------------------------------------------------


def setup_logging(exp_dir: Path, procs: Processes) -> None:
    """Rank 0 logs to the console and <exp>/logs/train.log; other ranks only warnings."""
    level = logging.INFO if procs.is_main else logging.WARNING
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stdout)]
    if procs.is_main:
        (exp_dir / "logs").mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(exp_dir / "logs" / "train.log"))
    fmt = f"%(asctime)s %(levelname)s [rank {procs.rank}] %(name)s: %(message)s"
    logging.basicConfig(level=level, format=fmt, handlers=handlers, force=True)


def training_states(exp_dir: Path) -> list[Path]:
    """The experiment's training states, newest first."""
    return sorted((p for p in exp_dir.glob("training_states/*.state") if _iteration_of(p) is not None),
                  key=_iteration_of, reverse=True)


def refuse_to_train_over(exp_dir: Path) -> None:
    """A fresh start must not mix its checkpoints into an earlier training's."""
    states, weights = training_states(exp_dir), list(exp_dir.glob("models/*.pth"))
    if states or weights:
        newest = f" (trained to iteration {_iteration_of(states[0])})" if states else ""
        raise cli.UsageError(
            f"{exp_dir}: holds an earlier training of this experiment{newest}; nothing was changed",
            hint="continue it with --auto-resume, or start afresh under another name (--set name=NEW_NAME) "
                 "or after moving the folder away")


# Options a resume cannot honour: they define the network, the optimiser's state, the samples each
# iteration sees, or the experiment itself. Everything else (total_iter, learning rates, schedule,
# loss, logging, validation, workers) is applied from the iteration the resume starts at.
FIXED_ON_RESUME = ("name", "path.experiments_root", "network", "manual_seed", "train.optim.type",
                   "train.ema_decay", "train.amp", "datasets.train.batch_size_per_gpu", "datasets.train.dataset")
# ... but the training data may have moved (or been converted to LMDB)
MOVABLE_ON_RESUME = ("datasets.train.dataset.dataroot_gt", "datasets.train.dataset.dataroot_lq",
                     "datasets.train.dataset.meta_info_file", "datasets.train.dataset.io_backend")


def check_resume_options(exp_dir: Path, opts: options.Options) -> None:
    """Compare the options with the experiment's ``options.yml``: refuse changes a resume cannot
    honour (``FIXED_ON_RESUME``), log the others, which apply from the resumed iteration on."""
    saved_path = exp_dir / "options.yml"
    try:
        saved = options.load(saved_path)
    except options.OptionsError as error:
        logger.warning("cannot compare with the saved options (%s): resuming with the given ones", error)
        return
    changes = _flat_differences(options.to_plain(saved), options.to_plain(opts))
    fixed = [c for c in changes if c[0].startswith(FIXED_ON_RESUME) and not c[0].startswith(MOVABLE_ON_RESUME)]
    if fixed:
        listed = "; ".join(f"{key}: {_short(old)} -> {_short(new)}" for key, old, new in fixed[:5])
        raise cli.UsageError(f"cannot resume {exp_dir} with other {listed} (saved in {saved_path})",
                             hint="a resume keeps these; start a new experiment (--set name=NEW_NAME) to change them")
    for key, old, new in changes:
        logger.info("resume: %s changed from %s to %s (applies from the resumed iteration)", key, _short(old),
                    _short(new))


def _flat_differences(old: object, new: object, prefix: str = "") -> list[tuple[str, object, object]]:
    """[(key.path, old value, new value)] where two plain option trees differ (lists compared whole)."""
    if isinstance(old, dict) and isinstance(new, dict):
        changes = []
        for key in list(old) + [k for k in new if k not in old]:
            path = f"{prefix}.{key}" if prefix else str(key)
            changes += _flat_differences(old.get(key), new.get(key), path)
        return changes
    return [] if old == new else [(prefix, old, new)]


def _short(value: object, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def iterate_batches(loader: DataLoader, sampler: SeededSampler, done_iters: int, iters_per_epoch: int,
                    batch_size: int):
    """Endless (epoch, batch) stream that starts right after ``done_iters`` iterations."""
    epoch, skip = divmod(done_iters, iters_per_epoch)
    while True:
        sampler.set_epoch(epoch, start=skip * batch_size)
        for batch in loader:
            yield epoch, batch
        epoch, skip = epoch + 1, 0


class StepTimer:
    """Seconds per iteration and data-loading seconds, averaged since the last log line."""

    def __init__(self) -> None:
        self.reset()
        self.restart()

    def restart(self) -> None:
        self.mark = time.perf_counter()

    def reset(self) -> None:
        self.data_s = self.step_s = 0.0
        self.count = 0

    def data_ready(self) -> None:
        now = time.perf_counter()
        self.data_s += now - self.mark
        self.mark = now

    def step_done(self) -> None:
        now = time.perf_counter()
        self.step_s += now - self.mark
        self.mark = now
        self.count += 1


def training_patch_size(opts: options.Options) -> int:
    """The side of a training patch in the pixels of EDVR's L1 features, the unit of its DCN
    offsets: gt_size / scale, a quarter of that with hr_in (the network works at 1/4 inside)."""
    data = opts.datasets.train.dataset.kwargs
    patch = data["gt_size"] // data["scale"]
    return patch // 4 if opts.network.kwargs.get("hr_in") else patch


def log_progress(iteration: int, total_iter: int, epoch: int, stats: StepStats, timer: StepTimer,
                 trainer: Trainer, guard: DivergenceGuard, tb) -> None:
    """The progress line, the offset statistics of every DCN pack (this step's, over all ranks)
    and, once the guard has stepped in, its learning-rate scales; the same as TensorBoard scalars."""
    per_iter = (timer.data_s + timer.step_s) / max(timer.count, 1)
    eta = timedelta(seconds=int(per_iter * (total_iter - iteration)))
    largest = max((s.mean_abs for s in stats.offsets), default=None)
    phases = ("" if not stats.fusion_only else " | TSA warm-up: fusion only") + (
        "" if not stats.offsets_frozen else " | offset warm-up: offsets frozen")
    logger.info("iter %d/%d epoch %d lr %.3e loss %.4e | %.3f s/iter (data %.3f s) | eta %s | max mean|offset| %s%s",
                iteration, total_iter, epoch, stats.lr, stats.loss, per_iter, timer.data_s / max(timer.count, 1),
                eta, "n/a" if largest is None else f"{largest:.2f}", phases)
    if stats.offsets:
        logger.info("offsets at iter %d (mean|o| px, max|o| px, mean mask): %s", iteration,
                    ", ".join(f"{name} {s.mean_abs:.2f} {s.max_abs:.1f} {s.mean_mask:.3f}"
                              for name, s in zip(trainer.pack_names, stats.offsets)))
    if guard.rollbacks:
        logger.info("guard: %d rollback(s) so far; learning rates x%g, DCN x%g", guard.rollbacks,
                    trainer.lr_scale, trainer.lr_scale * trainer.dcn_lr_scale)
    if tb is not None:
        tb.add_scalar("train/loss", stats.loss, iteration)
        tb.add_scalar("train/lr", stats.lr, iteration)
        if largest is not None:
            tb.add_scalar("train/max_mean_abs_offset", largest, iteration)
        for name, s in zip(trainer.pack_names, stats.offsets):
            tb.add_scalar(f"offsets/{name}/mean_abs", s.mean_abs, iteration)
            tb.add_scalar(f"offsets/{name}/max_abs", s.max_abs, iteration)
            tb.add_scalar(f"offsets/{name}/mean_mask", s.mean_mask, iteration)
        tb.add_scalar("guard/rollbacks", guard.rollbacks, iteration)
        tb.add_scalar("guard/lr_scale", trainer.lr_scale, iteration)
        tb.add_scalar("guard/dcn_lr_scale", trainer.lr_scale * trainer.dcn_lr_scale, iteration)
    timer.reset()


def validate(trainer: Trainer, val_sets, opts, procs: Processes, iteration: int, best: dict, tb) -> bool:
    """Rank 0 evaluates every validation set (with the EMA weights when EMA is on). Returns
    whether the reference metric (the first metric of the first set) reached a new best, on
    rank 0 (the caller then writes ``net_g_best.pth``)."""
    improved = False
    if procs.is_main and val_sets:
        net = trainer.net_ema if trainer.net_ema is not None else trainer.net
        for name, dataset in val_sets:
            save_dir = (Path(opts.path.experiments_root) / opts.name / "visualization" / f"{iteration}"
                        if opts.val.save_img else None)
            result = evaluate(Engine(net, precision=trainer.amp_dtype), dataset, name, opts.val.metrics,
                              procs.device, save_dir=save_dir, progress=False)
            if tb is not None and result.preview is not None:
                tb.add_image(f"val/{name}", result.preview, iteration)
            for metric in result.metric_names:
                value = result.mean(metric)
                key = f"{name}/{metric}"
                if key not in best or value > best[key]["value"]:
                    best[key] = {"value": value, "iter": iteration}
                    improved = improved or (name, metric) == (val_sets[0][0], result.metric_names[0])
                logger.info("validation %s %s: %.4f (best %.4f @ iter %d)", name, metric, value,
                            best[key]["value"], best[key]["iter"])
                if tb is not None:
                    tb.add_scalar(f"val/{key}", value, iteration)
        if improved:
            logger.info("new best %s %s: writing net_g_best.pth", val_sets[0][0], next(iter(opts.val.metrics)))
    if dist.is_initialized():
        dist.barrier()
    return improved


def save_checkpoint(exp_dir: Path, trainer: Trainer, guard: DivergenceGuard, iteration: int, best: dict,
                    procs: Processes, network_spec: dict) -> None:
    """Weights first, then the training state that refers to them (each written atomically).

    With several processes, the ranks' weights are compared first: rank 0 alone writes
    them, so a silent divergence between ranks would otherwise go unnoticed. Every rank tells
    the guard (a healthy checkpoint becomes a rollback target).
    """
    if procs.world_size > 1:
        check_ranks_agree(trainer, procs)
    unhealthy = guard.checkpoint_written(iteration)
    if procs.is_main:
        weights = checkpoint_path(exp_dir, iteration)
        try:
            save_network(weights, trainer.net, trainer.net_ema, network=network_spec)
            atomic_link(weights, checkpoint_path(exp_dir, "latest"))
            write_training_state(exp_dir, iteration, trainer, guard, best)
        except OSError as error:
            raise CheckpointError(
                f"cannot write the checkpoint of iteration {iteration} ({error.strerror or error}): "
                f"{weights} / {training_state_path(exp_dir, iteration)} were not written (no partial file is "
                "left) and the previous checkpoints are intact; free space and re-run with --auto-resume"
            ) from error
        logger.info("saved checkpoint at iteration %d%s", iteration,
                    f" (not a rollback target: {unhealthy})" if unhealthy and guard.enabled else "")
    if dist.is_initialized():
        dist.barrier()


def write_training_state(exp_dir: Path, iteration: int, trainer: Trainer, guard: DivergenceGuard,
                         best: dict) -> None:
    """``training_states/<iteration>.state``: what a resume needs besides the weights file."""
    state = {"iteration": iteration, "best": best, "trainer": trainer.state_dict(), "rng": rng_states(),
             "guard": guard.state_dict()}
    atomic_torch_save(state, training_state_path(exp_dir, iteration))


def training_state_path(exp_dir: Path, iteration: int) -> Path:
    return exp_dir / "training_states" / f"{iteration}.state"


def roll_back(exp_dir: Path, rollback: Rollback, trainer: Trainer, guard: DivergenceGuard, best: dict,
              procs: Processes, tb) -> int:
    """Carry out the guard's rollback on every rank: restore the healthy checkpoint
    ``rollback.target`` (weights, EMA, optimiser, generators), lower the learning rates, and make
    it the experiment's newest training state, with the rollback recorded (the abandoned later
    checkpoints go to ``rolled_back/<n>/``), so that a run killed from now on resumes from here.
    Returns the target iteration: the loop goes on with the one after it."""
    target, trigger = rollback.target, rollback.trigger
    scales = trainer.lr_scale, trainer.dcn_lr_scale
    _, _, target_guard = load_training_state(training_state_path(exp_dir, target), exp_dir, trainer)
    trainer.lr_scale, trainer.dcn_lr_scale = scales  # the run's scales, not the target's
    trainer.scale_learning_rates(rollback.lr_factor, rollback.dcn_lr_factor)
    guard.rewind(target_guard)
    logger.warning("guard: %s at iteration %d: %s; rollback %d/%d to the healthy checkpoint of iteration %d, "
                   "learning rates now x%g, DCN x%g", trigger.cause, trigger.iteration, trigger.detail,
                   guard.rollbacks, guard.opts.max_rollbacks, target, trainer.lr_scale,
                   trainer.lr_scale * trainer.dcn_lr_scale)
    if dist.is_initialized():
        dist.barrier()  # every rank has read the target before rank 0 rewrites it
    if procs.is_main:
        set_aside_later_checkpoints(exp_dir, target, str(guard.rollbacks))
        write_training_state(exp_dir, target, trainer, guard, best)
        atomic_link(checkpoint_path(exp_dir, target), checkpoint_path(exp_dir, "latest"))
        if tb is not None:
            tb.add_scalar("guard/rollback", guard.rollbacks, trigger.iteration)
    if dist.is_initialized():
        dist.barrier()
    return target


def stop_diverged(exp_dir: Path, error: TrainingDiverged, guard: DivergenceGuard, procs: Processes,
                  tb) -> None:
    """The guard may not roll back any more: leave the last healthy checkpoint as the newest one
    (later ones go to ``rolled_back/stop/``), so that --auto-resume continues from it."""
    logger.error("guard: %s", error)
    if procs.is_main and guard.ring:
        set_aside_later_checkpoints(exp_dir, guard.ring[-1], "stop")
        atomic_link(checkpoint_path(exp_dir, guard.ring[-1]), checkpoint_path(exp_dir, "latest"))
    if tb is not None:
        tb.close()
    if dist.is_initialized():
        dist.barrier()


def set_aside_later_checkpoints(exp_dir: Path, target: int, label: str) -> None:
    """Move the checkpoints written after ``target`` (an abandoned branch) to
    ``<exp>/rolled_back/<label>/{models,training_states}/``: kept for inspection, never resumed."""
    for state in training_states(exp_dir):
        iteration = _iteration_of(state)
        if iteration <= target:
            continue
        for path in (checkpoint_path(exp_dir, iteration), state):
            if path.exists():
                destination = exp_dir / "rolled_back" / label / path.parent.name / path.name
                destination.parent.mkdir(parents=True, exist_ok=True)
                os.replace(path, destination)
        logger.info("guard: the checkpoint of iteration %d moved to %s", iteration,
                    exp_dir / "rolled_back" / label)


def checkpoint_path(exp_dir: Path, iteration: int | str) -> Path:
    """``<exp>/models/net_g_<iteration>.pth`` (``latest``, ``best``: the fixed names)."""
    return exp_dir / "models" / f"net_g_{iteration}.pth"


def check_ranks_agree(trainer: Trainer, procs: Processes) -> None:
    """Raise unless every rank holds the same weights (compares per-tensor float64 sums)."""
    with torch.no_grad():
        fingerprint = torch.stack([p.detach().double().sum() for p in trainer.net.parameters()]).to(procs.device)
    gathered = [torch.empty_like(fingerprint) for _ in range(procs.world_size)]
    dist.all_gather(gathered, fingerprint)
    differing = [rank for rank, other in enumerate(gathered) if not torch.equal(other, gathered[0])]
    if differing:
        raise RuntimeError(f"ranks {differing} hold different weights from rank 0: the DDP job diverged")
    logger.info("all %d ranks hold identical weights", procs.world_size)


def rng_states() -> dict:
    """Every generator's state, in types that torch.load(weights_only=True) accepts."""
    name, keys, position, has_gauss, cached = np.random.get_state()
    numpy_state = [name, torch.from_numpy(keys.astype(np.int64)), position, has_gauss, cached]
    states = {"python": random.getstate(), "numpy": numpy_state, "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def resume_training(exp_dir: Path, explicit: str | None, auto_resume: bool, trainer: Trainer,
                    guard: DivergenceGuard) -> tuple[int, dict] | None:
    """Load the state to resume from: ``explicit`` (path.resume_state), else with ``auto_resume``
    the newest loadable one of the experiment. An incomplete or corrupt newest state (a crash
    while writing, a damaged disk) is skipped with a warning and the previous one is used.
    Returns (iterations done, best validation results); None for a fresh start."""
    if explicit:
        iteration, best, guard_state = load_training_state(Path(explicit), exp_dir, trainer)
        guard.load_state_dict(guard_state or {})
        logger.info("resumed from %s at iteration %d", explicit, iteration)
        return iteration, best
    if not auto_resume:
        return None
    candidates = training_states(exp_dir)
    for path in candidates:
        try:
            iteration, best, guard_state = load_training_state(path, exp_dir, trainer)
            guard.load_state_dict(guard_state or {})
        except (CheckpointError, KeyError, TypeError, ValueError, RuntimeError) as error:
            logger.warning("cannot resume from %s (%s): trying the previous training state", path, error)
            continue
        logger.info("resumed from %s at iteration %d%s", path, iteration,
                    f" ({guard.rollbacks} rollback(s) by the guard so far)" if guard.rollbacks else "")
        return iteration, best
    if candidates:
        raise CheckpointError(f"{exp_dir}: none of the {len(candidates)} training states can be loaded "
                              "(see the warnings above); move them away to start afresh")
    logger.info("--auto-resume: no training state in %s, starting from scratch", exp_dir)
    return None


def load_training_state(state_path: Path, exp_dir: Path, trainer: Trainer) -> tuple[int, dict, dict | None]:
    """Restore weights, EMA, optimizer, scaler, learning-rate scales and generators from a
    training state. Returns (iteration, best validation results, the guard's saved state or None)."""
    try:
        state = torch.load(state_path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise CheckpointError(f"{state_path}: cannot load the training state safely: {error}") from error
    if isinstance(state, dict) and "restorer" in state:
        raise CheckpointError(f"{state_path}: written by vidrestore before 2026-11-25 (one optimiser group), which "
                              "this version cannot resume; start a new experiment from its weights "
                              "(path.pretrain_network_g)")
    iteration = state["iteration"]
    weights = checkpoint_path(exp_dir, iteration)
    load_network(trainer.net, weights, key="params")
    if trainer.net_ema is not None:
        load_network(trainer.net_ema, weights, key="params_ema")
    trainer.load_state_dict(state["trainer"])
    random.setstate(state["rng"]["python"])
    name, keys, position, has_gauss, cached = state["rng"]["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), position, has_gauss, cached))
    torch.set_rng_state(state["rng"]["torch"])
    if "cuda" in state["rng"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["rng"]["cuda"])
    return iteration, state["best"], state.get("guard")


def remove_stale_temporaries(exp_dir: Path) -> None:
    """Temporary files left by a process killed while writing (never read by anyone)."""
    for path in [*exp_dir.glob(".*.tmp"), *exp_dir.glob("*/.*.tmp")]:
        logger.warning("removing %s, left by an interrupted write", path)
        path.unlink(missing_ok=True)


def _iteration_of(path: Path) -> int | None:
    match = re.fullmatch(r"(\d+)\.state", path.name)
    return int(match.group(1)) if match else None


def open_tensorboard(exp_dir: Path):
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter(log_dir=str(exp_dir / "tb"))


if __name__ == "__main__":
    sys.exit(cli.run(main))
