"""prepare_reds on a miniature REDS tree, make_demo_data layout and determinism."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from data.resize import imresize
from data.storage import DataError, DiskStore, LmdbStore, read_clip_meta
from models.outputs import MANIFEST_NAME, OutputError
from options.cli import run
from scripts.create_lmdb import main as create_lmdb_main
from scripts.make_demo_data import CLIPS, VAL_CLIPS, VAL_SETS, make_demo_data
from scripts.make_demo_data import main as make_demo_main
from scripts.prepare_reds import main as prepare_reds_main
from scripts.prepare_reds import prepare_reds
from scripts.prepare_vimeo90k import main as prepare_vimeo90k_main
from tests.builders import demo_dataset, real_frames, reds_folder, write_clip_tree, write_reds_archives


def snapshot(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


ROOT = Path(__file__).resolve().parents[2]
TRAIN_CLIPS = ("000", "001", "011", "015", "020")


@pytest.fixture(params=["flat", "zip"])
def mini_reds(request, tmp_path) -> tuple[Path, str]:
    """A miniature REDS extracted flat or as the zips extract it, 3 real frames per clip."""
    frames = real_frames("carphone_pristine.mp4", 50, 3)
    return write_reds_archives(tmp_path / "REDS", request.param, frames, TRAIN_CLIPS, ("000", "001")), request.param


def test_prepare_reds_dry_run_changes_nothing(mini_reds, capsys):
    root, layout = mini_reds
    before = snapshot(root)
    prepare_reds_main([str(root), "--dry-run"])
    out = capsys.readouterr().out
    val_sharp = reds_folder(root, layout, "val", "sharp")
    assert f"[dry run] move {val_sharp / '000'} -> {root / 'train_sharp' / '240'}" in out
    val_lr = reds_folder(root, layout, "val", "sharp_bicubic") / "X4"
    assert f"move {val_lr / '001'} -> {root / 'train_sharp_bicubic' / 'X4' / '241'}" in out
    if layout == "zip":
        assert f"[dry run] move {root / 'train' / 'train_sharp'} -> {root / 'train_sharp'}" in out
    assert "meta_info_REDS4_test_GT.txt (4 clips)" in out
    assert snapshot(root) == before


def test_prepare_reds_gives_the_flat_layout_and_partitions(mini_reds):
    root, layout = mini_reds
    val_frame = (reds_folder(root, layout, "val", "sharp") / "001" / "00000000.png").read_bytes()
    before = snapshot(root)
    prepare_reds(root)
    assert not any(reds_folder(root, layout, "val", "sharp").iterdir())  # emptied folders stay
    assert (root / "train_sharp" / "241" / "00000000.png").read_bytes() == val_frame
    clips = ["000", "001", "011", "015", "020", "240", "241"]
    assert sorted(p.name for p in (root / "train_sharp").iterdir()) == clips
    assert sorted(p.name for p in (root / "train_sharp_bicubic" / "X4").iterdir()) == clips
    assert not (root / "train" / "train_sharp").exists()
    # renames only: every file is still there, under its new name
    after = snapshot(root)
    assert sorted(after.values()) == sorted([*before.values(), *(v.encode() for v in meta_texts(root).values())])
    meta = root / "meta_info"
    assert read_clip_meta(meta / "meta_info_REDS_GT.txt") == [(c, 3) for c in clips]
    assert (meta / "meta_info_REDS4_test_GT.txt").read_text() == "".join(
        f"{c} 3 (144,176,3)\n" for c in ("000", "011", "015", "020")
    )
    assert (meta / "meta_info_REDS_official_val_GT.txt").read_text() == "240 3 (144,176,3)\n241 3 (144,176,3)\n"

    # Idempotent: a second run moves nothing and rewrites identical meta info.
    log = prepare_reds(root)
    assert not any(line.startswith("move") for line in log)
    assert snapshot(root) == after

    # A re-extracted val clip is reported and left alone, never overwriting clip 240.
    write_clip_tree(reds_folder(root, layout, "val", "sharp"), {"000": real_frames("bikes.mp4", 0, 1)})
    log = prepare_reds(root)
    assert any(line.startswith("skip") and "240" in line for line in log)
    assert (reds_folder(root, layout, "val", "sharp") / "000" / "00000000.png").exists()
    assert DiskStore(root / "train_sharp").shape("240/00000000") == (144, 176, 3)


def meta_texts(root: Path) -> dict[str, str]:
    return {p.name: p.read_text() for p in (root / "meta_info").iterdir()}


def test_prepare_reds_merges_a_mixed_tree_clip_by_clip(tmp_path):
    """ROOT/train_sharp exists and ROOT/train/train_sharp too (e.g. an older run moved val clips there)."""
    frames = real_frames("carphone_pristine.mp4", 0, 2)
    root = tmp_path / "REDS"
    write_clip_tree(root / "train_sharp", {"000": frames})
    write_clip_tree(root / "train" / "train_sharp", {"000": frames[::-1], "001": frames, "240": frames})
    write_clip_tree(root / "val" / "val_sharp", {"000": frames})
    log = prepare_reds(root)
    assert f"move {root / 'train' / 'train_sharp' / '001'} -> {root / 'train_sharp' / '001'}" in log
    assert sorted(p.name for p in (root / "train_sharp").iterdir()) == ["000", "001", "240"]
    assert sorted(p.name for p in (root / "train" / "train_sharp").iterdir()) == ["000"]  # left in place
    assert (root / "val" / "val_sharp" / "000").is_dir()
    assert sum(line.startswith("skip") for line in log) == 2


@pytest.mark.parametrize("damage", ["gap", "lr_short", "bad_val_name"])
def test_prepare_reds_checks_every_clip_before_moving_anything(tmp_path, damage):
    frames = real_frames("carphone_pristine.mp4", 0, 4)
    root = write_reds_archives(tmp_path / "REDS", "zip", frames, TRAIN_CLIPS, ("000", "001"))
    if damage == "gap":
        (root / "val" / "val_sharp" / "001" / "00000002.png").unlink()
        message = r"val_sharp/001: the frame numbering has a gap: no frame numbered 2"
    elif damage == "lr_short":
        (root / "train" / "train_sharp_bicubic" / "X4" / "011" / "00000003.png").unlink()
        message = r"clip 011: the LR clip .*X4/011 has 3 frames, the GT clip .*train_sharp/011 4"
    else:
        write_clip_tree(root / "val" / "val_sharp", {"030": real_frames("carphone_pristine.mp4", 0, 1)})
        message = r"030: unexpected REDS validation clip name"
    before = snapshot(root)
    with pytest.raises(DataError, match=message):
        prepare_reds(root)
    assert snapshot(root) == before


def test_prepare_reds_needs_reds_folders(tmp_path):
    with pytest.raises(FileNotFoundError, match="neither train_sharp nor val_sharp"):
        prepare_reds(tmp_path / "empty")


def test_demo_dataset_layout(tmp_path_factory):
    demo = demo_dataset(tmp_path_factory)
    meta = read_clip_meta(demo / "meta_info_demo_GT.txt")
    assert [c for c, _ in meta] == [c.name for c in CLIPS] and all(n == 6 for _, n in meta)
    assert VAL_SETS == {"val": ("003",), "unseen": ("006",)}  # a scene of bikes.mp4; carphone, never trained on
    for name, clips in VAL_SETS.items():
        assert [c for c, _ in read_clip_meta(demo / f"meta_info_demo_{name}_GT.txt")] == list(clips)
    train = {c for c, _ in read_clip_meta(demo / "meta_info_demo_train_GT.txt")}
    assert train == {"000", "001", "002", "004", "005"} and train.isdisjoint(VAL_CLIPS)
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
    assert files_a == files_b and len(files_a) == 5 + 2 * 2 * len(CLIPS)
    with pytest.raises(OutputError, match="holds an earlier result") as excinfo:
        make_demo_main(["--out", str(a), "--max-frames", "1"])
    assert "--overwrite" in excinfo.value.hint
    make_demo_main(["--out", str(a), "--max-frames", "1", "--overwrite"])  # ours: replaced
    assert len(snapshot(a)) == 6 + 2 * len(CLIPS)
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "holiday.jpg").write_bytes(b"precious")
    with pytest.raises(OutputError, match="not written by vidrestore"):
        make_demo_main(["--out", str(tmp_path / "photos"), "--overwrite"])
    assert (tmp_path / "photos" / "holiday.jpg").read_bytes() == b"precious"


# ---------------------------------------------------------------- command lines: --help, one error line
SCRIPTS = ("prepare_reds.py", "prepare_vimeo90k.py", "create_lmdb.py", "train_recipe.py")


def one_error_line(main, argv: list[str], capsys) -> str:
    """Run ``main`` as the script does; it must exit 2 with exactly one ``error:`` line on stderr
    (what a terminal shows: progress bars rewrite their line with carriage returns, then vanish)."""
    assert run(main, argv) == 2
    shown = [line.rsplit("\r", 1)[-1].strip() for line in capsys.readouterr().err.split("\n")]
    shown = [line for line in shown if line]
    assert len(shown) == 1 and shown[0].startswith("error: "), shown
    return shown[0]


@pytest.mark.parametrize("script", SCRIPTS)
def test_help_shows_defaults_and_runs_nothing(script, tmp_path):
    frames = real_frames("carphone_pristine.mp4", 0, 1)
    root = write_reds_archives(tmp_path / "REDS", "zip", frames, ("000",), ("000",))
    before = snapshot(tmp_path)
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / script), "reds", str(root), str(root), "--help"],
                            cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "usage:" in result.stdout
    assert "(default: " in result.stdout or script == "prepare_reds.py"  # it has no option with a value
    assert snapshot(tmp_path) == before


def test_prepare_reds_bad_inputs(tmp_path, capsys):
    assert "neither train_sharp nor val_sharp" in one_error_line(prepare_reds_main, [str(tmp_path / "none")], capsys)
    frames = real_frames("carphone_pristine.mp4", 0, 1)
    root = write_reds_archives(tmp_path / "REDS", "flat", frames, ("000",), ("030",))
    assert "030: unexpected REDS validation clip name" in one_error_line(prepare_reds_main, [str(root)], capsys)


def test_prepare_vimeo90k_bad_inputs(tmp_path, capsys):
    err = one_error_line(prepare_vimeo90k_main, [str(tmp_path)], capsys)
    assert "'sequences' folder not found" in err
    (tmp_path / "sequences").mkdir()
    assert "neither sep_trainlist.txt nor sep_testlist.txt" in one_error_line(prepare_vimeo90k_main, [str(tmp_path)],
                                                                                capsys)
    (tmp_path / "sep_testlist.txt").write_text("00001/0001\n")
    err = one_error_line(prepare_vimeo90k_main, [str(tmp_path)], capsys)
    assert "im1.png: listed septuplet 00001/0001 is missing" in err
    with pytest.raises(SystemExit) as info:  # ranges are the parser's: usage and its error, status 2
        prepare_vimeo90k_main([str(tmp_path), "--workers", "-1"])
    assert info.value.code == 2 and "expected an integer >= 0" in capsys.readouterr().err


def test_create_lmdb_bad_inputs_and_never_replaces_other_data(tmp_path, capsys):
    frames = real_frames("carphone_pristine.mp4", 0, 1)
    tree = write_clip_tree(tmp_path / "frames", {"000": frames})
    assert "no such folder" in one_error_line(create_lmdb_main, [str(tmp_path / "none"), str(tmp_path / "o")], capsys)
    err = one_error_line(create_lmdb_main, [str(tree), str(tmp_path / "o"), "--center-only"], capsys)
    assert err == "error: --center-only needs --septuplet-list"
    precious = write_clip_tree(tmp_path / "precious", {"000": frames})
    before = snapshot(precious)
    err = one_error_line(create_lmdb_main, [str(tree), str(precious)], capsys)
    assert "precious exists; pass --overwrite to replace it" in err
    err = one_error_line(create_lmdb_main, [str(tree), str(precious), "--overwrite", "--workers", "0"], capsys)
    assert "precious is not an LMDB folder (it holds 000); refusing to replace it" in err
    assert snapshot(precious) == before
    assert run(create_lmdb_main, [str(tree), str(tmp_path / "x.lmdb"), "--workers", "0"]) == 0
    assert run(create_lmdb_main, [str(tree), str(tmp_path / "x.lmdb"), "--workers", "0", "--overwrite"]) == 0
