"""scripts/train_recipe.py (train_reds.sh / train_vimeo90k.sh): dry run, and the whole REDS recipe
end to end on miniature trees with the official folder names, made from real footage, extracted
flat and as the zips extract them (prepare_reds.py turns both into the flat layout)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.builders import real_frames, write_reds_archives

ROOT = Path(__file__).resolve().parents[2]
TINY = ["network.num_feat=8", "network.deformable_groups=2", "network.num_extract_block=1",
        "network.num_reconstruct_block=1"]
TRAIN_TINY = ["train.total_iter=2", "train.scheduler.periods=[2]", "train.scheduler.restart_weights=[1]",
              "train.tsa_iter=1", "datasets.train.dataset.gt_size=32", "datasets.train.batch_size_per_gpu=1",
              "datasets.train.num_worker_per_gpu=0", "datasets.train.dataset.dataset_enlarge_ratio=1",
              "datasets.val.0.num_worker=0", "logger.print_freq=1", "logger.save_checkpoint_freq=2"]


def recipe(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "scripts/train_recipe.py", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=900)


def mini_reds(root: Path, layout: str) -> Path:
    """REDS archive folders: train clips 000 001 011, val clip 000 (becomes 240); 5 real frames each."""
    frames = real_frames("carphone_pristine.mp4", 20, 5)
    return write_reds_archives(root, layout, frames, train=("000", "001", "011"), val=("000",))


def test_dry_run_prints_every_command_and_runs_nothing(tmp_path):
    result = recipe("reds", str(tmp_path), "--gpus", "8", "--model", "L", "--lmdb", "--dry-run")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    for step in ("prepare_reds.py", "create_lmdb.py", "edvr_l_wotsa_reds.yml", "edvr_l_reds.yml", "reds4.yml"):
        assert step in out
    assert "--nproc_per_node=8" in out and "net_g_600000.pth" in out
    assert list(tmp_path.iterdir()) == []  # nothing created
    vimeo = recipe("vimeo90k", str(tmp_path), "--gpus", "1", "--vid4", str(tmp_path / "Vid4"), "--dry-run")
    assert vimeo.returncode == 0 and "vimeo90k_t.yml" in vimeo.stdout and "vid4.yml" in vimeo.stdout


def test_bad_inputs_give_one_error_line_and_status_2(tmp_path):
    missing = recipe("reds", str(tmp_path / "none"), "--dry-run")
    assert (missing.returncode, missing.stderr) == (2, f"error: {tmp_path / 'none'}: no such folder\n")
    override = recipe("reds", str(tmp_path), "--set", "train.optim.lrr=1", "--dry-run")
    assert override.returncode == 2 and override.stderr.count("\n") == 1
    assert override.stderr.startswith("error: ") and "did you mean 'lr'" in override.stderr
    gpus = recipe("reds", str(tmp_path), "--gpus", "0")
    assert gpus.returncode == 2 and "--gpus: expected an integer >= 1, got '0'" in gpus.stderr
    # A failing step (prepare_reds on a folder without REDS) ends the recipe with its status.
    failed = recipe("reds", str(tmp_path))
    step_failed = ("error: step 1 (prepare REDS) failed with exit status 2; fix the cause and re-run the same "
                   "command: finished steps are skipped and training resumes")
    assert failed.returncode == 2 and failed.stderr.splitlines() == [
        f"error: {tmp_path}: neither train_sharp nor val_sharp found (directly or under train/, val/)", step_failed]
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
@pytest.mark.parametrize("layout, lmdb", [("flat", []), ("zip", ["--lmdb"])])
def test_reds_recipe_end_to_end_and_idempotent(tmp_path, layout, lmdb):
    root = mini_reds(tmp_path / "REDS", layout)
    common = [arg for s in TINY + [f"path.experiments_root={tmp_path / 'exp'}",
                                   f"path.results_root={tmp_path / 'results'}"] for arg in ("--set", s)]
    train_only = [arg for s in TRAIN_TINY for arg in ("--train-set", s)]
    first = subprocess.run(["bash", "scripts/train_reds.sh", str(root), "1", *lmdb, *common, *train_only],
                           cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    assert (root / "train_sharp" / "240").is_dir() and (root / "train_sharp_bicubic" / "X4" / "240").is_dir()
    stage1 = tmp_path / "exp" / "EDVR_M_woTSA_x4_SR_REDS"
    assert (stage1 / "models" / "net_g_2.pth").is_file()
    assert (tmp_path / "exp" / "EDVR_M_x4_SR_REDS" / "models" / "net_g_2.pth").is_file()
    trained_on = "train_sharp_with_val.lmdb" if lmdb else f"{root / 'train_sharp'}\n"
    assert trained_on in (stage1 / "options.yml").read_text()
    table = (tmp_path / "results" / "EDVR_M_x4_SR_REDS4" / "REDS4_EDVR.csv").read_text().splitlines()
    assert [row.split(",")[:2] for row in table] == [["clip", "frames"], ["000", "5"], ["011", "5"],
                                                     ["average over clips", "10"]]

    again = recipe("reds", str(root), *lmdb, *common, *train_only)
    assert again.returncode == 0, again.stderr
    assert again.stdout.count("(done: skipped)") == 4 + len(lmdb) * 2
