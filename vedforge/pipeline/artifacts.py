"""Write an artifact directory so that it is either absent, the previous one, or complete.

Everything is written into a hidden staging directory beside the destination and swapped
into place in one step (``renameat2(RENAME_EXCHANGE)`` on Linux; two renames elsewhere).
A forge that fails or is killed leaves at most a hidden ``.NAME.partial-*`` directory,
never a weights file next to a config under the destination's name. Every staged file and
directory is fsynced before the swap, so a power cut cannot publish a name over data still
in the page cache; the weights' fsync starts as soon as they are written and runs while the
small files are written.
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import logging
import os
import socket
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Iterator, Optional

from vedforge.core.errors import OutputError

log = logging.getLogger("vedforge")

MANIFEST = "vedforge_manifest.json"
# What Hydra puts in its run directory before the job starts; not a previous artifact.
HYDRA_RECORDS = (".hydra",)
_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def is_artifact_dir(path: Path) -> bool:
    """True when ``path`` holds anything beyond Hydra's own records of the current run."""
    if not path.is_dir():
        return False
    return any(p.name not in HYDRA_RECORDS and not p.name.endswith(".log") for p in path.iterdir())


def not_a_directory(final: Path, setting: str = "output.dir") -> Optional[OutputError]:
    """The error for a destination that is a file or lies under one (``setting`` names what
    the user sets to change it), or None when a directory can be there."""
    if final.exists() and not final.is_dir():
        return OutputError(f"The output path '{final}' is a file, not a directory. Set {setting} to a directory path.")
    ancestor = final.parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        return OutputError(
            f"The output directory '{final}' cannot be created: '{ancestor}' is a file, not a directory. "
            f"Set {setting} to a location you can write to."
        )
    return None


def not_writable(final: Path, setting: str = "output.dir") -> Optional[OutputError]:
    """The error for a destination whose parent cannot be created or written in (read-only, no
    permission, a file system that takes no new entries such as /proc), or None; found by creating
    a hidden probe directory in the nearest existing ancestor and removing it at once, so nothing
    is left behind. The error is the one creating the parent, or the lock in it, would give."""
    parent = final.parent
    ancestor = parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    try:
        os.rmdir(tempfile.mkdtemp(prefix=f".{final.name}.probe-", dir=ancestor))
    except OSError as exc:
        if ancestor == parent:
            return OutputError(
                f"Cannot write in '{parent}' ({exc.strerror or exc}). Set {setting} to a location you can write to.")
        return OutputError(
            f"The output directory '{final}' cannot be created ({exc.strerror or exc}). "
            f"Set {setting} to a location you can write to."
        )
    return None


def _writable_parent(final: Path) -> None:
    error = not_a_directory(final)
    if error is not None:
        raise error
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(
            f"The output directory '{final}' cannot be created ({exc.strerror or exc}). "
            "Set output.dir to a location you can write to."
        ) from None


class OutputLock:
    """An exclusive claim on an output directory: a sibling ``.NAME.lock`` file naming its holder.

    Two forges into one directory would each publish over the other; the second one stops
    with the holder's pid and host instead. A lock left by a process that no longer runs is
    reported as stale, with the command that clears it.
    """

    def __init__(self, final: Path):
        self.final = final.absolute()
        self.path = self.final.parent / f".{self.final.name}.lock"
        self._held = False

    def __enter__(self) -> "OutputLock":
        _writable_parent(self.final)
        holder = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%d %H:%M:%S")}
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            raise self.refusal() from None
        except OSError as exc:
            raise OutputError(
                f"Cannot write in '{self.final.parent}' ({exc.strerror or exc}). Set output.dir to a location you can write to."
            ) from None
        with os.fdopen(fd, "w") as f:
            json.dump(holder, f)
        self._held = True
        return self

    def __exit__(self, *exc) -> None:
        if self._held:
            self.path.unlink(missing_ok=True)
            self._held = False

    def refusal(self) -> OutputError:
        """The error for a destination whose lock another forge holds (or a killed one left)."""
        try:
            holder = json.loads(self.path.read_text())
            pid, host, since = int(holder["pid"]), str(holder["host"]), str(holder.get("since", "?"))
        except (OSError, ValueError, KeyError, TypeError):
            return OutputError(
                f"The output directory '{self.final}' is locked by '{self.path}', which cannot be read. If no other "
                f"forge is writing there, remove it: rm '{self.path}'"
            )
        if host == socket.gethostname() and not _alive(pid):
            return OutputError(
                f"The output directory '{self.final}' has a stale lock from pid {pid} on {host} (since {since}), which "
                f"is no longer running: that forge was killed. Remove the lock and run again: rm '{self.path}'"
            )
        return OutputError(
            f"Another forge (pid {pid} on {host}, since {since}) is writing to '{self.final}'. Wait for it to finish, "
            "or set output.dir to another directory."
        )


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# The directories of weights written while a forge plans are named ".<output>.early-<pid>-<random>".
EARLY_PREFIX = "early-"


