"""scripts/export.py and running its exports: BasicSR weights exported with the README's command and
restored with ONNX Runtime by test.py on real footage at two sizes, as the PyTorch network does;
evaluation with an ONNX model; .pt2 programs; argument errors; the PyTorch paths never import onnx."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest
import torch

import test as test_script
from models.checkpoint import CheckpointError, save_network
from models.edvr import EDVR
from models.outputs import OutputError
from ops.dcn.onnx_export import last_opset
from options import cli
from options.cli import UsageError
from scripts.export import main as export_main
from tests.builders import (
    TINY_EDVR,
    real_frames,
    spread_offsets,
    tiny_edvr,
    write_clip_tree,
    write_train_options,
)

ROOT = Path(__file__).resolve().parents[2]


def export(*args) -> int:
    return export_main([str(a) for a in args])


def restore(*args) -> dict:
    return test_script.main([str(a) for a in args])


def read_pngs(folder: Path) -> dict[str, np.ndarray]:
    return {p.name: cv2.imread(str(p)).astype(int) for p in sorted(folder.glob("*.png"))}


def lr_clip(root: Path, name: str, size: tuple[int, int], start: int = 40, count: int = 6) -> Path:
    """A folder of ``count`` real frames (carphone) shrunk to ``size`` (w, h) as a camera's LR footage."""
    frames = [cv2.resize(f, size, interpolation=cv2.INTER_AREA)
              for f in real_frames("carphone_pristine.mp4", start, count)]
    write_clip_tree(root, {name: frames})
    return root / name


@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory) -> Path:
    """A tiny TSA EDVR of ours (architecture recorded), offsets of a trained network's range."""
    path = tmp_path_factory.mktemp("weights") / "tiny.pth"
    save_network(path, spread_offsets(tiny_edvr(with_tsa=True)), network={"type": "EDVR", **TINY_EDVR})
    return path


@pytest.fixture(scope="module")
def tiny_onnx(tiny_weights) -> Path:
    out = tiny_weights.with_suffix(".onnx")
    assert export("--model", tiny_weights, "--out", out) == 0
    return out


@pytest.mark.slow
def test_basicsr_edvr_m_exported_with_the_readme_command_restores_real_footage_as_pytorch(tmp_path):
    """EDVR-M (real size) in BasicSR's format, exported by the README's command in its own process,
    restores two clips of real footage (one tiled, one batched, both padded) with ONNX Runtime as the
    PyTorch network restores them: 8-bit outputs equal up to one level of rounding."""
    torch.manual_seed(3)
    weights = tmp_path / "EDVR_M_basicsr.pth"
    torch.save({"params": spread_offsets(EDVR()).state_dict()}, weights)
    model = tmp_path / "edvr.onnx"
    command = [sys.executable, "scripts/export.py", "--model", str(weights), "--out", str(model)]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "4 DeformConv nodes" in result.stdout and "EDVR x4, 5 frames (centre 2)" in result.stdout

    for name, size, extra in [("a", (62, 46), ["--tile", "32", "--tile-overlap", "8"]),
                              ("b", (44, 34), ["--batch", "2", "--scene-cuts", "auto"])]:
        clip = lr_clip(tmp_path / "lr", name, size, count=5)  # the least a 5-frame window pads
        restore("--model", model, "--input", clip, "--output", tmp_path / f"onnx_{name}", *extra)
        restore("--model", weights, "--input", clip, "--output", tmp_path / f"torch_{name}", *extra)
        ours, theirs = read_pngs(tmp_path / f"onnx_{name}"), read_pngs(tmp_path / f"torch_{name}")
        assert list(ours) == list(theirs) and len(ours) == 5
        for key in ours:
            assert ours[key].shape == (size[1] * 4, size[0] * 4, 3)
            assert np.abs(ours[key] - theirs[key]).max() <= 1, key


def test_evaluation_with_an_onnx_model_scores_as_its_weights(demo, tiny_weights, tiny_onnx, tmp_path):
    opts = write_train_options(tmp_path / "t.yml", demo, tmp_path / "exp")
    by_weights = test_script.main(["-opt", str(opts), "--set", f"path.pretrain_network_g={tiny_weights}"])
    by_onnx = test_script.main(["-opt", str(opts), "--set", f"path.pretrain_network_g={tiny_onnx}",
                                "--bicubic"])
    assert [r.name for r in by_onnx] == ["demo_val", "demo_val"]
    for metric in ("psnr",):
        assert abs(by_onnx[0].mean(metric) - by_weights[0].mean(metric)) < 1e-3
    with pytest.raises(CheckpointError, match="num_feat=8 in the export but 16 in the options"):
        test_script.main(["-opt", str(opts), "--set", f"path.pretrain_network_g={tiny_onnx}",
                          "--set", "network.num_feat=16"])


