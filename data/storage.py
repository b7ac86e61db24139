"""Frame stores: read one frame by key ``clip/frame`` as an HxWx3 uint8 RGB array.

``DiskStore(root)`` reads ``root/<key>.png``. ``LmdbStore(path)`` reads the BasicSR LMDB layout:
``path/data.mdb`` maps ASCII keys (``000/00000000``) to image bytes written by ``cv2.imencode``
(BGR PNG), and ``path/meta_info.txt`` has one line per key: ``000/00000000.png (720,1280,3) 1``
(key + ".png", shape as H,W,C, PNG compression level; -1 = original PNG bytes kept).

Every failure raises ``StoreError`` naming the store, the key/file and the problem; a read never
returns None.
"""

from __future__ import annotations

import abc
import os
import re
import struct
from pathlib import Path

import cv2
import lmdb
import numpy as np

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")  # what folders of frames may hold
META_INFO_NAME = "meta_info.txt"
_META_LINE = re.compile(r"^(?P<key>\S+)\.png \((?P<h>\d+),(?P<w>\d+),(?P<c>\d+)\) (?P<level>-?\d+)$")


class DataError(ValueError):
    """Input data that cannot be used (frames, clips, lists, videos); the message names the file or key.

    Entry points report it as one ``error:`` line (``options.cli``), plus ``hint`` when given."""

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.hint = hint


class StoreError(DataError):
    """A frame store could not deliver a frame (missing, undecodable, corrupt, wrong shape)."""


def decode_image(buf: bytes | np.ndarray, what: str) -> np.ndarray:
    """Decode encoded image bytes to HxWx3 uint8 RGB; ``what`` names the source in errors."""
    array = np.frombuffer(buf, dtype=np.uint8) if isinstance(buf, (bytes, bytearray, memoryview)) else buf
    if array.size == 0:
        raise StoreError(f"{what}: empty image data")
    bgr = cv2.imdecode(array, cv2.IMREAD_COLOR)
    if bgr is None:
        raise StoreError(f"{what}: bytes are not a decodable image ({array.size} bytes)")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


TEMPORARY_SUFFIX = ".tmp"  # files being written: ".<name>.<pid>.tmp", renamed when complete
PNG_END = b"\x00\x00\x00\x00IEND\xaeB`\x82"  # the last chunk of every complete PNG file


def read_image(path: Path) -> np.ndarray:
    """An image file (PNG, JPEG, ...) as HxWx3 uint8 RGB; DataError when it cannot be decoded."""
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise DataError(f"{path}: not a readable image")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def write_png(path: Path, rgb: np.ndarray) -> None:
    """Write an HxWx3 uint8 RGB array as a PNG file, creating its folder; OSError on failure.

    The file is written under a temporary name beside ``path`` and renamed, so ``path`` is
    either absent or complete (without an fsync: see ``is_complete_png`` after a power loss)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    ok, encoded = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    if not ok:
        raise OSError(f"{path}: cannot encode PNG")
    tmp = path.with_name(f".{path.name}.{os.getpid()}{TEMPORARY_SUFFIX}")
    try:
        tmp.write_bytes(encoded.tobytes())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def is_complete_png(path: Path) -> bool:
    """Whether ``path`` is a PNG file that ends with its IEND chunk (a file cut short by a crash
    or a power loss does not)."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(8)
            handle.seek(-len(PNG_END), os.SEEK_END)
            return head == PNG_SIGNATURE and handle.read() == PNG_END
    except OSError:
        return False


def png_header_shape(head: bytes, what: str) -> tuple[int, int, int]:
    """(H, W, C) of a PNG from its first 26 bytes (IHDR), without decoding; C as stored (1-4)."""
    if len(head) < 26 or not head.startswith(PNG_SIGNATURE) or head[12:16] != b"IHDR":
        raise StoreError(f"{what}: not a PNG file (no PNG signature/IHDR header)")
    width, height = struct.unpack(">II", head[16:24])
    channels = {0: 1, 2: 3, 3: 3, 4: 2, 6: 4}.get(head[25])
    if channels is None:
        raise StoreError(f"{what}: PNG header has unknown colour type {head[25]}")
    return height, width, channels


