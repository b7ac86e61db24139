"""Hostile and careless option files: alias bombs and huge files are refused at once with a short
message; duplicate keys name both lines; every out-of-range value and broken rule names its key
(and the ``--set`` override that set it); ``parse_network`` checks weights metadata the same way."""

from __future__ import annotations

import time
import tracemalloc

import pytest
import torch

from options import OptionsError, load, load_text, parse_network, to_plain

NET = "name: x\nnetwork: {type: EDVR, num_feat: 16, deformable_groups: 2, num_extract_block: 1, num_reconstruct_block: 1}\n"
TRAIN = NET + "train:\n  total_iter: 10\n  scheduler: {periods: [10], restart_weights: [1]}\n"
REDS = "{type: REDSDataset, dataroot_gt: gt, dataroot_lq: lq, gt_size: 64}"
TEST_SET = "{type: VideoTestDataset, dataroot_lq: lq}"


def error_of(text: str, overrides: tuple[str, ...] = (), source: str = "exp.yml") -> OptionsError:
    with pytest.raises(OptionsError) as info:
        load_text(text, source, overrides)
    assert len(str(info.value)) < 1000
    return info.value


def billion_laughs(levels: int = 9) -> str:
    lines = ["lol0: &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    lines += [f"lol{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 9) + "]" for i in range(1, levels + 1)]
    return "\n".join(lines) + "\n"


# -- YAML: alias bombs, size, duplicate keys, values Python cannot read ---------------------------


@pytest.mark.parametrize("where", ["top level", "in a list key", "in a --set value"])
def test_billion_laughs_is_refused_quickly_in_little_memory(where):
    bomb = billion_laughs()  # 9^10 'lol's: gigabytes once expanded
    if where == "top level":
        text, overrides = NET + bomb, ()
    elif where == "in a list key":
        text, overrides = TRAIN + bomb + "datasets: {val: [{name: a, dataset: {type: VideoTestDataset, clips: *l9}}]}", ()
    else:
        flow = "{" + ", ".join(bomb.splitlines()) + "}"
        text, overrides = NET, (f"datasets={flow}",)
    tracemalloc.start()
    start = time.perf_counter()
    try:
        error = error_of(text, overrides)
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    assert time.perf_counter() - start < 2
    assert peak < 20 * 2**20
    assert "expands to at most" in error.message
    assert error.source == ("exp.yml" if not overrides else f"--set {overrides[0][:77]}...")


def test_merge_key_bomb_is_refused():
    lines = ["m0: &m0 {a: 1, b: 2}"] + [f"m{i}: &m{i} {{<<: [*m{i - 1}, *m{i - 1}], k{i}: 1}}" for i in range(1, 40)]
    start = time.perf_counter()
    error = error_of(NET + "\n".join(lines))
    assert time.perf_counter() - start < 2 and "expands to at most" in error.message


def test_recursive_alias_is_refused():
    error = error_of(NET + "datasets: {val: &v [*v]}")
    assert "recursive" in error.message and error.key_path == "datasets.val[0]"


def test_huge_files_are_refused_without_reading_them_whole(tmp_path):
    huge = tmp_path / "huge.yml"
    with huge.open("wb") as handle:
        handle.write(NET.encode())
        handle.truncate(64 * 2**20)  # 64 MiB (sparse)
    start = time.perf_counter()
    with pytest.raises(OptionsError, match="expected an option file of at most 1048576 bytes"):
        load(huge)
    assert time.perf_counter() - start < 2
    with pytest.raises(OptionsError, match="expected at most 1048576 characters of YAML"):
        load_text(NET + "#" * 2**20)


