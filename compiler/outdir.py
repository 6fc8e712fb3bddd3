"""The output folder of `tinyc build`: tinyc owns only what it made there.

- A folder tinyc made holds its marker, MARKER, a JSON file listing the top-level entries the
  build wrote. `-o` into an existing folder without the marker is refused unless the folder is
  empty; a rebuild replaces only the entries the marker lists (files of the user beside them
  survive).
- One build per folder at a time: the build holds an exclusive flock on the folder itself (a
  second build fails at once); `tinyc emulate` and `tinyc flash` take it too (emulate shared).
- A build is generated (and its firmware built) in a hidden staging folder inside the output
  folder; only when everything succeeded are the old entries replaced by the new ones with
  renames, with SIGINT/SIGTERM/SIGHUP held back meanwhile. A refused or interrupted build
  leaves the previous result as it was; the staging folder is removed on every exit path.
- write_atomic / atomic_output: files written under a temporary name in the destination's
  folder, then renamed over the destination (os.replace).
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import shutil
import signal
import tempfile
from pathlib import Path

from .errors import TinycError

MARKER = ".tinyc-build.json"
STAGING_PREFIX = ".tinyc-staging-"
TRASH_PREFIX = ".tinyc-old-"
# written into a build folder after the build, by `tinyc emulate`: tinyc's too
LATER_ENTRIES = ("tinyc_host", "tinyc_train_host")


def _leftover(name: str) -> bool:
    """A staging or trash folder of a build that was killed (SIGKILL) before cleaning up."""
    return name.startswith((STAGING_PREFIX, TRASH_PREFIX))


def read_marker(out: Path) -> dict | None:
    try:
        data = json.loads((out / MARKER).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or not isinstance(data.get("entries"), list):
        return None
    return data


def owned_entries(out: Path) -> set[str]:
    """The top-level entries of `out` that tinyc wrote (empty when it is not tinyc's folder)."""
    marker = read_marker(out)
    if marker is None:
        return set()
    names = {n for n in marker["entries"] if isinstance(n, str) and n and "/" not in n
             and n not in (".", "..")}
    return names | set(LATER_ENTRIES)


def _nearest_existing(path: Path) -> Path:
    p = path.absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def check_output_dir(text: str) -> Path:
    """The -o folder of a build, checked before any work: not empty text, not a file, writable
    (or creatable), and either new, empty or made by tinyc."""
    if not str(text).strip():
        raise TinycError("-o '': give the output folder, e.g. -o out/ (tinyc never builds into "
                         "the current folder by default)")
    out = Path(text)
    if out.exists() and not out.is_dir():
        raise TinycError(f"-o {out}: is a file, not a folder; give a new folder, e.g. -o {out}.d/")
    if out.is_dir():
        if not os.access(out, os.W_OK | os.X_OK):
            raise TinycError(f"-o {out}: the folder is not writable; give a folder you can write")
        foreign = [n for n in os.listdir(out) if not _leftover(n)]
        if foreign and read_marker(out) is None:
            raise TinycError(
                f"-o {out}: the folder exists, is not empty and was not made by tinyc (no "
                f"{MARKER}); tinyc writes only into a new or empty folder or one it built: give "
                f"another folder, e.g. -o {out / 'tinyc-out'}")
        return out
    base = _nearest_existing(out)
    if not base.is_dir():
        raise TinycError(f"-o {out}: cannot create it: {base} is a file, not a folder")
    if not os.access(base, os.W_OK | os.X_OK):
        raise TinycError(f"-o {out}: cannot create it: {base} is not writable; give a folder "
                         "you can write")
    return out


def _lock(out: Path, exclusive: bool, what: str) -> int:
    try:
        fd = os.open(out, os.O_RDONLY | os.O_DIRECTORY)
    except OSError as e:
        raise TinycError(f"{out}: cannot open the folder ({e.strerror})") from None
    try:
        fcntl.flock(fd, (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB)
    except OSError as e:
        os.close(fd)
        if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
            raise TinycError(f"{out}: another tinyc build is writing this folder (or a tinyc "
                             f"command is using it); wait for it to finish, then {what} "
                             "again") from None
        raise TinycError(f"{out}: cannot lock the folder ({e.strerror})") from None
    return fd


@contextlib.contextmanager
def using(out, exclusive: bool = False, what: str = "run the command"):
    """Hold the folder's lock (shared: commands that only add their own files; exclusive:
    commands that rewrite the build) while the block runs."""
    out = Path(out)
    if not out.is_dir():
        yield
        return
    fd = _lock(out, exclusive, what)
    try:
        yield
    finally:
        os.close(fd)


@contextlib.contextmanager
def _signals_held():
    """SIGINT, SIGTERM and SIGHUP wait until the block is done (the renames of a commit)."""
    sigs = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP}
    old = signal.pthread_sigmask(signal.SIG_BLOCK, sigs)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


class BuildFolder:
    """A build into `out`: the lock, the staging folder (`stage`) the build writes into, and
    commit() that moves the staged entries into place. Use as a context manager: on any exit
    without commit() the folder is left as it was (a folder it had to create is removed)."""

    def __init__(self, out: Path):
        self.out = Path(out)
        self.stage: Path | None = None
        self._created: list[Path] = []
        self._fd: int | None = None

    def __enter__(self) -> "BuildFolder":
        try:
            self._create()
            self._fd = _lock(self.out, True, "build")
            check_output_dir(str(self.out))   # again, now that no other build can change it
            for name in os.listdir(self.out):   # a killed build's leftovers
                if _leftover(name):
                    shutil.rmtree(self.out / name, ignore_errors=True)
            try:
                self.stage = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=self.out))
            except OSError as e:
                raise TinycError(f"-o {self.out}: cannot write into the folder ({e.strerror}); "
                                 "give a folder you can write") from None
        except BaseException:
            self._cleanup()
            raise
        return self

    def _create(self) -> None:
        missing = []
        p = self.out.absolute()
        while not p.exists():
            missing.append(p)
            p = p.parent
        for d in reversed(missing):
            try:
                d.mkdir()
            except FileExistsError:
                continue
            except OSError as e:
                raise TinycError(f"-o {self.out}: cannot create {d} ({e.strerror}); give a "
                                 "folder you can write") from None
            self._created.append(d)

    def commit(self) -> None:
        """Replace the previous build's entries by the staged ones (renames on one file
        system), then write the marker listing them."""
        out, stage = self.out, self.stage
        new = sorted(os.listdir(stage))
        owned = owned_entries(out)
        clash = [n for n in new if os.path.lexists(out / n) and n not in owned]
        if clash:
            raise TinycError(f"{out / clash[0]}: tinyc writes this but did not make it (not "
                             f"in {out / MARKER}); move it out of {out} and build again")
        trash = Path(tempfile.mkdtemp(prefix=TRASH_PREFIX, dir=out))
        with _signals_held():
            for name in sorted(owned | set(new)):
                if name != MARKER and os.path.lexists(out / name):
                    os.rename(out / name, trash / name)
            for name in new:
                os.rename(stage / name, out / name)
            write_atomic(out / MARKER, json.dumps(
                {"tool": "tinyc", "note": "tinyc build wrote these entries; a rebuild replaces "
                 "them and nothing else", "entries": new}, indent=1) + "\n")
        shutil.rmtree(trash, ignore_errors=True)
        self._created = []   # the folder is a build now: keep it

    def _cleanup(self) -> None:
        if self.stage is not None:
            shutil.rmtree(self.stage, ignore_errors=True)
            self.stage = None
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        for d in reversed(self._created):   # innermost first; only while empty
            try:
                d.rmdir()
            except OSError:
                break
        self._created = []

    def __exit__(self, *exc) -> None:
        self._cleanup()


def write_atomic(path, data: str | bytes) -> None:
    """Write `data` to `path` under a temporary name in the same folder, then rename it."""
    with atomic_output(path) as tmp:
        Path(tmp).write_bytes(data.encode() if isinstance(data, str) else data)


@contextlib.contextmanager
def atomic_output(path, suffix: str = "", option: str = ""):
    """Yields a temporary file name beside `path` (created now, so that an unwritable place
    fails at once) for the caller to write; renamed to `path` when the block succeeds, removed
    otherwise. `suffix`: the ending the writer needs (np.savez appends .npz to other names)."""
    path = Path(path)
    what = f"{option} {path}" if option else str(path)
    if path.is_dir():
        raise TinycError(f"{what}: is a folder; give a file name")
    if not path.parent.is_dir():
        raise TinycError(f"{what}: folder {path.parent} does not exist; create it or give "
                         "another place")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix or ".tmp",
                                   dir=path.parent)
    except OSError as e:
        raise TinycError(f"{what}: cannot write there ({e.strerror}); give a writable "
                         "place") from None
    os.close(fd)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
