"""The option schema: every key a YAML file may hold, its type, default, range and meaning.

Sections that construct something (``network``, datasets) are validated against the
constructor's own signature, so a YAML key maps 1:1 onto a keyword argument; their ranges
and rules live here, in the ``Registry`` tables (``NETWORK_LIMITS``, ``DATASET_LIMITS`` and
their rules), so that models/ and data/ know nothing of options. The other sections are the
dataclasses below: ranges in ``option(...)``, rules between fields in ``RULES``
(``Options.RULES``: rules between sections). A rule is a function of the parsed section that
returns a ``Problem`` or None; its docstring documents it. ``docs/options.md`` is generated
from this file (``python -m options.docs``) and a test keeps it in sync.

Upper bounds refuse sizes no machine can hold before anything is allocated: per key (e.g.
``num_feat`` <= 1024) and per combination (the network's parameter count, the training
batch's bytes), both computed from the numbers alone.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar, Literal

from data.datasets import DATASETS
from data.reds import VAL_PARTITIONS
from data.transforms import PADDING_MODES
from data.vimeo90k import SEPTUPLET
from models.networks import NETWORKS
from ops.dcn.backends import BACKEND_NAMES

from .parse import Limits, Problem, Registry, Spec, option, short

MAX_ITERATIONS = 10**8  # 100 million: years of training at the recipe's speed
MAX_FRAMES = 99  # frames per window (REDS clips have 100)
MAX_WORKERS = 64  # DataLoader worker processes
MAX_PARAMETERS = 2**30  # 4 GiB of float32 weights (EDVR-L: 21 million parameters)
MAX_BATCH_BYTES = 2**30  # one training batch, float32 lq + gt (the EDVR recipe: 4 MiB)
IO_BACKENDS = ("auto", "disk", "lmdb")  # as data.storage.open_store
TRAINING_DATASETS = ("REDSDataset", "Vimeo90KDataset")
EVALUATION_DATASETS = ("VideoTestDataset", "Vimeo90KTestDataset", "VideoFolderDataset")


# -- network -------------------------------------------------------------------------------------

NETWORK_LIMITS = {
    "num_in_ch": Limits(1, 64),
    "num_out_ch": Limits(1, 64),
    "num_feat": Limits(1, 1024),
    "num_frame": Limits(1, MAX_FRAMES),
    "deformable_groups": Limits(1, 1024),
    "num_extract_block": Limits(0, 100),
    "num_reconstruct_block": Limits(0, 200),
    "center_frame_idx": Limits(0, MAX_FRAMES - 1),
    "dcn_backend": Limits(choices=BACKEND_NAMES),
    "max_offset": Limits(above=0, maximum=1000),
}


def odd_window(spec: Spec) -> Problem | None:
    """`num_frame` is odd: a window is centred on the frame it restores."""
    num_frame = spec.kwargs["num_frame"]
    if num_frame % 2 == 0:
        return Problem("num_frame", f"expected an odd number of frames (a window is centred on the frame it "
                                    f"restores), got {num_frame}")
    return None


def centre_in_window(spec: Spec) -> Problem | None:
    """`center_frame_idx` < `num_frame` (null: the middle frame)."""
    index, num_frame = spec.kwargs["center_frame_idx"], spec.kwargs["num_frame"]
    if index is not None and index >= num_frame:
        return Problem("center_frame_idx", f"expected a frame index < num_frame ({num_frame}), got {index}",
                       ("num_frame",))
    return None


def groups_divide_features(spec: Spec) -> Problem | None:
    """`num_feat` is a multiple of `deformable_groups`."""
    num_feat, groups = spec.kwargs["num_feat"], spec.kwargs["deformable_groups"]
    if num_feat % groups:
        return Problem("num_feat", f"expected a multiple of deformable_groups ({groups}), got {num_feat}",
                       ("deformable_groups",))
    return None


def hr_in_needs_predeblur(spec: Spec) -> Problem | None:
    """`hr_in` needs `with_predeblur`: the predeblur module is what reduces the input 4x."""
    if spec.kwargs["hr_in"] and not spec.kwargs["with_predeblur"]:
        return Problem("hr_in", "expected with_predeblur: true alongside hr_in: true (the predeblur module is "
                                "what reduces the input 4x), got with_predeblur: false", ("with_predeblur",))
    return None


def output_adds_to_input(spec: Spec) -> Problem | None:
    """`num_out_ch` == `num_in_ch`: the output is added to the (upsampled) centre input frame."""
    num_in, num_out = spec.kwargs["num_in_ch"], spec.kwargs["num_out_ch"]
    if num_out != num_in:
        return Problem("num_out_ch", f"expected num_in_ch ({num_in}): the output is added to the centre input "
                                     f"frame, got {num_out}", ("num_in_ch",))
    return None


def parameter_budget(spec: Spec) -> Problem | None:
    """At most 2^30 parameters (4 GiB of float32 weights), counted from the arguments."""
    count = edvr_parameter_count(spec.kwargs)
    if count > MAX_PARAMETERS:
        return Problem("num_feat", f"expected a network of at most {MAX_PARAMETERS:,} parameters (4 GiB of "
                                   f"float32 weights), got {count:,} ({count * 4 / 2**30:.1f} GiB): lower num_feat "
                                   "or the block counts",
                       ("num_extract_block", "num_reconstruct_block", "num_frame", "deformable_groups"))
    return None


def edvr_parameter_count(kwargs: Mapping[str, Any]) -> int:
    """The number of parameters ``EDVR(**kwargs)`` has, from the arguments alone (nothing built)."""
    feat, frames, groups = kwargs["num_feat"], kwargs["num_frame"], kwargs["deformable_groups"]
    conv3 = _conv_parameters(feat, feat, 3)
    block = 2 * conv3  # ResidualBlockNoBN
    dcn = feat * feat * 9 + feat + _conv_parameters(feat, groups * 27, 3)  # DCNv2Pack and its offset conv
    count = kwargs["num_extract_block"] * block + 4 * conv3  # feature extraction, pyramid L2/L3 convs
    if kwargs["with_predeblur"]:
        count += _conv_parameters(kwargs["num_in_ch"], feat, 3) + (4 if kwargs["hr_in"] else 2) * conv3
        count += 8 * block + _conv_parameters(feat, feat, 1)  # predeblur residual blocks, conv_1x1
    else:
        count += _conv_parameters(kwargs["num_in_ch"], feat, 3)
    conv3_double = _conv_parameters(2 * feat, feat, 3)
    count += 8 * conv3_double + 4 * conv3 + 4 * dcn  # PCD: three levels and the cascade
    if kwargs["with_tsa"]:
        conv1 = _conv_parameters(feat, feat, 1)
        count += 2 * _conv_parameters(frames * feat, feat, 1) + _conv_parameters(2 * feat, feat, 1)
        count += 5 * conv3 + conv3_double + 4 * conv1
    else:
        count += _conv_parameters(frames * feat, feat, 1)
    count += kwargs["num_reconstruct_block"] * block + _conv_parameters(feat, 4 * feat, 3)
    count += _conv_parameters(feat, 256, 3) + _conv_parameters(64, 64, 3) + _conv_parameters(64, kwargs["num_out_ch"], 3)
    return count


def _conv_parameters(in_channels: int, out_channels: int, kernel: int) -> int:
    return in_channels * out_channels * kernel * kernel + out_channels


NETWORK_RULES = (odd_window, centre_in_window, groups_divide_features, hr_in_needs_predeblur, output_adds_to_input,
                 parameter_budget)
Network = Annotated[Spec, Registry(NETWORKS, limits=NETWORK_LIMITS, rules=NETWORK_RULES)]


# -- datasets ------------------------------------------------------------------------------------

DATASET_LIMITS = {
    "num_frame": Limits(1, MAX_FRAMES),
    "gt_size": Limits(16, 2048),
    "scale": Limits(1, 4),
    "interval_list": Limits(1, MAX_FRAMES),
    "dataset_enlarge_ratio": Limits(1, 1000),
    "val_partition": Limits(choices=tuple(VAL_PARTITIONS)),
    "padding": Limits(choices=PADDING_MODES),
    "io_backend": Limits(choices=IO_BACKENDS),
}


def vimeo_septuplet(spec: Spec) -> Problem | None:
    """Vimeo-90K types: `num_frame` <= 7, the frames of a septuplet."""
    num_frame = spec.kwargs["num_frame"]
    if spec.type in ("Vimeo90KDataset", "Vimeo90KTestDataset") and num_frame > SEPTUPLET:
        return Problem("num_frame", f"expected at most {SEPTUPLET} frames for {spec.type} (a septuplet), "
                                    f"got {num_frame}")
    return None


def patch_divisible_by_scale(spec: Spec) -> Problem | None:
    """`gt_size` is a multiple of `scale`: the LQ patch is gt_size / scale."""
    gt_size, scale = spec.kwargs.get("gt_size"), spec.kwargs.get("scale")
    if gt_size is not None and scale is not None and gt_size % scale:
        return Problem("gt_size", f"expected a multiple of scale ({scale}), got {gt_size}", ("scale",))
    return None


def some_interval(spec: Spec) -> Problem | None:
    """`interval_list` holds at least one interval."""
    if "interval_list" in spec.kwargs and not spec.kwargs["interval_list"]:
        return Problem("interval_list", "expected at least one frame interval, e.g. [1], got []")
    return None


Dataset = Annotated[Spec, Registry(DATASETS, limits=DATASET_LIMITS,
                                   rules=(odd_window, vimeo_septuplet, patch_divisible_by_scale, some_interval))]


def training_dataset(section: TrainDataOptions) -> Problem | None:
    """`dataset.type` is a training dataset (REDSDataset, Vimeo90KDataset): random crops of one size."""
    if section.dataset.type not in TRAINING_DATASETS:
        return Problem("dataset.type", f"expected a training dataset ({', '.join(TRAINING_DATASETS)}), "
                                       f"got {section.dataset.type}")
    return None


def evaluation_dataset(section: TestDataOptions) -> Problem | None:
    """`dataset.type` is an evaluation dataset (VideoTestDataset, Vimeo90KTestDataset, VideoFolderDataset)."""
    if section.dataset.type not in EVALUATION_DATASETS:
        return Problem("dataset.type", f"expected an evaluation dataset ({', '.join(EVALUATION_DATASETS)}): "
                                       f"whole frames with their clip, got {section.dataset.type}")
    return None


@dataclass
class TrainDataOptions:
    """``datasets.train``: the training set and how it is loaded."""

    dataset: Dataset = option(doc="the dataset: `type` (REDSDataset, Vimeo90KDataset) and its "
                                  "constructor arguments (see the dataset's docstring)")
    batch_size_per_gpu: int = option(4, minimum=1, maximum=1024, doc="samples per process (per GPU); the "
                                                                     "global batch is this times the number of processes")
    num_worker_per_gpu: int = option(2, minimum=0, maximum=MAX_WORKERS, doc="DataLoader worker processes per process")
    skip_bad_frames: bool = option(False, doc="replace a sample whose frames cannot be read by the next one, "
                                              "logging each skip with its cause and a count (default: stop)")

    RULES: ClassVar = (training_dataset,)


@dataclass
class TestDataOptions:
    """An entry of ``datasets.val`` / ``datasets.test``: one evaluation set."""

    name: str = option(doc="label in tables and file names, e.g. REDS4 (letters, digits, . _ -)",
                       pattern=r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}")
    dataset: Dataset = option(doc="the dataset: `type` (VideoTestDataset, Vimeo90KTestDataset, "
                                  "VideoFolderDataset) and its constructor arguments")
    num_worker: int = option(1, minimum=0, maximum=MAX_WORKERS, doc="DataLoader worker processes")

    RULES: ClassVar = (evaluation_dataset,)


@dataclass
class DatasetsOptions:
    train: TrainDataOptions | None = option(None, doc="training data (train.py)")
    val: list[TestDataOptions] = option(default_factory=list, doc="validation sets used during training")
    test: list[TestDataOptions] = option(default_factory=list, doc="evaluation sets (test.py)")


# -- training ------------------------------------------------------------------------------------


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
    lr: float = option(4e-4, minimum=0, maximum=1, doc="base learning rate")
    betas: tuple[float, float] = option((0.9, 0.99), minimum=0, below=1, doc="Adam betas")
    weight_decay: float = option(0.0, minimum=0, maximum=1, doc="weight decay")
    dcn_lr_mul: float = option(1.0, minimum=0, maximum=1000, doc="learning-rate factor for the parameters of "
                                                                 "every DCNv2Pack (weight, bias, offset predictor)")


def one_weight_per_period(section: SchedulerOptions) -> Problem | None:
    """CosineAnnealingRestartLR: at least one period and one `restart_weights` entry per period."""
    if section.type != "CosineAnnealingRestartLR":
        return None
    if not section.periods:
        return Problem("periods", "expected at least one period (in iterations) for CosineAnnealingRestartLR, got []")
    if len(section.restart_weights) != len(section.periods):
        return Problem("restart_weights", f"expected one weight per period ({len(section.periods)}), got "
                                          f"{len(section.restart_weights)}: {short(section.restart_weights)}",
                       ("periods",))
    return None


@dataclass
class SchedulerOptions:
    type: Literal["CosineAnnealingRestartLR", "constant"] = option("CosineAnnealingRestartLR")
    periods: list[int] = option(default_factory=list, minimum=1, maximum=MAX_ITERATIONS,
                                doc="cosine periods in iterations (their sum must cover train.total_iter)")
    restart_weights: list[float] = option(default_factory=list, minimum=0, maximum=10,
                                          doc="peak of each period relative to lr (one per period)")
    eta_min: float = option(1e-7, minimum=0, maximum=1, doc="learning rate at the end of each period")

    RULES: ClassVar = (one_weight_per_period,)


@dataclass
class LossOptions:
    type: Literal["CharbonnierLoss", "L1Loss", "MSELoss"] = option("CharbonnierLoss")
    loss_weight: float = option(1.0, above=0, maximum=10**6)
    reduction: Literal["sum", "mean"] = option("sum", doc="EDVR's recipe sums over the batch and pixels")
    eps: float = option(1e-12, above=0, maximum=1, doc="Charbonnier epsilon (sqrt(diff^2 + eps); 0 would make "
                                                       "the gradient of an exact pixel NaN)")


@dataclass
class GuardOptions:
    """``train.guard``: the divergence guard (docs/training-stability.md). Every iteration it reads
    each DCN pack's mean |offset| and mean mask, the loss and whether loss and gradients are finite; when a
    condition holds it rolls the training back to the newest healthy checkpoint, lowers the
    learning rates and continues. After `max_rollbacks` rollbacks it stops, naming the cause."""

    enabled: bool = option(
        True, doc="watch and roll back (false: only the skip of non-finite steps, and the stop after "
                  "train.max_nonfinite_steps of them in a row)")
    offset_threshold: float | None = option(
        50.0, above=0, maximum=10**6,
        doc="trigger when a DCN pack's mean |offset| (pixels) stays above this, capped at the training "
            "patch's side (gt_size / scale; 1/4 of it with hr_in): BasicSR warns at 50 (null: not watched)")
    min_mask_mean: float | None = option(
        0.05, above=0, below=1,
        doc="trigger when a DCN pack's mean modulation mask stays below this (0.5 at initialisation; near 0 "
            "the pack passes almost nothing: its alignment collapsed) (null: not watched)")
    loss_spike_factor: float | None = option(
        10.0, above=1, maximum=10**6,
        doc="trigger when the loss stays above this times its running median (null: not watched)")
    loss_window: int = option(
        100, minimum=3, maximum=100_000,
        doc="iterations of the running loss median; no spike is looked for before the window is full")
    patience: int = option(
        3, minimum=1, maximum=10_000,
        doc="consecutive iterations an offset, mask or loss condition must hold to trigger")
    dcn_lr_factor: float = option(
        0.25, above=0, maximum=1, doc="each rollback multiplies the learning rate of the DCN packs by this")
    max_dcn_lr_mul: float | None = option(
        1.0, above=0, maximum=1000,
        doc="a rollback for offsets or masks also brings the DCN packs' learning rate down to at most this "
            "times the others' (train.optim.dcn_lr_mul with the rollbacks' factors; 1: EDVR's published "
            "recipes) (null: only dcn_lr_factor)")
    lr_factor: float = option(
        0.5, above=0, maximum=1,
        doc="a rollback for a loss spike or non-finite values also multiplies every learning rate by this "
            "(1: only the DCN's)")
    max_rollbacks: int = option(
        4, minimum=0, maximum=1000,
        doc="rollbacks allowed; the next trigger stops the training (exit status 2) at the last healthy "
            "checkpoint")
    ring_size: int = option(
        3, minimum=1, maximum=100,
        doc="healthy checkpoints remembered as rollback targets (their files are never deleted)")


def schedule_covers_training(section: TrainOptions) -> Problem | None:
    """CosineAnnealingRestartLR: `scheduler.periods` sum to at least `total_iter`."""
    total = sum(section.scheduler.periods)
    if section.scheduler.type == "CosineAnnealingRestartLR" and total < section.total_iter:
        return Problem("scheduler.periods", f"expected periods covering every iteration, but the periods sum to "
                                            f"{total} < train.total_iter {section.total_iter}", ("total_iter",))
    return None


def eta_min_below_lr(section: TrainOptions) -> Problem | None:
    """CosineAnnealingRestartLR: `scheduler.eta_min` <= `optim.lr` (each period decays to eta_min)."""
    eta_min, lr = section.scheduler.eta_min, section.optim.lr
    if section.scheduler.type == "CosineAnnealingRestartLR" and eta_min > lr:
        return Problem("scheduler.eta_min", f"expected at most train.optim.lr ({lr:g}), got {eta_min:g}", ("optim.lr",))
    return None


@dataclass
class TrainOptions:
    total_iter: int = option(minimum=1, maximum=MAX_ITERATIONS, doc="training iterations")
    optim: OptimOptions = option(default_factory=OptimOptions)
    scheduler: SchedulerOptions = option(default_factory=SchedulerOptions)
    pixel_loss: LossOptions = option(default_factory=LossOptions)
    warmup_iter: int = option(0, minimum=0, maximum=MAX_ITERATIONS, doc="linear learning-rate warm-up "
                                                                        "iterations (0: none)")
    tsa_iter: int = option(0, minimum=0, maximum=MAX_ITERATIONS, doc="for the first tsa_iter iterations only "
                                                                     "the fusion module trains (decided from the "
                                                                     "iteration number, also after resume)")
    ema_decay: float = option(0.0, minimum=0, below=1, doc="EMA of the weights (0: off; EDVR: 0.999)")
    grad_clip: float | None = option(None, above=0, maximum=10**6, doc="clip the gradient norm to this value "
                                                                       "(null: off)")
    amp: Literal["none", "bf16", "fp16", "auto"] = option(
        "none", doc="mixed precision (fp16 uses a GradScaler); auto: bf16 where the hardware computes it "
                    "natively (CPUs with AVX512-BF16 or AMX, GPUs that support it), else none")
    max_nonfinite_steps: int = option(10, minimum=1, maximum=10**6, doc="a step whose loss or gradients are "
                                                                        "NaN/inf is skipped with a warning; this many "
                                                                        "in a row roll the training back (guard) or "
                                                                        "stop it (guard disabled)")
    channels_last: bool = option(False, doc="run the network in channels_last memory format")
    offset_warmup_iter: int = option(0, minimum=0, maximum=MAX_ITERATIONS,
                                     doc="for the first offset_warmup_iter iterations the offset predictors (each "
                                         "DCN pack's conv_offset) are frozen (0: none)")
    guard: GuardOptions = option(default_factory=GuardOptions)

    RULES: ClassVar = (schedule_covers_training, eta_min_below_lr)


@dataclass
class MetricOptions:
    crop_border: int = option(0, minimum=0, maximum=1024, doc="pixels removed on each side before measuring")
    test_y_channel: bool = option(False, doc="measure the BT.601 Y channel only")


@dataclass
class ValOptions:
    val_freq: int = option(5000, minimum=1, maximum=MAX_ITERATIONS, doc="validate every val_freq iterations "
                                                                        "(and at the end)")
    save_img: bool = option(False, doc="save restored frames")
    metrics: dict[Literal["psnr", "ssim"], MetricOptions] = option(
        default_factory=lambda: {"psnr": MetricOptions()}, doc="metrics to compute, by name")


@dataclass
class LoggerOptions:
    print_freq: int = option(100, minimum=1, maximum=MAX_ITERATIONS, doc="log every print_freq iterations")
    save_checkpoint_freq: int = option(5000, minimum=1, maximum=MAX_ITERATIONS,
                                       doc="write weights + training state every N iterations")
    use_tb_logger: bool = option(True, doc="write TensorBoard scalars to <experiment>/tb/")


# -- between sections ----------------------------------------------------------------------------


def datasets_fit_network(opts: Options) -> Problem | None:
    """Every dataset's `num_frame` is `network.num_frame`, and its `scale` (where it has one) the
    network's: 4, or 1 with `network.hr_in`. With datasets, `network.num_in_ch` is 3 (RGB frames)."""
    network = opts.network.kwargs
    scale = 1 if network["hr_in"] else 4
    for path, spec in _datasets(opts):
        if spec.kwargs["num_frame"] != network["num_frame"]:
            return Problem(f"{path}.num_frame", f"expected network.num_frame ({network['num_frame']}), got "
                                                f"{spec.kwargs['num_frame']}", ("network.num_frame",))
        if spec.kwargs.get("scale") not in (None, scale):
            why = "network.hr_in: deblurring keeps the size" if network["hr_in"] else "the network upsamples x4"
            return Problem(f"{path}.scale", f"expected {scale} ({why}), got {spec.kwargs['scale']}",
                           ("network.hr_in",))
    if network["num_in_ch"] != 3 and any(_datasets(opts)):
        return Problem("network.num_in_ch", f"expected 3: the datasets read RGB frames, got {network['num_in_ch']}")
    return None