def parse_meta_info(path: Path) -> dict[str, tuple[int, int, int]]:
    """Read a BasicSR LMDB ``meta_info.txt`` into {key: (H, W, C)}; malformed line -> StoreError."""
    shapes: dict[str, tuple[int, int, int]] = {}
    with open(path, encoding="ascii") as f:
        for line_no, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            match = _META_LINE.match(line)
            if match is None:
                raise StoreError(f"{path}:{line_no}: expected '<key>.png (H,W,C) <level>', got {line!r}")
            shapes[match["key"]] = (int(match["h"]), int(match["w"]), int(match["c"]))
    return shapes


def read_clip_meta(path: str | os.PathLike) -> list[tuple[str, int]]:
    """Read a clip list: lines ``000 100 (720,1280,3)`` (BasicSR meta_info_REDS*.txt) or just
    ``00001/0001`` (Vimeo-90K sep_*list.txt, BasicSR meta_info_Vimeo90K*.txt) -> [(clip, frames)];
    the frame count is 0 when the line has none."""
    clips = []
    with open(path, encoding="utf-8") as f:
        for line_no, line in enumerate(f, 1):
            fields = line.split()
            if not fields:
                continue
            if len(fields) > 1 and not fields[1].isdigit():
                raise DataError(
                    f"{path}:{line_no}: expected '<clip> [<num frames> (H,W,C)]', got {line.strip()!r}"
                )
            clips.append((fields[0], int(fields[1]) if len(fields) > 1 else 0))
    if not clips:
        raise DataError(f"{path}: no clips listed")
    return clips


def format_clip_meta(clip: str, num_frames: int, shape: tuple[int, int, int]) -> str:
    """One clip-list line (with newline): ``000 100 (720,1280,3)``."""
    return f"{clip} {num_frames} ({shape[0]},{shape[1]},{shape[2]})\n"


