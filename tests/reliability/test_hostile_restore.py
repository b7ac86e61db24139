"""test.py --input with the outputs a hurried user types: nothing outside the output is touched,
an earlier result survives a failed or killed run, bad arguments get one line and exit 2."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import av
import numpy as np
import pytest
import torch

import test as test_script
from models.checkpoint import save_network
from models.edvr import EDVR
from models.outputs import MANIFEST_NAME
from models.restoration import sinks
from options import cli
from tests.builders import real_frames, write_clip_tree, write_video

ROOT = Path(__file__).resolve().parents[2]
TINY = dict(num_feat=8, deformable_groups=2, num_extract_block=1, num_reconstruct_block=1)


@pytest.fixture()
def project(tmp_path) -> Path:
    """A user's project: input frames, notes, and a tiny model, all of which must survive."""
    frames = [f[:32, :48] for f in real_frames("carphone_pristine.mp4", 40, 5)]
    write_clip_tree(tmp_path / "proj", {"frames": frames}, names="frame_{:d}")
    (tmp_path / "proj" / "notes.txt").write_text("my notes")
    torch.manual_seed(0)
    save_network(tmp_path / "proj" / "w.pth", EDVR(**TINY), network={"type": "EDVR", **TINY})
    return tmp_path / "proj"


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def restore(project: Path, *args) -> int:
    """test.py as the command line runs it: the exit status (output checked by the caller)."""
    argv = ["--model", str(project / "w.pth"), "--input", str(project / "frames"), *map(str, args)]
    try:
        return cli.run(test_script.main, argv)
    except SystemExit as exit_:  # argparse refuses an argument
        return exit_.code


@pytest.mark.parametrize("output", ["proj", "proj/frames", "proj/frames/out", ".", "..", "/"])
def test_outputs_that_are_or_hold_inputs_are_refused_untouched(project, monkeypatch, capsys, output):
    monkeypatch.chdir(project.parent)
    before = snapshot(project.parent)
    assert restore(project, "--output", output, "--overwrite") == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --output ") and "Traceback" not in err and len(err.splitlines()) <= 2
    assert snapshot(project.parent) == before


def test_a_folder_that_is_not_ours_is_never_replaced(project, tmp_path, capsys):
    theirs = tmp_path / "photos"
    theirs.mkdir()
    (theirs / "holiday.png").write_bytes(b"precious")
    for extra in ([], ["--overwrite"]):
        assert restore(project, "--output", theirs, *extra) == 2
        assert "not written by vidrestore" in capsys.readouterr().err
    assert snapshot(theirs) == {"holiday.png": b"precious"}


def test_overwrite_replaces_only_our_earlier_result(project, tmp_path, capsys):
    out = tmp_path / "out"
    assert restore(project, "--output", out) == 0
    first = snapshot(out)
    assert MANIFEST_NAME in first and sum(name.endswith(".png") for name in first) == 5
    assert restore(project, "--output", out) == 2  # exists: needs --overwrite
    assert "holds an earlier result" in capsys.readouterr().err
    (out / "mine.txt").write_text("added by the user")
    assert restore(project, "--output", out, "--overwrite") == 2
    assert "mine.txt" in capsys.readouterr().err and snapshot(out)["mine.txt"] == b"added by the user"
    (out / "mine.txt").unlink()
    assert restore(project, "--output", out, "--overwrite", "--compare", "1") == 0
    assert (out / "compare" / "frame_1.png").is_file() and not list(tmp_path.glob("out.*"))


def test_a_failed_run_leaves_the_earlier_result_intact(project, tmp_path, monkeypatch):
    out = tmp_path / "out"
    assert restore(project, "--output", out) == 0
    before = snapshot(out)
    calls = {"n": 0}
    real = sinks.write_png

    def fails_on_the_third_frame(path, rgb):
        calls["n"] += 1
        if calls["n"] == 3:
            raise OSError(28, "No space left on device", str(path))
        real(path, rgb)

    monkeypatch.setattr(sinks, "write_png", fails_on_the_third_frame)
    assert restore(project, "--output", out, "--overwrite") == 2
    assert snapshot(out) == before  # the frames done are kept for --resume (e.g. once space is freed)
    assert sorted(p.name for p in (tmp_path / "out.partial").glob("*.png")) == ["frame_0.png", "frame_1.png"]
    monkeypatch.setattr(sinks, "write_png", real)
    assert restore(project, "--output", out, "--overwrite", "--resume") == 0
    after = snapshot(out)
    assert not (tmp_path / "out.partial").exists() and sorted(after) == sorted(before)
    assert all(after[name] == before[name] for name in before if name.endswith(".png"))  # same frames