def training_patch_fits_network(opts: Options) -> Problem | None:
    """`datasets.train.dataset.gt_size` / scale is a multiple of 4 (16 with `network.hr_in`),
    the input size multiple EDVR needs."""
    if opts.datasets.train is None:
        return None
    data, multiple = opts.datasets.train.dataset.kwargs, 16 if opts.network.kwargs["hr_in"] else 4
    if (data["gt_size"] // data["scale"]) % multiple:
        return Problem("datasets.train.dataset.gt_size", f"expected a multiple of {multiple * data['scale']}: the "
                                                         f"LQ patch gt_size / scale must be a multiple of {multiple} "
                                                         f"for the network, got {data['gt_size']}",
                       ("datasets.train.dataset.scale", "network.hr_in"))
    return None


def training_batch_fits_memory(opts: Options) -> Problem | None:
    """One training batch (float32 lq + gt) is at most 1 GiB."""
    if opts.datasets.train is None:
        return None
    batch, data = opts.datasets.train.batch_size_per_gpu, opts.datasets.train.dataset.kwargs
    gt_size, lq_size = data["gt_size"], data["gt_size"] // data["scale"]
    size = batch * 4 * 3 * (data["num_frame"] * lq_size**2 + gt_size**2)
    if size > MAX_BATCH_BYTES:
        return Problem("datasets.train.batch_size_per_gpu",
                       f"expected a batch of at most 1 GiB (float32 lq + gt), got {size / 2**30:.1f} GiB: {batch} "
                       f"samples of {data['num_frame']} frames of {lq_size}x{lq_size} and a {gt_size}x{gt_size} "
                       "gt; lower batch_size_per_gpu or gt_size",
                       ("datasets.train.dataset.gt_size", "datasets.train.dataset.num_frame"))
    return None


def _datasets(opts: Options) -> Iterator[tuple[str, Spec]]:
    """(key path, spec) of every dataset section."""
    if opts.datasets.train is not None:
        yield "datasets.train.dataset", opts.datasets.train.dataset
    for group in ("val", "test"):
        for i, entry in enumerate(getattr(opts.datasets, group)):
            yield f"datasets.{group}[{i}].dataset", entry.dataset


@dataclass
class Options:
    """A whole option file."""

    name: str = option(doc="experiment name: the folder under path.experiments_root / results_root "
                           "(letters, digits, . _ -)", pattern=r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}")
    network: Network = option(doc="the network: `type: EDVR` and EDVR's constructor arguments")
    datasets: DatasetsOptions = option(default_factory=DatasetsOptions)
    train: TrainOptions | None = option(None, doc="training recipe (needed by train.py)")
    val: ValOptions = option(default_factory=ValOptions)
    path: PathOptions = option(default_factory=PathOptions)
    logger: LoggerOptions = option(default_factory=LoggerOptions)
    manual_seed: int = option(0, minimum=0, maximum=2**63 - 1, doc="seed of every random generator (torch "
                                                                   "takes up to 2^64 - 1, data.sampling mixes "
                                                                   "seeds into 63 bits)")

    RULES: ClassVar = (datasets_fit_network, training_patch_fits_network, training_batch_fits_memory)