def test_a_pt2_program_from_the_command_line(tiny_weights, tmp_path, capsys):
    out = tmp_path / "edvr.pt2"
    assert export("--model", tiny_weights, "--out", out) == 0
    assert "torch.export program, max |program - PyTorch|" in capsys.readouterr().out
    net = EDVR(**TINY_EDVR)
    net.load_state_dict(torch.load(tiny_weights, weights_only=True)["params"])
    lq = torch.rand(2, 5, 3, 24, 36)
    with torch.no_grad():
        assert (torch.export.load(out).module()(lq) - net.eval()(lq)).abs().max() <= 1e-4


@pytest.mark.slow
def test_an_aot_inductor_package_runs_with_the_op_library_loaded(tiny_weights, tmp_path):
    """AOTInductor compiles the graph to C++ but calls our op through the dispatcher: the package
    runs where the op library is loaded (here: loaded by the export), and does not contain it."""
    out = tmp_path / "edvr_aoti.pt2"
    assert export("--model", tiny_weights, "--out", out, "--aoti") == 0
    net = EDVR(**TINY_EDVR)
    net.load_state_dict(torch.load(tiny_weights, weights_only=True)["params"])
    lq = torch.rand(1, 5, 3, 32, 28)
    with torch.no_grad():
        assert (torch._inductor.aoti_load_package(str(out))(lq) - net.eval()(lq)).abs().max() <= 1e-4


def test_export_and_onnx_restore_errors(tiny_weights, tiny_onnx, tmp_path):
    with pytest.raises(UsageError, match="name an .onnx file"):
        export("--model", tiny_weights, "--out", tmp_path / "model.txt")
    with pytest.raises(UsageError, match="--aoti makes an AOTInductor package"):
        export("--model", tiny_weights, "--out", tmp_path / "m.onnx", "--aoti")
    with pytest.raises(UsageError, match="--opset is for ONNX exports"):
        export("--model", tiny_weights, "--out", tmp_path / "m.pt2", "--opset", "19")
    for opset in ("18", str(last_opset() + 1), "x"):  # below DeformConv, beyond the exporter, not a number
        with pytest.raises(SystemExit) as exited:
            export("--model", tiny_weights, "--out", tmp_path / "m.onnx", "--opset", opset)
        assert exited.value.code == 2
    with pytest.raises(OutputError, match="exists"):
        export("--model", tiny_weights, "--out", tiny_onnx)
    (tmp_path / "folder.onnx").mkdir()
    with pytest.raises(OutputError, match="is a folder"):
        export("--model", tiny_weights, "--out", tmp_path / "folder.onnx", "--overwrite")

    clip = lr_clip(tmp_path / "lr", "clip", (40, 32), count=3)
    with pytest.raises(UsageError, match="an ONNX model runs in float32"):
        restore("--model", tiny_onnx, "--input", clip, "--output", tmp_path / "out", "--bf16")
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"\x08\x01garbage" * 64)
    with pytest.raises(CheckpointError, match="ONNX Runtime cannot load it"):
        restore("--model", garbage, "--input", clip, "--output", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_one_line_errors_from_the_command_line(tiny_weights, tmp_path):
    out = tmp_path / "model.onnx.txt"
    command = [sys.executable, "scripts/export.py", "--model", str(tiny_weights), "--out", str(out)]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"error: --out {out}: name an .onnx file (ONNX) or a .pt2 file (torch.export)"]


def onnx_variant(source: Path, out: Path, change) -> Path:
    model = onnx.load(str(source))
    change(model)
    onnx.save(model, str(out))
    return out


def as_mmcv_op(model) -> None:
    """DeformConv as mmcv's custom op: what a runtime without the standard operator is asked to run."""
    for node in model.graph.node:
        if node.op_type == "DeformConv":
            node.domain, node.op_type = "mmcv", "MMCVModulatedDeformConv2d"
    model.opset_import.append(onnx.helper.make_opsetid("mmcv", 1))


def without_metadata(model) -> None:
    del model.metadata_props[:]


def at_opset_18(model) -> None:  # declared before DeformConv existed
    model.opset_import[0].version = 18