class StagedArtifact:
    """A staging directory that becomes ``final`` on :meth:`publish`, or vanishes on failure."""

    def __init__(self, final: Path, *, overwrite: bool):
        self.final = final.absolute()
        self.overwrite = overwrite
        self.path: Optional[Path] = None
        self._syncs: list[tuple[threading.Thread, list[BaseException]]] = []
        self._synced: set[Path] = set()

    def check(self) -> None:
        """Refuse early (before any weights are read) when the destination cannot take the artifact."""
        _writable_parent(self.final)
        self.check_contents()

    def check_contents(self) -> None:
        """Refuse a destination that already holds files, unless overwriting."""
        if is_artifact_dir(self.final) and not self.overwrite:
            raise OutputError(
                f"The output directory '{self.final}' already holds files. Choose another output.dir, "
                "or set output.overwrite=true to replace it once the new artifact is complete."
            )

    def __enter__(self) -> "StagedArtifact":
        self.check()
        self.remove_leftovers()
        try:
            self.path = Path(tempfile.mkdtemp(prefix=f".{self.final.name}.partial-", dir=self.final.parent))
        except OSError as exc:
            raise OutputError(
                f"Cannot write in '{self.final.parent}' ({exc.strerror or exc}). Set output.dir to a location you can write to."
            ) from None
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        for thread, _ in self._syncs:  # never delete files under a running fsync
            thread.join()
        self._syncs.clear()
        if self.path is not None and self.path.exists():
            shutil.rmtree(self.path, ignore_errors=True)

    def remove_leftovers(self) -> list[Path]:
        """Remove staging directories that killed forges left beside ``final``; return them.

        Call only while holding the :class:`OutputLock` of ``final``: then no other forge can
        be writing into one of them.
        """
        leftovers = sorted(self.final.parent.glob(f".{self.final.name}.partial-*"))
        # Early writes (vedforge.pipeline.early_weights) run before the lock is taken, so only
        # those of processes that no longer run are leftovers.
        early = f".{self.final.name}.{EARLY_PREFIX}"
        leftovers += sorted(p for p in self.final.parent.glob(early + "*")
                            if (pid := p.name[len(early):].partition("-")[0]).isdigit() and not _alive(int(pid)))
        for leftover in leftovers:
            shutil.rmtree(leftover, ignore_errors=True)
        if leftovers:
            log.info("Removed %d staging director%s left by an interrupted forge: %s", len(leftovers),
                     "y" if len(leftovers) == 1 else "ies", ", ".join(p.name for p in leftovers))
        return leftovers

    def sync_in_background(self, path: Path) -> None:
        """Start flushing the complete staged file ``path`` to disk now, in a thread, so the
        wait overlaps the rest of the forge; :meth:`publish` waits for it."""
        errors: list[BaseException] = []

        def sync() -> None:
            try:
                _fsync_file(path)
            except OSError as exc:
                errors.append(exc)

        thread = threading.Thread(target=sync, name="vedforge-fsync", daemon=True)
        thread.start()
        self._syncs.append((thread, errors))
        self._synced.add(path)

    def _make_durable(self) -> None:
        """fsync every staged file not already being synced, then the directories, then wait
        for the background syncs; re-raise the first error."""
        assert self.path is not None
        dirs = [self.path]
        for root, subdirs, files in os.walk(self.path):
            dirs.extend(Path(root) / d for d in subdirs)
            for name in files:
                if Path(root) / name not in self._synced:
                    _fsync_file(Path(root) / name)
        for directory in dirs:
            _fsync_dir(directory)
        for thread, errors in self._syncs:
            thread.join()
            if errors:
                raise errors[0]
        self._syncs.clear()

    def publish(self) -> Path:
        """Make the staged files durable, then move the staged directory into place; the old
        contents (if any) are removed afterwards."""
        assert self.path is not None
        self._make_durable()
        staged = self.path
        if self.final.exists():
            self._carry_hydra_records(staged)
            if not _exchange(staged, self.final):
                old = Path(tempfile.mkdtemp(prefix=f".{self.final.name}.old-", dir=self.final.parent))
                os.rename(self.final, old / "artifact")
                os.rename(staged, self.final)
                staged = old
            shutil.rmtree(staged, ignore_errors=True)
        else:
            os.rename(staged, self.final)
        _fsync_dir(self.final.parent)
        self.path = None
        return self.final

    def _carry_hydra_records(self, staged: Path) -> None:
        # Hydra wrote .hydra/ and its job log into the run directory before the forge
        # started; keep them. Hard links keep the open log file growing in the new place.
        for item in self.final.iterdir():
            if item.name in HYDRA_RECORDS or item.name.endswith(".log"):
                if (staged / item.name).exists():
                    continue
                if item.is_dir():
                    shutil.copytree(item, staged / item.name, copy_function=_link_or_copy)
                else:
                    _link_or_copy(item, staged / item.name)


