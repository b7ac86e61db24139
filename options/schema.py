"""The option schema: every key a YAML file may hold, its type, default and meaning.

Sections that construct something (``network``, datasets) are validated against the
constructor's own signature, so a YAML key maps 1:1 onto a keyword argument; the
other sections are the dataclasses below. ``docs/options.md`` is generated from
this file (``python -m options.docs``) and a test keeps it in sync.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal

from data import DATASETS
from models.edvr import EDVR

from .parse import Registry, Spec, option

NETWORKS = {"EDVR": EDVR}

Network = Annotated[Spec, Registry(NETWORKS)]
Dataset = Annotated[Spec, Registry(DATASETS)]


@dataclass
class TrainDataOptions:
    """``datasets.train``: the training set and how it is loaded."""

    dataset: Dataset = option(doc="the dataset: `type` (REDSDataset, Vimeo90KDataset, ...) and its "
                                  "constructor arguments (see the dataset's docstring)")
    batch_size_per_gpu: int = option(4, minimum=1, doc="samples per process (per GPU); the global batch "
                                                        "is this times the number of processes")
    num_worker_per_gpu: int = option(2, minimum=0, doc="DataLoader worker processes per process")
    skip_bad_frames: bool = option(False, doc="replace a sample whose frames cannot be read by the next one, "
                                              "logging each skip with its cause and a count (default: stop)")


@dataclass
class TestDataOptions:
    """An entry of ``datasets.val`` / ``datasets.test``: one evaluation set."""

    name: str = option(doc="label in tables and file names, e.g. REDS4")
    dataset: Dataset = option(doc="the dataset: `type` (VideoTestDataset, Vimeo90KTestDataset, ...) and "
                                  "its constructor arguments")
    num_worker: int = option(1, minimum=0, doc="DataLoader worker processes")


@dataclass
class DatasetsOptions:
    train: TrainDataOptions | None = option(None, doc="training data (train.py)")
    val: list[TestDataOptions] = option(default_factory=list, doc="validation sets used during training")
    test: list[TestDataOptions] = option(default_factory=list, doc="evaluation sets (test.py)")


@dataclass
class PathOptions:
    experiments_root: str = option("experiments", doc="experiments are written to <experiments_root>/<name>/")
    results_root: str = option("results", doc="test.py writes tables and frames to <results_root>/<name>/")
    pretrain_network_g: str | None = option(None, doc="weights to start from (ours or BasicSR's)")
    param_key_g: Literal["auto", "params", "params_ema"] = option(
        "auto", doc="entry of the weights file to load; auto: params_ema if present, else params")
    strict_load_g: bool = option(True, doc="refuse weights whose keys or shapes differ from the network")
    resume_state: str | None = option(None, doc="training state to resume from (see also --auto-resume)")


@dataclass
class OptimOptions:
    type: Literal["Adam", "AdamW"] = option("Adam", doc="optimiser")
    lr: float = option(4e-4, minimum=0, doc="base learning rate")
    betas: tuple[float, float] = option((0.9, 0.99), doc="Adam betas")
    weight_decay: float = option(0.0, minimum=0, doc="weight decay")
    dcn_lr_mul: float = option(1.0, minimum=0, doc="learning-rate factor for the parameters of every "
                                                    "DCNv2Pack (weight, bias, offset predictor)")


@dataclass
class SchedulerOptions:
    type: Literal["CosineAnnealingRestartLR", "constant"] = option("CosineAnnealingRestartLR")
    periods: list[int] = option(default_factory=list, doc="cosine periods in iterations (their sum is "
                                                          "usually train.total_iter)")
    restart_weights: list[float] = option(default_factory=list, doc="peak of each period relative to lr "
                                                                     "(one per period)")
    eta_min: float = option(1e-7, minimum=0, doc="learning rate at the end of each period")


@dataclass
class LossOptions:
    type: Literal["CharbonnierLoss", "L1Loss", "MSELoss"] = option("CharbonnierLoss")
    loss_weight: float = option(1.0, minimum=0)
    reduction: Literal["sum", "mean"] = option("sum", doc="EDVR's recipe sums over the batch and pixels")
    eps: float = option(1e-12, minimum=0, doc="Charbonnier epsilon (sqrt(diff^2 + eps))")


@dataclass
class TrainOptions:
    total_iter: int = option(minimum=1, doc="training iterations")
    optim: OptimOptions = option(default_factory=OptimOptions)
    scheduler: SchedulerOptions = option(default_factory=SchedulerOptions)
    pixel_loss: LossOptions = option(default_factory=LossOptions)
    warmup_iter: int = option(0, minimum=0, doc="linear learning-rate warm-up iterations (0: none)")
    tsa_iter: int = option(0, minimum=0, doc="for the first tsa_iter iterations only the fusion module "
                                             "trains (decided from the iteration number, also after resume)")
    ema_decay: float = option(0.0, minimum=0, maximum=0.999999, doc="EMA of the weights (0: off; EDVR: 0.999)")
    grad_clip: float | None = option(None, minimum=0, doc="clip the gradient norm to this value (null: off)")
    amp: Literal["none", "bf16", "fp16"] = option("none", doc="mixed precision (fp16 uses a GradScaler)")
    max_nonfinite_steps: int = option(10, minimum=1, doc="a step whose loss is NaN/inf is skipped with a warning; "
                                                          "this many in a row stop the training")
    channels_last: bool = option(False, doc="run the network in channels_last memory format")


@dataclass
class MetricOptions:
    crop_border: int = option(0, minimum=0, doc="pixels removed on each side before measuring")
    test_y_channel: bool = option(False, doc="measure the BT.601 Y channel only")


@dataclass
class ValOptions:
    val_freq: int = option(5000, minimum=1, doc="validate every val_freq iterations (and at the end)")
    save_img: bool = option(False, doc="save restored frames")
    metrics: dict[Literal["psnr", "ssim"], MetricOptions] = option(
        default_factory=lambda: {"psnr": MetricOptions()}, doc="metrics to compute, by name")


@dataclass
class LoggerOptions:
    print_freq: int = option(100, minimum=1, doc="log every print_freq iterations")
    save_checkpoint_freq: int = option(5000, minimum=1, doc="write weights + training state every N iterations")
    use_tb_logger: bool = option(True, doc="write TensorBoard scalars to <experiment>/tb/")


@dataclass
class Options:
    """A whole option file."""

    name: str = option(doc="experiment name: the folder under path.experiments_root / results_root "
                           "(letters, digits, . _ -)", pattern=r"[A-Za-z0-9_-][A-Za-z0-9._-]*")
    network: Network = option(doc="the network: `type: EDVR` and EDVR's constructor arguments")
    datasets: DatasetsOptions = option(default_factory=DatasetsOptions)
    train: TrainOptions | None = option(None, doc="training recipe (needed by train.py)")
    val: ValOptions = option(default_factory=ValOptions)
    path: PathOptions = option(default_factory=PathOptions)
    logger: LoggerOptions = option(default_factory=LoggerOptions)
    manual_seed: int = option(0, minimum=0, doc="seed of every random generator")