def test_duplicate_keys_name_the_key_and_both_lines():
    text = NET + "logger:\n  print_freq: 10\nval: {val_freq: 5}\nlogger:\n  save_checkpoint_freq: 3\n"
    error = error_of(text)
    assert error.key_path == "logger" and "duplicate key (lines 3 and 6)" in error.message
    nested = error_of(TRAIN + "path: {results_root: r,\n       results_root: s}\n")
    assert nested.key_path == "path.results_root" and "lines 6 and 7" in nested.message
    in_list = error_of(NET + f"datasets:\n  val:\n    - name: a\n      dataset: {TEST_SET}\n      name: b\n")
    assert in_list.key_path == "datasets.val[0].name" and "lines 5 and 7" in in_list.message


def test_merge_keys_still_override():
    opts = load_text(NET + "logger: {<<: {print_freq: 10, save_checkpoint_freq: 20}, print_freq: 5}\n")
    assert (opts.logger.print_freq, opts.logger.save_checkpoint_freq) == (5, 20)  # not a duplicate key
    merged = load_text(NET + "datasets:\n  val:\n    - &v {name: a, dataset: " + TEST_SET + "}\n"
                       "  test:\n    - {<<: *v, name: b}\n")
    assert merged.datasets.test[0].name == "b" and merged.datasets.test[0].dataset == merged.datasets.val[0].dataset


@pytest.mark.parametrize("value", ["2020-13-45", "9" * 5000])
def test_values_python_cannot_read_are_option_errors(value):
    error = error_of(f"name: {value}\nnetwork: {{type: EDVR}}\n")
    assert "line 1" in error.message and "cannot read this value" in error.message


def test_messages_quote_values_shortly():
    error = error_of(NET.replace("num_feat: 16", "num_feat: '" + "x" * 100_000 + "'"))
    assert error.key_path == "network.num_feat" and len(str(error)) < 200 and "..." in str(error)
    error = error_of(NET + "manual_seed: " + "9" * 4000)
    assert len(str(error)) < 200
    error = error_of("name: x\nnetwork: {type: EDVR, " + "k" * 500 + ": 1}")
    assert len(error.key_path) < 100


# -- ranges: every out-of-range value names its key, before anything is allocated ----------------


