"""One clip through the pipeline: its frames streamed through the engine into the sinks, scored
against ground truth and compared side by side where asked, the sinks committed when complete.

A run continued after an interruption starts at the first frame that some sink (or the score
journal) lacks, rounded down to a batch boundary, so that every frame is restored exactly as an
uninterrupted run restores it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Collection
from dataclasses import dataclass, field
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

logger = logging.getLogger(__name__)


@dataclass
class Summary:
    """What a restoration did: the frames restored by this run (from ``start``: a continued run
    found the earlier ones done), seconds, the scene cuts found (indices of the frames that start
    a shot) and the scores of every frame (empty without ground truth)."""

    frames: int
    seconds: float
    scores: Scorer
    start: int = 0
    total: int = 0
    cuts: list[int] = field(default_factory=list)

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else float("inf")


def resume_point(parts: list, batch_size: int) -> int:
    """The first frame to restore: the fewest frames any part (a sink, the score journal) holds,
    rounded down to a batch boundary, then moved back until every part can continue there."""
    start = min(part.completed() for part in parts) if parts else 0
    while True:
        start -= start % batch_size
        moved = min(part.rewind(start) for part in parts) if parts else start
        if moved == start:
            return start
        start = moved


def restore_clip(source, engine: Engine, schedule: WindowSchedule, device: torch.device, sinks: list, *,
                 batch_size: int = 1, ground_truth: GroundTruthFolder | None = None,
                 compare: Collection[int] = (), side_files: Path | None = None, progress: bool = True,
                 scores_journal: Path | None = None, table_header: dict[str, str] | None = None) -> Summary:
    """Restore every frame of ``source`` (``read_frame(i)``, ``names``, ``clip``, ``len``) into
    ``sinks`` (``write(index, name, rgb)``, ``completed()``, ``rewind(start)``, ``commit()``,
    ``keep()``, ``discard()``), continuing where they stopped (see ``resume_point``).

    With ``ground_truth`` every frame is scored, next to its bicubic baseline (each frame's
    scores appended to ``scores_journal``); frames in ``compare`` are saved as bicubic | network
    [| GT] panels in ``side_files/compare``, where the score table also goes (``metrics.md``,
    after ``table_header``). The sinks are committed once every frame is written. On a problem
    with the input data they are discarded; on any other failure or an interruption (Ctrl-C)
    they keep what is complete, for ``--resume``.
    """
    scale, label = engine.scale, type(engine.net).__name__
    try:
        scores = Scorer(scores_journal if ground_truth is not None else None)
        start = resume_point(sinks + ([scores] if ground_truth is not None else []), batch_size)
        if start:
            logger.info("continuing at frame %d of %d (frames 0-%d were restored before)", start, len(source),
                        start - 1)
        begin = time.perf_counter()
        stream = RestorationStream(source.read_frame, len(source), schedule, engine, device, batch_size, start)
        for index, lq, restored in tqdm(stream, initial=start, total=len(source), unit="frame",
                                        desc=f"restore {source.clip}", disable=not progress):
            name = source.names[index]
            gt = ground_truth.read(name, index) if ground_truth is not None else None
            if gt is not None and gt.shape != restored.shape:
                raise DataError(f"--gt {ground_truth.folder}: frame {name} of the ground truth is "
                                f"{gt.shape[1]}x{gt.shape[0]}, the restored frame {restored.shape[1]}x"
                                f"{restored.shape[0]}")
            if gt is not None or index in compare:
                bicubic = imresize(lq, scale) if scale != 1 else lq  # the baseline (the input itself for hr_in)
                if index in compare:
                    panels = [bicubic, restored] + ([gt] if gt is not None else [])
                    labels = ["bicubic", label] + (["GT"] if gt is not None else [])
                    write_png(side_files / "compare" / f"{name}.png", side_by_side(panels, labels))
                if gt is not None:
                    scores.add(restored, bicubic, gt)
            for sink in sinks:  # last: a frame a sink holds has its panel and scores
                sink.write(index, name, restored)
        seconds = time.perf_counter() - begin
        if len(scores) and side_files is not None:
            write_text(side_files / "metrics.md", scores.table(table_header) + "\n")
        for sink in sinks:
            sink.commit()
    except DataError:
        for sink in sinks:
            sink.discard()
        raise
    except BaseException:
        for sink in sinks:
            sink.keep()
        raise
    return Summary(len(source) - start, seconds, scores, start, len(source), list(schedule.cuts))


def write_text(path: Path, text: str) -> None:
    """A small text file, complete or absent (temporary name, then renamed)."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
