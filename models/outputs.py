"""Writing results without ever destroying anything: output folders built beside their
destination, swapped in when complete, and replaced only where we wrote them.

An output folder is written as the sibling ``<name>.partial`` and renamed to ``<name>`` once
complete, so an interrupted run never leaves a half-written result under the final name and
the previous result stays intact until the new one is whole. An interrupted run's partial
folder can be continued (``resume``); it holds the record of the run's settings. Every folder we complete holds a
manifest (``MANIFEST_NAME``) listing the files we wrote; replacing it (``--overwrite``) is
allowed only when everything in it is listed there, and removes only those files. Outputs
that equal, contain or lie inside an input, the working directory or the file system root are
refused before anything is written.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from pathlib import Path

from data.storage import TEMPORARY_SUFFIX

logger = logging.getLogger(__name__)

MANIFEST_NAME = ".vidrestore-output.json"
PARTIAL_MARKER = ".vidrestore-partial"  # inside a .partial folder: we created it
PARTIAL_SUFFIX = ".partial"
STATE_NAME = ".vidrestore-state.json"  # inside a .partial folder: what the run needs to be continued


class OutputError(ValueError):
    """An output location that cannot be written without risking data that is not ours."""

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.hint = hint


def _resolved(path: Path) -> Path:
    return Path(os.path.abspath(path)).resolve()


def _within(path: Path, folder: Path) -> bool:
    """Whether ``path`` is ``folder`` or lies inside it (both resolved)."""
    return path == folder or folder in path.parents


def check_location(output: Path, inputs: list[Path], what: str = "--output") -> None:
    """Refuse an output that equals, contains or lies inside an input, or that is (or contains)
    the working directory or the root; ``what`` names the argument in the message."""
    target = _resolved(output)
    if target == Path(target.anchor):
        raise OutputError(f"{what} {output}: is the file system root")
    if _within(Path.cwd().resolve(), target):
        raise OutputError(f"{what} {output}: is the working directory or one of its parents",
                          hint="name a new folder, e.g. --output restored/")
    for source in inputs:
        source_path = _resolved(source)
        if _within(target, source_path) or _within(source_path, target):
            relation = ("is" if target == source_path else
                        "lies inside" if _within(target, source_path) else "contains")
            raise OutputError(f"{what} {output}: {relation} the input {source}",
                              hint="write the results to a folder of their own, beside the input")


def read_manifest(folder: Path) -> list[str] | None:
    """The files an earlier run of ours wrote into ``folder`` (relative POSIX paths), or None
    when the folder has no readable manifest. Entries that leave the folder are dropped."""
    try:
        data = json.loads((folder / MANIFEST_NAME).read_text(encoding="utf-8"))
        files = data["files"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not isinstance(files, list):
        return None
    safe = []
    for entry in files:
        if isinstance(entry, str) and entry and not Path(entry).is_absolute() and ".." not in Path(entry).parts:
            safe.append(entry)
    return safe


def _foreign_entries(folder: Path, ours: list[str]) -> list[str]:
    """Files and folders under ``folder`` that the manifest does not account for."""
    listed = set(ours) | {MANIFEST_NAME}
    parents = {str(parent) for entry in listed for parent in Path(entry).parents if str(parent) != "."}
    foreign = []
    for root, dirs, files in os.walk(folder):
        for name in dirs + files:
            relative = (Path(root) / name).relative_to(folder).as_posix()
            is_dir = name in dirs
            if (is_dir and relative not in parents) or (not is_dir and relative not in listed):
                foreign.append(relative + ("/" if is_dir else ""))
        dirs[:] = [d for d in dirs if (Path(root) / d).relative_to(folder).as_posix() in parents]
    return sorted(foreign)


def check_replaceable(final: Path, overwrite: bool) -> None:
    """Refuse ``final`` unless it is absent, an empty folder, or (with ``overwrite``) a folder
    holding nothing but an earlier result of ours."""
    if not final.exists() and not final.is_symlink():
        return
    if final.is_symlink() or not final.is_dir():
        raise OutputError(f"{final}: exists and is not a folder")
    if not any(final.iterdir()):
        return
    ours = read_manifest(final)
    if ours is None:
        raise OutputError(f"{final}: the folder is not empty and was not written by vidrestore",
                          hint="choose a new or empty folder; nothing in this one is touched")
    if not overwrite:
        raise OutputError(f"{final}: holds an earlier result ({len(ours)} files)",
                          hint="pass --overwrite to replace it, or choose another folder")
    foreign = _foreign_entries(final, ours)
    if foreign:
        shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
        raise OutputError(f"{final}: besides an earlier result it holds files vidrestore did not write "
                          f"({shown})", hint="move them away or choose another folder; --overwrite replaces "
                                             "only what vidrestore wrote")


class PartialFolder:
    """The folder ``<final>.partial`` in which a result is built (marked as ours with the process
    id of its writer). ``final`` itself is never touched here.

    A partial folder left by an interrupted run (its writer is gone) is kept and continued with
    ``resume`` (``resumed`` is then True), else cleared with a log line saying that ``--resume``
    would have continued it. One that a running process of ours writes, and one that is not ours,
    are refused. ``state``: a small JSON record kept inside (e.g. the settings of the run).
    """

    def __init__(self, final: Path, resume: bool = False):
        self.final = Path(final)
        self.path = self.final.with_name(self.final.name + PARTIAL_SUFFIX)
        self.resumed = self._claim(resume)

    def _claim(self, resume: bool) -> bool:
        if self.path.exists() or self.path.is_symlink():
            marker = self.path / PARTIAL_MARKER
            if self.path.is_symlink() or not marker.is_file():
                raise OutputError(f"{self.path}: exists and was not created by vidrestore",
                                  hint=f"vidrestore writes {self.final} there first; move it away")
            writer = _running_writer(marker)
            if writer is not None:
                raise OutputError(f"{self.path}: another run (process {writer}) is writing this output",
                                  hint="wait for it to finish, or choose another output")
            if resume:
                logger.info("continuing %s, left by an interrupted run", self.path)
                for leftover in self.path.rglob(f".*{TEMPORARY_SUFFIX}"):  # files a killed run was writing
                    leftover.unlink()
                self._mark()
                return True
            logger.warning("removing %s, left by an interrupted run (--resume would have continued it)", self.path)
            shutil.rmtree(self.path)
        elif resume:
            logger.warning("--resume: no interrupted run left %s; starting from the first frame", self.path)
        self.path.mkdir(parents=True)
        self._mark()
        return False

    def _mark(self) -> None:
        (self.path / PARTIAL_MARKER).write_text(f"{os.getpid()}\nwritten by vidrestore; renamed when complete\n")

    def read_state(self) -> dict | None:
        """The record ``write_state`` kept, or None (none, or unreadable)."""
        try:
            state = json.loads((self.path / STATE_NAME).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return state if isinstance(state, dict) else None

    def write_state(self, state: dict) -> None:
        """Keep ``state`` (JSON-serialisable) inside, atomically."""
        tmp = self.path / f".{STATE_NAME}.{os.getpid()}.tmp"
        with open(tmp, "w", encoding="utf-8") as handle:
            json.dump(state, handle, indent=1, sort_keys=True)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, self.path / STATE_NAME)

    def internal_files(self) -> set[str]:
        """Names of our bookkeeping files inside (not part of the result)."""
        return {PARTIAL_MARKER, STATE_NAME}

    def discard(self) -> None:
        """Remove the partial folder (ours alone)."""
        if (self.path / PARTIAL_MARKER).is_file():
            shutil.rmtree(self.path, ignore_errors=True)


class OutputFolder:
    """A result folder written as ``<final>.partial`` and swapped in by ``commit()``.

        with OutputFolder(Path("restored"), overwrite=False) as out:
            write_png(out.path / "00000000.png", frame)
            out.commit()

    Leaving the block without ``commit()`` (an error, Ctrl-C) removes the partial folder, which
    only we wrote; the previous result under ``final`` is untouched until ``commit()``. With
    ``resume``, the partial folder of an interrupted run is kept (see ``PartialFolder``).
    """

    def __init__(self, final: Path, overwrite: bool = False, resume: bool = False):
        self.final = Path(final)
        self.overwrite = overwrite
        check_replaceable(self.final, overwrite)
        self.partial = PartialFolder(self.final, resume)
        self.path = self.partial.path
        self.committed = False

    @property
    def resumed(self) -> bool:
        return self.partial.resumed

    def __enter__(self) -> OutputFolder:
        return self

    def __exit__(self, *exc_info) -> None:
        if not self.committed:
            self.discard()

    def discard(self) -> None:
        """Remove the partial folder (ours alone)."""
        self.partial.discard()

    def commit(self) -> Path:
        """Write the manifest and swap the partial folder in; returns the final path."""
        internal = self.partial.internal_files()
        files = sorted(p.relative_to(self.path).as_posix() for p in self.path.rglob("*")
                       if p.is_file() and p.relative_to(self.path).as_posix() not in internal)
        manifest = {"written_by": "vidrestore", "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "files": files}
        (self.path / MANIFEST_NAME).write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
        check_replaceable(self.final, self.overwrite)  # it may have changed during a long run
        (self.path / STATE_NAME).unlink(missing_ok=True)
        (self.path / PARTIAL_MARKER).unlink()
        if self.final.exists() and any(self.final.iterdir()):
            old = self.final.with_name(f"{self.final.name}.replaced-{os.getpid()}")
            os.rename(self.final, old)
            os.rename(self.path, self.final)
            _remove_ours(old)
        else:
            os.replace(self.path, self.final)  # also onto an empty folder
        self.committed = True
        return self.final


def _running_writer(marker: Path) -> int | None:
    """The process id a partial folder's marker names, if that process is alive (not us)."""
    try:
        pid = int(marker.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    if pid == os.getpid():
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:  # alive, another user's
        return pid
    return pid


def _remove_ours(folder: Path) -> None:
    """Delete the files ``folder``'s manifest lists, then the folders left empty; anything else
    (which ``check_replaceable`` ruled out, unless it appeared since) is kept and reported."""
    for entry in read_manifest(folder) or []:
        (folder / entry).unlink(missing_ok=True)
    (folder / MANIFEST_NAME).unlink(missing_ok=True)
    for root, _, _ in sorted(os.walk(folder), key=lambda item: -len(Path(item[0]).parts)):
        try:
            os.rmdir(root)
        except OSError:  # not empty: holds something that is not ours
            pass
    if folder.exists():
        logger.warning("%s: kept, it holds files vidrestore did not write", folder)


def check_output_file(path: Path, inputs: list[Path], overwrite: bool, what: str = "--video") -> None:
    """Refuse a result file that is an input or lies inside one, a folder, or (without
    ``overwrite``) an existing file."""
    check_location(path, inputs, what)
    if path.is_dir():
        raise OutputError(f"{what} {path}: is a folder; give a file name, e.g. {path / 'restored.mp4'}")
    if path.exists() and not overwrite:
        raise OutputError(f"{what} {path}: exists", hint="pass --overwrite to replace it, or choose another name")


def partial_file(path: Path) -> Path:
    """A fresh temporary name beside ``path`` (same folder and suffix) to write it under first."""
    return path.with_name(f".{path.stem}.{os.getpid()}{PARTIAL_SUFFIX}{path.suffix}")