@pytest.mark.parametrize(
    "text,key_path,message",
    [
        (NET.replace("deformable_groups: 2", "deformable_groups: 0"), "network.deformable_groups", ">= 1, got 0"),
        (NET.replace("num_feat: 16", "num_feat: -8"), "network.num_feat", ">= 1, got -8"),
        (NET.replace("num_feat: 16", "num_feat: 1000000"), "network.num_feat", "<= 1024, got 1000000"),
        (NET.replace("num_extract_block: 1", "num_extract_block: -1"), "network.num_extract_block", ">= 0, got -1"),
        (NET.replace("num_reconstruct_block: 1", "num_reconstruct_block: 100000"), "network.num_reconstruct_block",
         "<= 200"),
        (NET.replace("num_feat: 16", "num_feat: 16, num_frame: 0"), "network.num_frame", ">= 1, got 0"),
        (NET.replace("num_feat: 16", "num_feat: 16, num_frame: 1001"), "network.num_frame", "<= 99"),
        (NET + "manual_seed: 18446744073709551616", "manual_seed", "<= 9223372036854775807"),
        (NET + "manual_seed: -1", "manual_seed", ">= 0"),
        (NET + f"datasets: {{train: {{dataset: {REDS.replace('64', '-64')}}}}}", "datasets.train.dataset.gt_size",
         ">= 16, got -64"),
        (NET + f"datasets: {{train: {{dataset: {REDS.replace('64', '1000000')}}}}}",
         "datasets.train.dataset.gt_size", "<= 2048"),
        (NET + f"datasets: {{train: {{dataset: {REDS[:-1]}, dataset_enlarge_ratio: -1}}}}}}",
         "datasets.train.dataset.dataset_enlarge_ratio", ">= 1, got -1"),
        (NET + f"datasets: {{train: {{dataset: {REDS[:-1]}, interval_list: [1, 0]}}}}}}",
         "datasets.train.dataset.interval_list[1]", ">= 1, got 0"),
        (NET + f"datasets: {{train: {{dataset: {REDS}, batch_size_per_gpu: 1000000000}}}}",
         "datasets.train.batch_size_per_gpu", "<= 1024"),
        (NET + f"datasets: {{train: {{dataset: {REDS}, num_worker_per_gpu: 100000}}}}",
         "datasets.train.num_worker_per_gpu", "<= 64"),
        (TRAIN.replace("total_iter: 10", "total_iter: 1000000000000"), "train.total_iter", "<= 100000000"),
        (TRAIN.replace("periods: [10]", "periods: [0, 10]"), "train.scheduler.periods[0]", ">= 1, got 0"),
        (TRAIN.replace("restart_weights: [1]", "restart_weights: [-1]"), "train.scheduler.restart_weights[0]", ">= 0"),
        (TRAIN + "  optim: {betas: [0.9, 1.0]}", "train.optim.betas[1]", "< 1, got 1.0"),
        (TRAIN + "  ema_decay: 1", "train.ema_decay", "< 1, got 1"),
        (TRAIN + "  grad_clip: 0", "train.grad_clip", "> 0, got 0"),
        (TRAIN + "  optim: {lr: 10000000000000000000000000000000000000000000000000000000000000000000000000000000000"
                 "000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000"
                 "000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000"
                 "00000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000}",
         "train.optim.lr", "expected a finite number"),
        (NET + "val: {metrics: {psnr: {crop_border: -2}}}", "val.metrics.psnr.crop_border", ">= 0"),
        (NET + "logger: {print_freq: 0}", "logger.print_freq", ">= 1, got 0"),
        (NET.replace("num_feat: 16", "num_feat: 16, dcn_backend: cuda"), "network.dcn_backend",
         "expected one of 'auto', 'native'"),
        (NET + f"datasets: {{val: [{{name: a, dataset: {TEST_SET[:-1]}, padding: zeros}}}}]}}",
         "datasets.val[0].dataset.padding", "expected one of 'reflection_circle'"),
        (NET + f"datasets: {{val: [{{name: ../../etc, dataset: {TEST_SET}}}]}}", "datasets.val[0].name",
         "expected a value matching"),
    ],
)
def test_out_of_range_values_name_their_key(text, key_path, message):
    error = error_of(text)
    assert error.key_path == key_path and message in error.message
    assert str(error).startswith(f"exp.yml: {key_path}: expected ")


def test_a_network_no_machine_can_hold_is_refused_by_its_parameter_count():
    text = NET.replace("num_feat: 16", "num_feat: 1024").replace("deformable_groups: 2", "deformable_groups: 8")
    error = error_of(text.replace("num_reconstruct_block: 1", "num_reconstruct_block: 200"))
    assert error.key_path == "network.num_feat"
    assert "at most 1,073,741,824 parameters" in error.message and "GiB" in error.message


def test_a_batch_no_machine_can_hold_is_refused():
    text = NET + f"datasets: {{train: {{dataset: {REDS.replace('64', '2048')}, batch_size_per_gpu: 1024}}}}"
    error = error_of(text)
    assert error.key_path == "datasets.train.batch_size_per_gpu" and "at most 1 GiB" in error.message


# -- rules between keys --------------------------------------------------------------------------


def network(**kwargs) -> str:
    args = {"num_feat": 16, "deformable_groups": 2, "num_extract_block": 1, "num_reconstruct_block": 1, **kwargs}
    return "name: x\nnetwork: {type: EDVR, " + ", ".join(f"{k}: {v}" for k, v in args.items()) + "}\n"


