"""Scores of restored footage against its ground truth, next to the bicubic baseline's."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from data.storage import IMAGE_EXTENSIONS, DataError
from metrics import psnr, ssim


class GroundTruthFolder:
    """Ground-truth frames named as the input's frames (``<name>.png``, or another image suffix)."""

    def __init__(self, folder: Path):
        if not folder.is_dir():
            raise DataError(f"--gt {folder}: no such folder")
        self.folder = folder

    def read(self, name: str) -> np.ndarray:
        """Frame ``name`` as HxWx3 uint8 RGB."""
        for suffix in IMAGE_EXTENSIONS:
            path = self.folder / f"{name}{suffix}"
            if path.is_file():
                bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
                if bgr is None:
                    raise DataError(f"{path}: not a readable image")
                return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        raise DataError(f"--gt {self.folder}: no ground-truth frame named {name}.* ({', '.join(IMAGE_EXTENSIONS)})")


class Scorer:
    """PSNR/SSIM (RGB, no border crop) of each restored frame and of its bicubic baseline."""

    def __init__(self) -> None:
        self.values: dict[str, list[float]] = {"psnr": [], "ssim": [], "bicubic_psnr": [], "bicubic_ssim": []}

    def add(self, restored: np.ndarray, bicubic: np.ndarray, gt: np.ndarray) -> None:
        """HxWx3 uint8 RGB frames of one size."""
        self.values["psnr"].append(psnr(restored, gt))
        self.values["ssim"].append(ssim(restored, gt))
        self.values["bicubic_psnr"].append(psnr(bicubic, gt))
        self.values["bicubic_ssim"].append(ssim(bicubic, gt))

    def __len__(self) -> int:
        return len(self.values["psnr"])

    def mean(self, key: str) -> float | None:
        return float(np.mean(self.values[key])) if self.values[key] else None

    def table(self) -> str:
        """A one-row markdown table of the means."""
        mean = {key: self.mean(key) for key in self.values}
        return (f"| frames | PSNR | SSIM | bicubic PSNR | bicubic SSIM |\n|---|---|---|---|---|\n"
                f"| {len(self)} | {mean['psnr']:.2f} | {mean['ssim']:.4f} | {mean['bicubic_psnr']:.2f} | "
                f"{mean['bicubic_ssim']:.4f} |")
