"""One clip through the pipeline: its frames streamed through the engine into the sinks, scored
against ground truth and compared side by side where asked, the sinks committed when complete."""

from __future__ import annotations

import time
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from data.resize import imresize
from data.storage import DataError, write_png

from .engine import Engine
from .schedule import WindowSchedule
from .scoring import GroundTruthFolder, Scorer
from .sinks import side_by_side
from .stream import RestorationStream


@dataclass
class Summary:
    """What a restoration did: frames, seconds, and the scores (empty without ground truth)."""

    frames: int
    seconds: float
    scores: Scorer

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else float("inf")


def restore_clip(source, engine: Engine, schedule: WindowSchedule, device: torch.device, sinks: list, *,
                 batch_size: int = 1, ground_truth: GroundTruthFolder | None = None,
                 compare: Collection[int] = (), side_files: Path | None = None, progress: bool = True) -> Summary:
    """Restore every frame of ``source`` (``read_frame(i)``, ``names``, ``clip``, ``len``) into
    ``sinks`` (``write(name, rgb)``, ``commit()``, ``discard()``).

    With ``ground_truth`` every frame is scored, next to its bicubic baseline; frames in
    ``compare`` are saved as bicubic | network [| GT] panels in ``side_files/compare``, where the
    score table also goes (``metrics.md``). The sinks are committed once every frame is written,
    and discarded if anything fails: their outputs appear complete or not at all.
    """
    scores, scale, label = Scorer(), engine.scale, type(engine.net).__name__
    start = time.perf_counter()
    try:
        stream = RestorationStream(source.read_frame, len(source), schedule, engine, device, batch_size)
        for index, lq, restored in tqdm(stream, total=len(source), unit="frame", desc=f"restore {source.clip}",
                                        disable=not progress):
            name = source.names[index]
            for sink in sinks:
                sink.write(name, restored)
            gt = ground_truth.read(name) if ground_truth is not None else None
            if gt is not None and gt.shape != restored.shape:
                raise DataError(f"--gt {ground_truth.folder}/{name}: ground truth is {gt.shape[1]}x{gt.shape[0]}, "
                                f"the restored frame {restored.shape[1]}x{restored.shape[0]}")
            if gt is None and index not in compare:
                continue
            bicubic = imresize(lq, scale) if scale != 1 else lq  # the baseline (the input itself for hr_in)
            if gt is not None:
                scores.add(restored, bicubic, gt)
            if index in compare:
                panels = [bicubic, restored] + ([gt] if gt is not None else [])
                labels = ["bicubic", label] + (["GT"] if gt is not None else [])
                write_png(side_files / "compare" / f"{name}.png", side_by_side(panels, labels))
        seconds = time.perf_counter() - start
        if len(scores) and side_files is not None:
            (side_files / "metrics.md").write_text(scores.table() + "\n")
        for sink in sinks:
            sink.commit()
    except BaseException:
        for sink in sinks:
            sink.discard()
        raise
    return Summary(len(source), seconds, scores)