@pytest.mark.parametrize(
    "text,key_path,message",
    [
        (network(num_frame=5, center_frame_idx=5), "network.center_frame_idx", "expected a frame index < num_frame (5)"),
        (network(num_feat=12, deformable_groups=8), "network.num_feat",
         "expected a multiple of deformable_groups (8), got 12"),
        (network(hr_in="true"), "network.hr_in", "expected with_predeblur: true"),
        (network(num_frame=4), "network.num_frame", "expected an odd number of frames"),
        (network(num_out_ch=1), "network.num_out_ch", "expected num_in_ch (3)"),
        (network(num_in_ch=1, num_out_ch=1) + f"datasets: {{val: [{{name: a, dataset: {TEST_SET}}}]}}",
         "network.num_in_ch", "expected 3"),
        (NET + f"datasets: {{train: {{dataset: {REDS.replace('64', '66')}}}}}", "datasets.train.dataset.gt_size",
         "expected a multiple of scale (4), got 66"),
        (NET + f"datasets: {{train: {{dataset: {REDS.replace('64', '72')}}}}}", "datasets.train.dataset.gt_size",
         "expected a multiple of 16"),
        (NET + f"datasets: {{train: {{dataset: {REDS[:-1]}, interval_list: []}}}}}}",
         "datasets.train.dataset.interval_list", "expected at least one frame interval"),
        (network(num_frame=9) + "datasets: {train: {dataset: {type: Vimeo90KDataset, dataroot_gt: g, dataroot_lq: l, "
         "meta_info_file: m, num_frame: 9}}}", "datasets.train.dataset.num_frame", "expected at most 7 frames"),
        (network(num_frame=9) + "datasets: {test: [{name: t, dataset: {type: Vimeo90KTestDataset, dataroot_lq: l, "
         "meta_info_file: m, num_frame: 9}}]}", "datasets.test[0].dataset.num_frame", "expected at most 7 frames"),
        (NET + "datasets: {train: {dataset: {type: Vimeo90KDataset, dataroot_gt: g, dataroot_lq: l, "
               "meta_info_file: m, num_frame: 6}}}", "datasets.train.dataset.num_frame", "expected an odd number"),
        (NET + f"datasets: {{train: {{dataset: {REDS[:-1]}, num_frame: 7}}}}}}", "datasets.train.dataset.num_frame",
         "expected network.num_frame (5), got 7"),
        (NET + f"datasets: {{val: [{{name: a, dataset: {TEST_SET[:-1]}, num_frame: 3}}}}]}}",
         "datasets.val[0].dataset.num_frame", "expected network.num_frame (5), got 3"),
        (NET + f"datasets: {{test: [{{name: a, dataset: {TEST_SET}}}, {{name: b, dataset: {TEST_SET[:-1]}, "
               "num_frame: 7}}]}", "datasets.test[1].dataset.num_frame", "expected network.num_frame (5), got 7"),
        (NET + f"datasets: {{test: [{{name: a, dataset: {TEST_SET[:-1]}, scale: 2}}}}]}}",
         "datasets.test[0].dataset.scale", "expected 4 (the network upsamples x4), got 2"),
        (network(hr_in="true", with_predeblur="true") + f"datasets: {{train: {{dataset: {REDS}}}}}",
         "datasets.train.dataset.scale", "expected 1 (network.hr_in: deblurring keeps the size), got 4"),
        (network(hr_in="true", with_predeblur="true")
         + f"datasets: {{train: {{dataset: {REDS.replace('64', '72')[:-1]}, scale: 1}}}}}}",
         "datasets.train.dataset.gt_size", "expected a multiple of 16"),
        (NET + f"datasets: {{train: {{dataset: {TEST_SET}}}}}", "datasets.train.dataset.type",
         "expected a training dataset (REDSDataset, Vimeo90KDataset), got VideoTestDataset"),
        (NET + f"datasets: {{val: [{{name: a, dataset: {REDS}}}]}}", "datasets.val[0].dataset.type",
         "expected an evaluation dataset"),
        (TRAIN.replace("restart_weights: [1]", "restart_weights: [1, 0.5]"), "train.scheduler.restart_weights",
         "expected one weight per period (1), got 2"),
        (TRAIN.replace("periods: [10]", "periods: []"), "train.scheduler.periods", "expected at least one period"),
        (TRAIN.replace("periods: [10]", "periods: [4, 5]").replace("[1]", "[1, 1]"), "train.scheduler.periods",
         "the periods sum to 9 < train.total_iter 10"),
        (TRAIN + "  optim: {lr: 1.0e-8}", "train.scheduler.eta_min", "expected at most train.optim.lr (1e-08)"),
    ],
)
def test_rules_between_keys_name_the_key(text, key_path, message):
    error = error_of(text)
    assert error.key_path == key_path and message in error.message
    assert str(error).startswith(f"exp.yml: {key_path}: expected ")


