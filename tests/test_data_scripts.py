"""prepare_reds on a miniature REDS tree, make_demo_data layout and determinism."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from models.outputs import MANIFEST_NAME, OutputError

from data.resize import imresize
from data.storage import DiskStore, LmdbStore, read_clip_meta
from scripts.make_demo_data import CLIPS, VAL_CLIPS, make_demo_data
from scripts.make_demo_data import main as make_demo_main
from scripts.prepare_reds import main as prepare_reds_main
from scripts.prepare_reds import prepare_reds
from tests.data.builders import demo_dataset, real_frames, write_clip_tree


def snapshot(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def mini_reds(tmp_path) -> Path:
    """Official REDS folder names, 3 real frames per clip: train 000 001 011 015 020, val 000 001."""
    frames = real_frames("carphone_pristine.mp4", 50, 3)
    lr = [imresize(f, 0.25) for f in frames]
    root = tmp_path / "REDS"
    train = ["000", "001", "011", "015", "020"]
    write_clip_tree(root / "train_sharp", {c: frames for c in train})
    write_clip_tree(root / "train_sharp_bicubic" / "X4", {c: lr for c in train})
    write_clip_tree(root / "val_sharp", {c: frames[::-1] for c in ("000", "001")})
    write_clip_tree(root / "val_sharp_bicubic" / "X4", {c: lr[::-1] for c in ("000", "001")})
    return root


def test_prepare_reds_dry_run_changes_nothing(mini_reds, capsys):
    before = snapshot(mini_reds)
    prepare_reds_main([str(mini_reds), "--dry-run"])
    out = capsys.readouterr().out
    assert f"[dry run] move {mini_reds / 'val_sharp' / '000'} -> {mini_reds / 'train_sharp' / '240'}" in out
    assert (
        f"move {mini_reds / 'val_sharp_bicubic' / 'X4' / '001'} -> "
        f"{mini_reds / 'train_sharp_bicubic' / 'X4' / '241'}" in out
    )
    assert "meta_info_REDS4_test_GT.txt (4 clips)" in out
    assert snapshot(mini_reds) == before


def test_prepare_reds_moves_val_clips_and_writes_partitions(mini_reds):
    val_frame = (mini_reds / "val_sharp" / "001" / "00000000.png").read_bytes()
    prepare_reds(mini_reds)
    assert not any((mini_reds / "val_sharp").iterdir())
    assert (mini_reds / "train_sharp" / "241" / "00000000.png").read_bytes() == val_frame
    assert sorted(p.name for p in (mini_reds / "train_sharp_bicubic" / "X4").iterdir()) == [
        "000",
        "001",
        "011",
        "015",
        "020",
        "240",
        "241",
    ]
    meta = mini_reds / "meta_info"
    assert read_clip_meta(meta / "meta_info_REDS_GT.txt") == [
        (c, 3) for c in ("000", "001", "011", "015", "020", "240", "241")
    ]
    assert (meta / "meta_info_REDS4_test_GT.txt").read_text() == "".join(
        f"{c} 3 (144,176,3)\n" for c in ("000", "011", "015", "020")
    )
    assert (
        meta / "meta_info_REDS_official_val_GT.txt"
    ).read_text() == "240 3 (144,176,3)\n241 3 (144,176,3)\n"

    # Idempotent: a second run moves nothing and rewrites identical meta info.
    after_first = snapshot(mini_reds)
    log = prepare_reds(mini_reds)
    assert not any(line.startswith("move") for line in log)
    assert snapshot(mini_reds) == after_first

    # A re-extracted val clip is reported and left alone, never overwriting clip 240.
    write_clip_tree(mini_reds / "val_sharp", {"000": real_frames("bikes.mp4", 0, 1)})
    log = prepare_reds(mini_reds)
    assert any(line.startswith("skip") and "240" in line for line in log)
    assert (mini_reds / "val_sharp" / "000" / "00000000.png").exists()
    assert DiskStore(mini_reds / "train_sharp").shape("240/00000000") == (144, 176, 3)


def test_prepare_reds_zip_layout_and_bad_names(tmp_path):
    frames = real_frames("carphone_pristine.mp4", 0, 2)
    root = tmp_path / "REDS"
    write_clip_tree(root / "train" / "train_sharp", {"000": frames})
    write_clip_tree(root / "val" / "val_sharp", {"029": frames})
    prepare_reds(root)
    assert (root / "train" / "train_sharp" / "269" / "00000001.png").is_file()
    write_clip_tree(root / "val" / "val_sharp", {"030": frames})
    with pytest.raises(ValueError, match="030: unexpected REDS validation clip name"):
        prepare_reds(root)
    with pytest.raises(FileNotFoundError, match="neither train_sharp nor val_sharp"):
        prepare_reds(tmp_path / "empty")


def test_demo_dataset_layout(tmp_path_factory):
    demo = demo_dataset(tmp_path_factory)
    meta = read_clip_meta(demo / "meta_info_demo_GT.txt")
    assert [c for c, _ in meta] == [c.name for c in CLIPS] and all(n == 6 for _, n in meta)
    assert [c for c, _ in read_clip_meta(demo / "meta_info_demo_val_GT.txt")] == list(VAL_CLIPS)
    train = {c for c, _ in read_clip_meta(demo / "meta_info_demo_train_GT.txt")}
    assert train.isdisjoint(VAL_CLIPS) and len(train) == len(CLIPS) - len(VAL_CLIPS)
    hr, lr = DiskStore(demo / "train_sharp"), DiskStore(demo / "train_sharp_bicubic" / "X4")
    for clip in ("000", "006"):
        h, w, _ = hr.shape(f"{clip}/00000005")
        assert h % 16 == 0 and w % 16 == 0 and lr.shape(f"{clip}/00000005") == (h // 4, w // 4, 3)
        np.testing.assert_array_equal(
            lr.read(f"{clip}/00000005"), imresize(hr.read(f"{clip}/00000005"), 0.25)
        )
    assert hr.shape("000/00000000") == (272, 640, 3) and hr.shape("006/00000000") == (144, 176, 3)
    np.testing.assert_array_equal(
        LmdbStore(demo / "train_sharp.lmdb").read("003/00000002"), hr.read("003/00000002")
    )
    assert not hr.read("000/00000000").std() == 0  # real footage, not a blank frame


def test_demo_data_is_deterministic_and_not_overwritten(tmp_path):
    a = make_demo_data(tmp_path / "a", max_frames=2, progress=False)
    b = make_demo_data(tmp_path / "b", max_frames=2, progress=False)
    files_a, files_b = snapshot(a), snapshot(b)
    assert files_a.pop(MANIFEST_NAME) and files_b.pop(MANIFEST_NAME)  # what was written, and when
    assert files_a == files_b and len(files_a) == 4 + 2 * 2 * len(CLIPS)
    with pytest.raises(OutputError, match="holds an earlier result") as excinfo:
        make_demo_main(["--out", str(a), "--max-frames", "1"])
    assert "--overwrite" in excinfo.value.hint
    make_demo_main(["--out", str(a), "--max-frames", "1", "--overwrite"])  # ours: replaced
    assert len(snapshot(a)) == 5 + 2 * len(CLIPS)
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "holiday.jpg").write_bytes(b"precious")
    with pytest.raises(OutputError, match="not written by vidrestore"):
        make_demo_main(["--out", str(tmp_path / "photos"), "--overwrite"])
    assert (tmp_path / "photos" / "holiday.jpg").read_bytes() == b"precious"
