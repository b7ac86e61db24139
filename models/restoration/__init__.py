"""Restoring a user's footage, as a pipeline of parts with one job each:

    frame source -> window schedule -> engine -> frame sinks

- frame sources: ``data.video_folder`` (a folder of images, a video file);
- ``schedule.WindowSchedule``: the frames of each window, padding at the clip ends, scene cuts;
- ``engine.Engine``: the network on its device and precision, pyramid reuse, tiles, strips;
- ``stream.RestorationStream``: frames decoded ahead by a thread, windows restored in order;
- ``sinks``: PNG folder, video file (each built in a partial folder beside its destination, moved
  there complete; an interrupted run's partial folder is continued with ``--resume``);
- ``encoding``: the video through FFmpeg (PyAV): closed segments joined with the input's audio;
- ``resume``: the record of a run's settings that a continued run must share;
- ``scoring.Scorer``: PSNR/SSIM against ground truth, next to the bicubic baseline;
- ``pipeline.restore_clip``: one clip through all of them, sinks committed when complete.

``test.py --input`` assembles them from its arguments.
"""

from .engine import Engine, PyramidCache, Tiling, prepare_for_inference, release_freed_activations
from .pipeline import Summary, restore_clip
from .schedule import WindowSchedule, scene_cuts_of, window_indices
from .scoring import GroundTruthFolder, Scorer
from .sinks import PngFolderSink, VideoFileSink, side_by_side
from .stream import RestorationStream

__all__ = [
    "Engine", "GroundTruthFolder", "PngFolderSink", "PyramidCache", "RestorationStream", "Scorer", "Summary", "Tiling",
    "VideoFileSink", "WindowSchedule", "prepare_for_inference", "release_freed_activations", "restore_clip",
    "scene_cuts_of", "side_by_side", "window_indices",
]