@pytest.mark.parametrize("change, message", [
    (as_mmcv_op, r"ONNX Runtime cannot load it \(.*mmcv:MMCVModulatedDeformConv2d.* is not a registered"),
    (without_metadata, r"its metadata props have no 'scale'; it is not a model exported by vidrestore"),
    (at_opset_18, r"ONNX Runtime cannot load it \(.*INVALID_GRAPH"),
])
def test_an_onnx_model_that_cannot_run_is_one_error_line(tiny_onnx, tmp_path, capsys, change, message):
    model = onnx_variant(tiny_onnx, tmp_path / "model.onnx", change)
    clip = lr_clip(tmp_path / "lr", "clip", (40, 32), count=5)
    status = cli.run(test_script.main, ["--model", str(model), "--input", str(clip), "--output",
                                        str(tmp_path / "out")])
    error, hint = capsys.readouterr().err.strip().splitlines()
    assert status == 2 and re.fullmatch(f"error: {re.escape(str(model))}: {message}.*", error), error
    assert hint == "hint: export the weights with: python scripts/export.py --model W.pth --out model.onnx"
    assert not (tmp_path / "out").exists()


def test_wrong_arguments_are_one_error_line(tiny_weights, tiny_onnx, tmp_path, capsys):
    clip = lr_clip(tmp_path / "lr", "clip", (40, 32), count=5)
    cases = [
        (export_main, ["--model", tmp_path / "missing.pth", "--out", tmp_path / "a.onnx"],
         f"error: {tmp_path / 'missing.pth'}: no such weights file"),
        (export_main, ["--model", tiny_onnx, "--out", tmp_path / "a.onnx"],
         f"error: --model {tiny_onnx}: this is an export, not weights; give the PyTorch weights file"),
        (test_script.main,
         ["--model", tmp_path / "missing.onnx", "--input", clip, "--output", tmp_path / "o"],
         f"error: {tmp_path / 'missing.onnx'}: no such ONNX model file"),
        (test_script.main, ["--model", tiny_onnx, "--input", clip, "--output", clip],
         f"error: --output {clip}: is the input {clip}"),
    ]
    for main, argv, expected in cases:
        assert cli.run(main, [str(a) for a in argv]) == 2
        assert capsys.readouterr().err.strip().splitlines()[0].startswith(expected)
    assert not (tmp_path / "a.onnx").exists() and not (tmp_path / "o").exists()
    assert sorted(p.name for p in clip.iterdir()) == [f"{i:08d}.png" for i in range(5)]


def test_training_evaluation_and_pytorch_restoration_never_import_onnx(demo, tiny_weights, tmp_path):
    """A tiny training (with validation), an evaluation and a restoration with PyTorch weights in a
    fresh process: none of them imports onnx, onnxruntime or onnxscript. They are installed here (the
    dev requirements), so any import would succeed and show in sys.modules. (torch._dynamo probes
    their specs with importlib.util.find_spec without importing them, which is not counted.)"""
    clip = lr_clip(tmp_path / "lr", "clip", (40, 32), count=5)
    opts = write_train_options(tmp_path / "t.yml", demo, tmp_path / "exp", total_iter=3, val_freq=3)
    code = f"""
import sys
import test, train
train.main(["-opt", {str(opts)!r}])
test.main(["-opt", {str(opts)!r}, "--set", "path.pretrain_network_g={tiny_weights}"])
test.main(["--model", {str(tiny_weights)!r}, "--input", {str(clip)!r}, "--output", {str(tmp_path / 'out')!r}])
print(sorted(m for m in sys.modules if m.split(".")[0] in ("onnx", "onnxruntime", "onnxscript", "onnx_ir")))
"""
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                            timeout=900)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == "[]"
    assert len(list((tmp_path / "out").glob("*.png"))) == 5
    assert list((tmp_path / "exp").rglob("net_g_3.pth"))  # the training ran to its end


def test_the_onnx_packages_are_pinned_in_the_dev_requirements():
    """The tests need onnx, onnxruntime and onnxscript (requirements-dev.txt pins the tested versions);
    users who deploy get them from requirements-onnx.txt."""
    def names(path: str, pinned: bool) -> set[str]:
        lines = [line.split("#")[0].strip() for line in (ROOT / path).read_text().splitlines()]
        separator = "==" if pinned else ">="
        return {line.split(separator)[0] for line in lines if separator in line}

    assert {"onnx", "onnxruntime", "onnxscript"} <= names("requirements-dev.txt", pinned=True)
    assert names("requirements-onnx.txt", pinned=False) == {"onnx", "onnxruntime", "onnxscript"}