def test_consistent_files_pass_the_rules():
    deblur = network(hr_in="true", with_predeblur="true", num_frame=3) + (
        f"datasets:\n  train: {{dataset: {REDS.replace('64', '256')[:-1]}, scale: 1, num_frame: 3}}}}\n"
        f"  val: [{{name: v, dataset: {TEST_SET[:-1]}, scale: 1, num_frame: 3}}}}]\n")
    assert load_text(deblur).datasets.train.dataset.kwargs["scale"] == 1
    constant = TRAIN.replace("scheduler: {periods: [10], restart_weights: [1]}", "scheduler: {type: constant}")
    assert load_text(constant + "  optim: {lr: 1.0e-8}").train.scheduler.type == "constant"


# -- --set overrides are named in their errors --------------------------------------------------


@pytest.mark.parametrize(
    "override,expected",
    [
        ("train.optim.lr=abc", "--set train.optim.lr=abc: train.optim.lr: expected a number, got 'abc'"),
        ("train.optim.lr=[1,", "--set train.optim.lr=[1,: train.optim.lr: invalid YAML at line 1"),
        ("network.num_feat=-8", "--set network.num_feat=-8: network.num_feat: expected a value >= 1, got -8"),
        ("network.num_fet=8", "--set network.num_fet=8: network.num_fet: unknown key for EDVR (did you mean 'num_feat'?)"),
        ("network.deformable_groups=3",
         "--set network.deformable_groups=3: network.num_feat: expected a multiple of deformable_groups (3), got 16"),
        ("train.total_iter=20", "--set train.total_iter=20: train.scheduler.periods: expected periods covering"),
        ("train={total_iter: 0}", "--set train={total_iter: 0}: train.total_iter: expected a value >= 1, got 0"),
        ("logger={print_freq: 1, print_freq: 2}",
         "--set logger={print_freq: 1, print_freq: 2}: logger.print_freq: duplicate key (lines 1 and 1)"),
        ("datasets.val.0.num_worker=-1",
         "--set datasets.val.0.num_worker=-1: datasets.val[0].num_worker: expected a value >= 0, got -1"),
        ("datasets.val.5.name=x", "--set datasets.val.5.name=x: datasets.val.5: expected a list index in [0, 1)"),
        ("network.type=Vimeo", "--set network.type=Vimeo: network.type: unknown type 'Vimeo'"),
        ("path.results_root", "--set path.results_root: expected --set key.path=value"),
    ],
)
def test_override_errors_name_the_override(override, expected):
    text = TRAIN + f"datasets: {{val: [{{name: a, dataset: {TEST_SET}}}]}}\n"
    assert str(error_of(text, (override,))).startswith(expected)


def test_override_of_the_type_is_named_for_the_keys_it_invalidates():
    text = NET + f"datasets: {{train: {{dataset: {REDS}}}}}\n"
    error = error_of(text, ("datasets.train.dataset.type=Vimeo90KDataset",))
    assert error.source == "--set datasets.train.dataset.type=Vimeo90KDataset"
    assert error.key_path == "datasets.train.dataset.meta_info_file" and "missing required key" in error.message


