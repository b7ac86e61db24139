"""REDS / Vimeo-90K training datasets, test datasets and the registry, on real footage."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch

from data.datasets import DATASETS, build_dataset
from data.reds import REDSDataset
from data.resize import imresize, imresize_torch
from data.storage import DataError, DiskStore
from data.transforms import temporal_indices
from data.video_test import VideoTestDataset, Vimeo90KTestDataset
from data.vimeo90k import Vimeo90KDataset
from scripts.create_lmdb import main as create_lmdb_main
from scripts.prepare_vimeo90k import prepare_vimeo90k
from tests.builders import real_frames, write_clip_tree, write_pair, write_png



def demo_reds(demo: Path, backend: str = "disk", **kwargs) -> REDSDataset:
    roots = {
        "disk": ("train_sharp", "train_sharp_bicubic/X4"),
        "lmdb": ("train_sharp.lmdb", "train_sharp_bicubic_X4.lmdb"),
    }
    gt, lq = roots[backend]
    options = dict(
        dataroot_gt=demo / gt,
        dataroot_lq=demo / lq,
        meta_info_file=demo / "meta_info_demo_train_GT.txt",
        val_partition=None,
        num_frame=5,
        gt_size=64,
        scale=4,
    )
    return REDSDataset(**{**options, **kwargs})


def assert_gt_matches_lq(gt: torch.Tensor, lq_center: torch.Tensor, scale: int = 4) -> None:
    """GT crop downscaled with MATLAB bicubic ~= the LR crop, in the interior (the kernel reaches 2 LR px)."""
    down = imresize_torch(gt.double(), 1 / scale).clamp(0, 1).float()  # stored LR is clipped uint8
    diff = (down - lq_center)[:, 2:-2, 2:-2].abs()
    assert float(diff.max()) < 1.5 / 255, float(diff.max() * 255)


@pytest.mark.parametrize("backend", ["disk", "lmdb"])
def test_reds_items_shapes_range_key_alignment(demo, backend):
    ds = demo_reds(demo, backend, interval_list=[1, 2], random_reverse=True)
    train_clips = {
        line.split()[0] for line in (demo / "meta_info_demo_train_GT.txt").read_text().splitlines()
    }
    assert set(ds.clips) == train_clips and len(ds) == 6 * len(train_clips)
    random.seed(0)
    for index in range(0, len(ds), 3):
        item = ds[index]
        assert item["lq"].shape == (5, 3, 16, 16) and item["gt"].shape == (3, 64, 64)
        assert item["lq"].dtype == item["gt"].dtype == torch.float32
        assert 0 <= float(item["lq"].min()) and float(item["gt"].max()) <= 1
        clip, frame = item["key"].split("/")
        assert clip in train_clips and len(frame) == 8
        assert_gt_matches_lq(item["gt"], item["lq"][2])


def test_reds_disk_and_lmdb_give_identical_items(demo):
    disk, lmdb = demo_reds(demo, "disk"), demo_reds(demo, "lmdb")
    for index in (0, 7, 20):
        random.seed(index)
        a = disk[index]
        random.seed(index)
        b = lmdb[index]
        assert a["key"] == b["key"] and torch.equal(a["lq"], b["lq"]) and torch.equal(a["gt"], b["gt"])


def test_reds_cached_frames_give_identical_items_and_decode_each_frame_once(demo, monkeypatch):
    plain, cached = demo_reds(demo, "disk"), demo_reds(demo, "disk", cache_frames=True)
    decoded = []
    read = cached.gt_store.store.read
    monkeypatch.setattr(cached.gt_store.store, "read", lambda key: decoded.append(key) or read(key))
    for index in (0, 7, 0, 7, 20):
        random.seed(index)
        a = plain[index]
        random.seed(index)
        b = cached[index]
        assert a["key"] == b["key"] and torch.equal(a["lq"], b["lq"]) and torch.equal(a["gt"], b["gt"])
        b["gt"].fill_(0)  # an item is the caller's to modify: the cache keeps its own copy
    assert len(decoded) == len(set(decoded)) == 3  # items 0, 7 and 20: each GT frame decoded once


def test_reds_neighbours_follow_interval_and_stay_in_clip(demo):
    ds = demo_reds(demo, interval_list=[2], num_frame=3)
    read = ds.lq_store.read
    seen: list[str] = []
    ds.lq_store.read = lambda key: (seen.append(key), read(key))[1]
    random.seed(1)
    for index in range(len(ds)):
        seen.clear()
        item = ds[index]
        clip, frame = item["key"].split("/")
        assert [k.split("/")[0] for k in seen] == [clip] * 3
        assert [int(k.split("/")[1]) for k in seen] == [int(frame) - 2, int(frame), int(frame) + 2]


@pytest.fixture(scope="module")
def reds_like(tmp_path_factory) -> tuple[Path, Path]:
    """Clips 000, 001, 011 (000 and 011 are in REDS4) of 6 real 144x176 frames; 011 repeats one frame."""
    frames = real_frames("carphone_pristine.mp4", 10, 12)
    clips = {"000": frames[:6], "001": frames[6:], "011": [frames[3]] * 6}
    return write_pair(tmp_path_factory.mktemp("reds"), clips)


def test_reds_excludes_the_validation_partition(reds_like):
    gt, lq = reds_like
    ds = REDSDataset(gt, lq, val_partition="REDS4", gt_size=32)
    assert list(ds.clips) == ["001"] and len(ds) == 6
    assert len(REDSDataset(gt, lq, val_partition=None, gt_size=32, dataset_enlarge_ratio=3)) == 54
    with pytest.raises(ValueError, match="val_partition"):
        REDSDataset(gt, lq, val_partition="REDS5")


def test_reds_augmentation_is_identical_across_frames_and_gt(reds_like):
    gt, lq = reds_like
    ds = REDSDataset(gt, lq, val_partition=None, gt_size=64, num_frame=5)
    random.seed(2)
    shapes = set()
    for _ in range(12):
        item = ds[12 + random.randrange(6)]  # clip 011: the same frame six times
        assert item["key"].startswith("011/")
        for t in range(5):
            assert torch.equal(item["lq"][t], item["lq"][2])
        assert_gt_matches_lq(item["gt"], item["lq"][2])
        shapes.add(item["gt"].numpy().tobytes()[:64])
    assert len(shapes) > 1


def test_reds_scale_mismatch_names_the_clip(tmp_path):
    frames = real_frames("carphone_pristine.mp4", 0, 5)
    gt = write_clip_tree(tmp_path / "gt", {"003": frames})
    lq = write_clip_tree(tmp_path / "lq", {"003": [imresize(f, 0.5) for f in frames]})
    ds = REDSDataset(gt, lq, val_partition=None, gt_size=32)
    with pytest.raises(DataError, match=r"gt\): key '003/0000000\d' \(.*\.png\): GT frame is 176x144 but LR frame 88x72"):
        ds[0]


def test_reds_missing_lr_clip_and_short_clip(tmp_path):
    frames = real_frames("carphone_pristine.mp4", 0, 5)
    gt = write_clip_tree(tmp_path / "gt", {"003": frames, "004": frames[:2]})
    lq = write_clip_tree(tmp_path / "lq", {"003": [imresize(f, 0.25) for f in frames]})
    with pytest.raises(ValueError, match=r"clip '004' has 2 frames; num_frame=5 needs 5"):
        REDSDataset(gt, lq, val_partition=None)
    with pytest.raises(DataError, match=r"frame '004/00000000' listed for clip '004' is missing"):
        REDSDataset(gt, lq, val_partition=None, num_frame=1)


# ---------------------------------------------------------------- Vimeo-90K
@pytest.fixture(scope="module")
def vimeo(tmp_path_factory) -> Path:
    """vimeo_septuplet/ with 2 septuplets of real frames; LR made by prepare_vimeo90k."""
    root = tmp_path_factory.mktemp("vimeo") / "vimeo_septuplet"
    frames = real_frames("carphone_pristine.mp4", 30, 14)
    for n, name in enumerate(("00001/0001", "00002/0007")):
        for j in range(7):
            write_png(root / "sequences" / name / f"im{j + 1}.png", frames[7 * n + j])
    (root / "sep_trainlist.txt").write_text("00001/0001\n00002/0007\n")
    (root / "sep_testlist.txt").write_text("00002/0007\n")
    prepare_vimeo90k(root, lr_root=root.parent / "lr" / "sequences", workers=0)
    return root


def test_prepare_vimeo90k_meta_and_lr(vimeo):
    meta = (vimeo / "meta_info_Vimeo90K_train_GT.txt").read_text().splitlines()
    assert meta == ["00001/0001 7 (144,176,3)", "00002/0007 7 (144,176,3)"]
    lr = DiskStore(vimeo.parent / "lr" / "sequences")
    assert lr.shape("00002/0007/im7") == (36, 44, 3)
    hr = DiskStore(vimeo / "sequences").read("00002/0007/im7")
    np.testing.assert_array_equal(lr.read("00002/0007/im7"), imresize(hr, 0.25))
    again = prepare_vimeo90k(vimeo, lr_root=vimeo.parent / "lr" / "sequences", workers=0)
    assert any(line.startswith("make 0 LR frames") for line in again)


def test_vimeo90k_training_items(vimeo):
    ds = Vimeo90KDataset(
        vimeo / "sequences",
        vimeo.parent / "lr" / "sequences",
        vimeo / "sep_trainlist.txt",
        num_frame=5,
        gt_size=32,
        dataset_enlarge_ratio=2,
    )
    assert len(ds) == 4
    read = ds.lq_store.read
    seen: list[str] = []
    ds.lq_store.read = lambda key: (seen.append(key), read(key))[1]
    random.seed(4)
    item = ds[1]
    assert (
        item["key"] == "00002/0007" and item["lq"].shape == (5, 3, 8, 8) and item["gt"].shape == (3, 32, 32)
    )
    assert sorted(seen) == [f"00002/0007/im{j}" for j in range(2, 7)]
    with pytest.raises(ValueError, match="odd and <= 7"):
        Vimeo90KDataset(
            vimeo / "sequences", vimeo.parent / "lr" / "sequences", vimeo / "sep_trainlist.txt", num_frame=9
        )


def test_vimeo90k_test_dataset_centre_frame(vimeo):
    ds = Vimeo90KTestDataset(
        vimeo.parent / "lr" / "sequences", vimeo / "sep_testlist.txt", dataroot_gt=vimeo / "sequences"
    )
    assert len(ds) == 1
    item = ds[0]
    assert item["lq"].shape == (7, 3, 36, 44) and item["gt"].shape == (3, 144, 176)
    assert (item["key"], item["clip"], item["frame_idx"]) == ("00002/0007", "00002", 3)
    assert_gt_matches_lq(item["gt"], item["lq"][3])


# ---------------------------------------------------------------- whole-clip test dataset
def test_video_test_dataset_every_frame_with_padding(demo):
    ds = VideoTestDataset(
        demo / "train_sharp_bicubic" / "X4",
        demo / "train_sharp",
        clips=["003", "006"],
        num_frame=5,
        padding="reflection_circle",
    )
    assert list(ds.clips) == ["003", "006"] and len(ds) == 12
    lr = DiskStore(demo / "train_sharp_bicubic" / "X4")
    for index in (0, 5, 6):
        item = ds[index]
        clip, i = item["clip"], item["frame_idx"]
        assert item["key"] == f"{clip}/{i:08d}" and item["num_frames"] == 6
        window = temporal_indices(i, 6, 5, "reflection_circle")
        want = (
            torch.stack([torch.from_numpy(lr.read(f"{clip}/{j:08d}")).permute(2, 0, 1) for j in window]) / 255
        )
        assert torch.allclose(item["lq"], want)
        assert item["window"].tolist() == window
        assert item["gt"].shape[1:] == (item["lq"].shape[2] * 4, item["lq"].shape[3] * 4)
    no_gt = VideoTestDataset(demo / "train_sharp_bicubic" / "X4", clips=["006"], padding="replicate")
    assert "gt" not in no_gt[0] and len(no_gt) == 6


def test_registry_builds_by_name(demo):
    ds = build_dataset(
        "VideoTestDataset", dataroot_lq=str(demo / "train_sharp_bicubic_X4.lmdb"), clips=["003"]
    )
    assert len(ds) == 6 and set(DATASETS) >= {"REDSDataset", "Vimeo90KDataset", "VideoFolderDataset"}
    with pytest.raises(KeyError, match="unknown dataset type 'REDS'.*REDSDataset"):
        build_dataset("REDS")
    with pytest.raises(TypeError):
        build_dataset("REDSDataset", dataroot_gt="x", dataroot_lq="y", gt_sz=3)


def test_dataloader_with_workers_on_lmdb(demo):
    ds = demo_reds(demo, "lmdb")
    loader = torch.utils.data.DataLoader(ds, batch_size=4, num_workers=2, shuffle=True)
    batch = next(iter(loader))
    assert batch["lq"].shape == (4, 5, 3, 16, 16) and len(batch["key"]) == 4


def test_vimeo90k_lmdbs_from_create_lmdb_match_disk(vimeo, tmp_path):
    """GT LMDB with only im4 and LR LMDB with im1..im7 (BasicSR keys 00001/0001/im4) read like the folders."""
    lr_root = vimeo.parent / "lr" / "sequences"
    listing = ["--septuplet-list", str(vimeo / "sep_trainlist.txt"), "--workers", "0"]
    create_lmdb_main([str(vimeo / "sequences"), str(tmp_path / "gt.lmdb"), *listing, "--center-only"])
    create_lmdb_main([str(lr_root), str(tmp_path / "lr.lmdb"), *listing])
    assert (tmp_path / "gt.lmdb" / "meta_info.txt").read_text().splitlines() == [
        "00001/0001/im4.png (144,176,3) -1",
        "00002/0007/im4.png (144,176,3) -1",
    ]
    options = dict(meta_info_file=vimeo / "sep_trainlist.txt", num_frame=7, gt_size=32, random_reverse=True)
    disk = Vimeo90KDataset(vimeo / "sequences", lr_root, **options)
    lmdb = Vimeo90KDataset(tmp_path / "gt.lmdb", tmp_path / "lr.lmdb", **options)
    for index in range(2):
        random.seed(index)
        a = disk[index]
        random.seed(index)
        b = lmdb[index]
        assert a["key"] == b["key"] and torch.equal(a["lq"], b["lq"]) and torch.equal(a["gt"], b["gt"])