def natural_key(name: str) -> list:
    """Sort key that orders digits numerically: 'f2' < 'f10'."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def format_meta_line(key: str, shape: tuple[int, ...], level: int) -> str:
    """One ``meta_info.txt`` line (with newline) for ``key`` of shape (H, W[, C])."""
    h, w = shape[:2]
    c = shape[2] if len(shape) == 3 else 1
    return f"{key}.png ({h},{w},{c}) {level}\n"


class FrameStore(abc.ABC):
    """Interface: ``read(key)`` -> HxWx3 uint8 RGB, ``keys()``, ``shape(key)`` -> (H, W, 3)."""

    name: str

    @abc.abstractmethod
    def read(self, key: str) -> np.ndarray:
        """The frame ``key`` (``clip/frame``) as HxWx3 uint8 RGB; raises StoreError, never None."""

    @abc.abstractmethod
    def keys(self, clip: str | None = None) -> list[str]:
        """All keys, or only those of ``clip`` (keys ``clip/frame``)."""

    @abc.abstractmethod
    def shape(self, key: str) -> tuple[int, int, int]:
        """(H, W, 3) of ``key``, without decoding where the store records it."""

    @abc.abstractmethod
    def __contains__(self, key: str) -> bool:
        """Whether the store holds ``key``."""

    def where(self, key: str) -> str:
        """``key`` and where it is, for error messages: ``LmdbStore(path): key '000/00000003'``."""
        return f"{self.name}: key {key!r}"

    def __repr__(self) -> str:
        return self.name


class DiskStore(FrameStore):
    """Frames as image files ``root/<key><ext>`` (``ext`` ".png" by default)."""

    def __init__(self, root: str | os.PathLike, ext: str = ".png") -> None:
        self.root = Path(root)
        self.ext = ext
        self.name = f"DiskStore({self.root})"
        if not self.root.is_dir():
            raise StoreError(f"{self.name}: folder does not exist")

    def path(self, key: str) -> Path:
        return self.root / f"{key}{self.ext}"

    def where(self, key: str) -> str:
        return f"{self.name}: key {key!r} ({self.path(key)})"

    def read(self, key: str) -> np.ndarray:
        path = self.path(key)
        try:
            buf = path.read_bytes()
        except FileNotFoundError:
            raise StoreError(f"{self.name}: key {key!r}: file {path} does not exist") from None
        except OSError as e:
            raise StoreError(f"{self.name}: key {key!r}: cannot read {path}: {e}") from e
        return decode_image(buf, self.where(key))

    def keys(self, clip: str | None = None) -> list[str]:
        folder = self.root if clip is None else self.root / clip
        paths = folder.rglob(f"*{self.ext}") if clip is None else folder.glob(f"*{self.ext}")
        keys = [p.relative_to(self.root).as_posix()[: -len(self.ext)] for p in paths]
        return sorted(keys, key=natural_key)

    def shape(self, key: str) -> tuple[int, int, int]:
        path, what = self.path(key), self.where(key)
        if self.ext.lower() != ".png":
            return self.read(key).shape  # type: ignore[return-value]
        try:
            with open(path, "rb") as f:
                head = f.read(26)
        except FileNotFoundError:
            raise StoreError(f"{what}: file does not exist") from None
        h, w, _ = png_header_shape(head, what)
        return h, w, 3

    def __contains__(self, key: str) -> bool:
        return self.path(key).is_file()


class CachedStore(FrameStore):
    """``store`` whose frames are decoded once and then kept in memory (per process: each DataLoader
    worker holds its own copy). For datasets that fit in memory, such as the demo's (about 110 MB):
    a training epoch re-reads every frame, and decoding PNGs would otherwise take about a quarter
    of a small network's step (they decode on the same cores). ``read`` returns a copy, so callers
    may modify it."""

    def __init__(self, store: FrameStore) -> None:
        self.store = store
        self.name = f"Cached{store.name}"
        self._frames: dict[str, np.ndarray] = {}

    def read(self, key: str) -> np.ndarray:
        if key not in self._frames:
            self._frames[key] = self.store.read(key)
        return self._frames[key].copy()

    def keys(self, clip: str | None = None) -> list[str]:
        return self.store.keys(clip)

    def shape(self, key: str) -> tuple[int, int, int]:
        return self.store.shape(key)

    def __contains__(self, key: str) -> bool:
        return key in self.store

    def where(self, key: str) -> str:
        return self.store.where(key)


# One read-only env per LMDB folder per process: py-lmdb refuses to open a path twice in a
# process, and an env must not be used across fork. Values: (pid, data.mdb inode, env); a new
# inode (the LMDB was rebuilt) or a new pid (forked worker) closes the old env and reopens.
_ENVS: dict[str, tuple[int, int, lmdb.Environment]] = {}


def _shared_env(path: Path, name: str) -> lmdb.Environment:
    """This process's read-only, lock-free env of ``path`` (opened on first use)."""
    key = os.path.abspath(path)
    try:
        stat = os.stat(os.path.join(key, "data.mdb"))
    except FileNotFoundError:
        raise StoreError(f"{name}: data.mdb has disappeared") from None
    entry = _ENVS.get(key)
    if entry is not None and entry[:2] == (os.getpid(), stat.st_ino):
        return entry[2]
    if entry is not None:  # stale: rebuilt LMDB, or this process's copy of a forked parent's env
        entry[2].close()
        del _ENVS[key]
    try:
        env = lmdb.open(key, readonly=True, lock=False, readahead=False, meminit=False, max_readers=512)
    except lmdb.Error as e:
        raise StoreError(f"{name}: cannot open LMDB (truncated or corrupt?): {e}") from e
    # Reading a page past the end of a truncated data.mdb would kill the process (SIGBUS).
    needed = (env.info()["last_pgno"] + 1) * env.stat()["psize"]
    if stat.st_size < needed:
        env.close()
        raise StoreError(f"{name}: data.mdb is truncated ({stat.st_size} bytes, its pages need {needed})")
    _ENVS[key] = (os.getpid(), stat.st_ino, env)
    return env