def _link_or_copy(src, dst) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths; False where the platform cannot."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    result = renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    return result == 0


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    # Best effort: some platforms and file systems cannot open or sync a directory.
    try:
        _fsync_file(path)
    except OSError:
        pass


def sha256_file(path: Path) -> str:
    """The sha256 hex digest of a file, read in 8 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(8 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_state(path: Path, entry: dict[str, Any]) -> Optional[str]:
    """``missing`` when ``path`` is not a file, ``altered`` when it differs from its manifest entry
    in size or sha256 (the size first: it costs no read), None when it matches."""
    if not path.is_file():
        return "missing"
    if path.stat().st_size != entry["bytes"] or sha256_file(path) != entry["sha256"]:
        return "altered"
    return None


def altered_files(directory: Path, files: dict[str, dict[str, Any]]) -> Iterator[str]:
    """Yield, lazily, each name of a manifest file table whose file under ``directory`` is missing
    or altered (:func:`file_state`)."""
    for name, entry in files.items():
        if file_state(directory / name, entry) is not None:
            yield name


def file_table(root: Path, exclude: tuple[str, ...] = (MANIFEST,), known: Optional[dict[str, str]] = None) -> dict[str, dict[str, object]]:
    """``{relative path: {sha256, bytes}}`` for every artifact file under ``root``, sorted.

    Hydra's ``.hydra/`` records and logs describe the run (times, paths), not the model,
    so they are not hashed: two forges of one recipe must hash alike. ``known`` gives hashes
    already computed (while writing) by relative path.
    """
    table: dict[str, dict[str, object]] = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = path.relative_to(root).as_posix()
        if rel in exclude or rel.endswith(".log") or rel.split("/")[0] in HYDRA_RECORDS:
            continue
        digest = (known or {}).get(rel) or sha256_file(path)
        table[rel] = {"sha256": digest, "bytes": path.stat().st_size}
    return table


def complete_artifact(directory: Path, recipe: dict[str, Any]) -> Optional[dict[str, Any]]:
    """The manifest of ``directory`` if it is a complete, unaltered artifact of ``recipe``; else None."""
    from vedforge.pipeline.manifest import read_manifest

    try:
        manifest = read_manifest(directory)
    except (OSError, ValueError):
        return None
    if manifest.get("recipe") != recipe:
        return None
    # Stop hashing at the first altered file.
    if next(altered_files(directory, manifest.get("files", {})), None) is not None:
        return None
    return manifest


def write_recipe_records(out: Path, recipe_text: str, hydra_records: Optional[Path], final: Path) -> None:
    """The recipe beside the artifact: Hydra's ``.hydra`` records of this run, or the recipe alone
    (``.hydra/config.yaml``) where no Hydra run directory is at hand."""
    if hydra_records is not None and hydra_records.is_dir():
        if hydra_records.parent.absolute() != final.absolute():
            shutil.copytree(hydra_records, out / ".hydra")
        return
    (out / ".hydra").mkdir()
    (out / ".hydra" / "config.yaml").write_text(recipe_text)