def test_errors_of_the_file_still_name_the_file():
    error = error_of(NET + "logger: {print_freq: 0}", ("network.num_feat=8", "logger.save_checkpoint_freq=1"))
    assert str(error).startswith("exp.yml: logger.print_freq: expected a value >= 1, got 0")


def test_the_last_override_of_a_key_is_named():
    error = error_of(NET, ("network.num_feat=8", "network.num_feat=-1"))
    assert error.source == "--set network.num_feat=-1"


def test_an_override_that_creates_a_section_is_named_for_its_missing_keys():
    error = error_of(NET, ("train.optim.lr=1.0e-4",))
    assert str(error).startswith("--set train.optim.lr=1.0e-4: train.total_iter: missing required key")


def test_an_override_changes_only_its_key_in_a_section_shared_through_an_alias():
    text = NET + f"datasets:\n  val: [&v {{name: a, dataset: {TEST_SET}}}]\n  test: [*v]\n"
    opts = load_text(text, "exp.yml", ["datasets.test.0.name=b", "datasets.test.0.dataset.dataroot_lq=other"])
    assert opts.datasets.val[0].name == "a" and opts.datasets.val[0].dataset.kwargs["dataroot_lq"] == "lq"
    assert opts.datasets.test[0].name == "b" and opts.datasets.test[0].dataset.kwargs["dataroot_lq"] == "other"


def test_a_long_override_is_shortened_in_the_message():
    error = error_of(NET, ("name=" + "y" * 10_000,))
    assert error.source.startswith("--set name=yyy") and error.source.endswith("...") and len(str(error)) < 400


# -- parse_network: a weights file's network metadata --------------------------------------------


def test_parse_network_accepts_what_an_option_file_accepts(monkeypatch):
    opts = load_text(NET)
    metadata = to_plain(opts.network)

    def no_building(*args, **kwargs):
        raise AssertionError("parse_network built a module")

    monkeypatch.setattr(torch.nn.Module, "__init__", no_building)
    spec = parse_network(metadata, "w.pth")
    assert spec == opts.network and metadata == to_plain(opts.network)  # the mapping is left as it was
    big = dict(metadata, num_feat=1024, deformable_groups=8, num_extract_block=5, num_reconstruct_block=40)
    start = time.perf_counter()
    with pytest.raises(OptionsError, match="parameters"):
        parse_network(big, "w.pth")  # counted, not built
    assert time.perf_counter() - start < 0.5


@pytest.mark.parametrize(
    "metadata,key_path,message",
    [
        ({"type": "EDVR", "num_feat": 0}, "network.num_feat", "expected a value >= 1, got 0"),
        ({"type": "EDVR", "num_feat": 12}, "network.num_feat", "expected a multiple of deformable_groups (8)"),
        ({"type": "EDVR", "num_fet": 64}, "network.num_fet", "unknown key for EDVR (did you mean 'num_feat'?)"),
        ({"type": "EDVR", "center_frame_idx": 7}, "network.center_frame_idx", "expected a frame index < num_frame"),
        ({"type": "EDVR", "num_frame": "5"}, "network.num_frame", "expected an integer, got '5'"),
        ({"type": "EDVR", "hr_in": True}, "network.hr_in", "expected with_predeblur: true"),
        ({"num_feat": 64}, "network.type", "missing required key (one of EDVR)"),
        ({"type": "BasicVSR"}, "network.type", "unknown type 'BasicVSR'"),
        ([1, 2], "network", "expected a mapping with a 'type' key"),
    ],
)
def test_parse_network_errors_name_the_source_and_the_key(metadata, key_path, message):
    with pytest.raises(OptionsError) as info:
        parse_network(metadata, "experiments/x/models/net_g_5000.pth")
    assert info.value.source == "experiments/x/models/net_g_5000.pth" and info.value.key_path == key_path
    assert message in info.value.message