class LmdbStore(FrameStore):
    """Frames in a BasicSR-layout LMDB folder (``data.mdb`` + ``meta_info.txt``).

    The environment is opened read-only and lock-free on first use in each process, so a store
    created before DataLoader workers fork (or pickled to spawned workers) is safe to use there.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.name = f"LmdbStore({self.path})"
        if not (self.path / "data.mdb").is_file():
            raise StoreError(f"{self.name}: no data.mdb in this folder (not an LMDB)")
        meta = self.path / META_INFO_NAME
        self._meta: dict[str, tuple[int, int, int]] | None = parse_meta_info(meta) if meta.is_file() else None

    def _environment(self) -> lmdb.Environment:
        return _shared_env(self.path, self.name)

    def _get(self, key: str) -> bytes:
        try:
            with self._environment().begin(write=False, buffers=False) as txn:
                value = txn.get(key.encode("ascii"))
        except UnicodeEncodeError:
            raise StoreError(f"{self.name}: key {key!r} is not ASCII (LMDB keys are ASCII)") from None
        except lmdb.Error as e:
            raise StoreError(f"{self.name}: key {key!r}: LMDB read failed (corrupt database?): {e}") from e
        if value is None:
            raise StoreError(f"{self.name}: key {key!r} not found")
        return value

    def read(self, key: str) -> np.ndarray:
        image = decode_image(self._get(key), f"{self.name}: key {key!r}")
        if self._meta is not None and key in self._meta:
            h, w, _ = self._meta[key]
            if image.shape[:2] != (h, w):
                raise StoreError(
                    f"{self.name}: key {key!r}: decoded shape {image.shape[:2]} "
                    f"but meta_info.txt says {(h, w)}"
                )
        return image

    def keys(self, clip: str | None = None) -> list[str]:
        if self._meta is not None:
            keys = list(self._meta)
        else:
            try:
                with self._environment().begin(write=False) as txn:
                    keys = [k.decode("ascii") for k in txn.cursor().iternext(keys=True, values=False)]
            except lmdb.Error as e:
                raise StoreError(f"{self.name}: cannot list keys (corrupt database?): {e}") from e
        if clip is not None:
            keys = [k for k in keys if k.rpartition("/")[0] == clip]
        return sorted(keys, key=natural_key)

    def shape(self, key: str) -> tuple[int, int, int]:
        if self._meta is not None and key in self._meta:
            h, w, _ = self._meta[key]
        else:
            h, w, _ = png_header_shape(self._get(key)[:26], f"{self.name}: key {key!r}")
        return h, w, 3

    def __contains__(self, key: str) -> bool:
        if self._meta is not None:
            return key in self._meta
        try:
            self._get(key)
        except StoreError:
            return False
        return True


def open_store(path: str | os.PathLike, backend: str = "auto") -> FrameStore:
    """A store for ``path``: ``backend`` "disk", "lmdb", or "auto" (LMDB iff ``path/data.mdb`` exists)."""
    if backend == "auto":
        backend = "lmdb" if (Path(path) / "data.mdb").is_file() else "disk"
    if backend == "disk":
        return DiskStore(path)
    if backend == "lmdb":
        return LmdbStore(path)
    raise ValueError(f"io backend must be 'auto', 'disk' or 'lmdb', got {backend!r}")


def group_by_clip(keys: list[str]) -> dict[str, list[str]]:
    """{clip: [frame, ...]} from keys ``clip/frame`` (clip may contain '/'), frames sorted."""
    clips: dict[str, list[str]] = {}
    for key in keys:
        clip, sep, frame = key.rpartition("/")
        if not sep:
            raise StoreError(f"key {key!r} is not of the form 'clip/frame'")
        clips.setdefault(clip, []).append(frame)
    return {clip: sorted(frames, key=natural_key) for clip, frames in sorted(clips.items())}