def test_kill_9_mid_run_leaves_the_earlier_result_and_the_next_run_recovers(project, tmp_path):
    out = tmp_path / "out"
    command = [sys.executable, str(ROOT / "test.py"), "--model", str(project / "w.pth"),
               "--input", str(project / "frames"), "--output", str(out)]
    subprocess.run(command, check=True, capture_output=True, cwd=ROOT)
    before = snapshot(out)
    process = subprocess.Popen(command + ["--overwrite"], cwd=ROOT, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    partial = tmp_path / "out.partial"
    deadline = time.monotonic() + 120
    while not list(partial.glob("*.png")) and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert snapshot(out) == before
    subprocess.run(command + ["--overwrite"], check=True, capture_output=True, cwd=ROOT)
    assert not partial.exists() and sorted(snapshot(out)) == sorted(before)


def test_a_partial_folder_we_did_not_create_is_refused(project, tmp_path, capsys):
    (tmp_path / "out.partial").mkdir()
    (tmp_path / "out.partial" / "keep.txt").write_text("x")
    assert restore(project, "--output", tmp_path / "out") == 2
    assert "out.partial: exists and was not created by vidrestore" in capsys.readouterr().err
    assert (tmp_path / "out.partial" / "keep.txt").read_text() == "x"


@pytest.mark.parametrize("args,message", [
    (["--batch", "0"], "--batch: expected an integer >= 1"),
    (["--batch", "-2"], "--batch: expected an integer >= 1"),
    (["--fps", "inf"], "--fps: expected a finite number > 0"),
    (["--fps", "nan"], "--fps: expected a finite number > 0"),
    (["--fps", "0"], "--fps: expected a finite number > 0"),
    (["--tile", "0"], "--tile: expected an integer >= 1"),
    (["--tile-overlap", "-4"], "--tile-overlap: expected an integer >= 0"),
    (["--cut-threshold", "-1"], "--cut-threshold: expected a finite number > 0"),
    (["--compare", "1,x"], "--compare: expected frame indices"),
    (["--compare", "-1"], "--compare: frame indices start at 0"),
])
def test_argument_ranges_are_checked_by_the_parser(project, tmp_path, capsys, args, message):
    assert restore(project, "--output", tmp_path / "out", *args) == 2
    assert message in capsys.readouterr().err and not (tmp_path / "out").exists()


@pytest.mark.parametrize("args,message", [
    (["--tile", "30"], "--tile 30 and --tile-overlap 32 must be multiples of 4"),
    (["--compare", "1", "--video", "v.mp4"], "--compare saves its panels into OUTPUT/compare: give --output too"),
    (["--batch", "2"], "give --output DIR (PNG frames) and/or --video FILE"),
])
def test_arguments_that_do_not_fit_together(project, tmp_path, capsys, args, message):
    extra = ["--output", tmp_path / "out"] if args[0] == "--tile" else []
    assert restore(project, *extra, *args) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_compare_indices_past_the_end_are_ignored_with_one_warning(project, tmp_path, capsys):
    assert restore(project, "--output", tmp_path / "out", "--compare", "0,7,99") == 0
    assert capsys.readouterr().out.count("--compare: ignoring 7, 99 (the input has frames 0-4)") == 1
    assert [p.name for p in (tmp_path / "out" / "compare").iterdir()] == ["frame_0.png"]


def test_video_outputs_never_replace_inputs(project, tmp_path, capsys):
    video = write_video(tmp_path / "in.mp4", [np.zeros((32, 48, 3), np.uint8)] * 5)
    original = video.read_bytes()
    argv = ["--model", str(project / "w.pth"), "--input", str(video), "--video", str(video), "--overwrite"]
    assert cli.run(test_script.main, argv) == 2
    assert "--video" in capsys.readouterr().err and video.read_bytes() == original
    assert restore(project, "--video", project / "frames" / "x.mp4") == 2
    assert "lies inside the input" in capsys.readouterr().err
    (tmp_path / "taken.mp4").write_bytes(b"keep")
    assert restore(project, "--video", tmp_path / "taken.mp4") == 2
    assert "exists" in capsys.readouterr().err and (tmp_path / "taken.mp4").read_bytes() == b"keep"


def test_user_errors_reach_the_terminal_as_one_line_without_traceback(project, tmp_path):
    result = subprocess.run([sys.executable, str(ROOT / "test.py"), "--model", str(tmp_path / "missing.pth"),
                             "--input", str(project / "frames"), "--output", str(tmp_path / "out")],
                            capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[0] == f"error: {tmp_path / 'missing.pth'}: no such weights file"
    assert "Traceback" not in result.stderr + result.stdout
    debug = subprocess.run([sys.executable, str(ROOT / "test.py"), "--model", str(tmp_path / "missing.pth"),
                            "--input", str(project / "frames"), "--output", str(tmp_path / "out")],
                           capture_output=True, text=True, cwd=ROOT, env={**os.environ, "VIDRESTORE_DEBUG": "1"})
    assert debug.returncode == 1 and "Traceback" in debug.stderr


def test_a_partial_folder_another_running_process_writes_is_left_alone(project, tmp_path, capsys):
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        partial = tmp_path / "out.partial"
        partial.mkdir()
        (partial / ".vidrestore-partial").write_text(f"{sleeper.pid}\nwritten by vidrestore\n")
        (partial / "frame_0.png").write_bytes(b"in progress")
        assert restore(project, "--output", tmp_path / "out") == 2
        assert f"another run (process {sleeper.pid}) is writing this output" in capsys.readouterr().err
        assert (partial / "frame_0.png").read_bytes() == b"in progress"
    finally:
        sleeper.kill()
        sleeper.wait()
    assert restore(project, "--output", tmp_path / "out") == 0  # its writer is gone: a stale folder of ours
    assert not partial.exists()


def bad_video_inputs(folder: Path) -> dict[str, Path]:
    """Video files a user may hand over that hold no usable video."""
    frames = [f[:32, :48] for f in real_frames("carphone_pristine.mp4", 40, 5)]
    whole = write_video(folder / "whole.mp4", frames)
    cut = folder / "cut.mp4"  # an MP4 cut short loses its index (written last): nothing can be read
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    corrupt = folder / "corrupt.mkv"
    corrupt.write_bytes(np.random.default_rng(1).integers(0, 256, 20000, np.uint8).tobytes())
    sound = write_video(folder / "sound.mkv", frames, audio_seconds=0.5, audio_encoder="libopus")
    audio_only = folder / "audio_only.mka"
    with av.open(str(sound)) as source, av.open(str(audio_only), "w") as target:
        stream = target.add_stream_from_template(source.streams.audio[0])
        for packet in source.demux(audio=0):
            if packet.size:
                packet.stream = stream
                target.mux(packet)
    return {"cut": cut, "corrupt": corrupt, "audio_only": audio_only, "whole": whole}


@pytest.mark.parametrize("case,extra,message", [
    ("cut", [], "cut.mp4: not a video file FFmpeg can read"),
    ("corrupt", [], "corrupt.mkv: not a video file FFmpeg can read"),
    ("audio_only", [], "audio_only.mka: holds no video stream (audio opus"),
    ("whole", ["--crf", "99"], "argument --crf: expected an integer from 0 to 63"),
    ("whole", ["--crf", "60"], "--crf 60: out of range for h264 (0-51"),
    ("whole", ["--codec", "vp8"], "argument --codec: invalid choice: 'vp8'"),
    ("whole", ["--codec", "ffv1", "--crf", "10"], "--crf: ffv1 is lossless"),
    ("whole", ["--pix-fmt", "yuv444p", "--codec", "av1"], "--pix-fmt yuv444p: libsvtav1 cannot encode it"),
])
def test_bad_video_inputs_and_settings_get_one_error_line(project, tmp_path, capsys, case, extra, message):
    video = bad_video_inputs(tmp_path)[case]
    argv = ["--model", str(project / "w.pth"), "--input", str(video), "--video", str(tmp_path / "out.mkv"), *extra]
    try:
        status = cli.run(test_script.main, argv)
    except SystemExit as exit_:  # argparse refuses an argument
        status = exit_.code
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if "error: " in line]  # "error: ..." or argparse's "PROG: error: ..."
    assert status == 2 and len(errors) == 1 and message in errors[0], err
    assert "Traceback" not in err and not list(tmp_path.glob("out.mkv*"))
