"""Child processes (PlatformIO, QEMU, gcc, the host harness) that die with tinyc.

Each child starts in its own process group, so that the group (the child and everything it
started: SCons, gcc, QEMU under PlatformIO) can be killed at once; processes below the child
that made groups of their own (`timeout`) are found in /proc and killed too. tinyc kills its
live children that way when it leaves: on normal exit (atexit), on an exception, and on SIGTERM,
SIGHUP or SIGINT (install_signal_handlers turns these into a `Terminated` exception, so the
`finally` blocks that clean up run too). On Linux the direct child also gets
PR_SET_PDEATHSIG(SIGKILL), which covers a SIGKILL of tinyc itself; the grandchildren then lose
their reader and die on their next write to the closed pipe.
"""
from __future__ import annotations

import atexit
import ctypes
import ctypes.util
import os
import signal
import subprocess
import sys

_live: set[subprocess.Popen] = set()

PR_SET_PDEATHSIG = 1


class Terminated(BaseException):
    """tinyc received SIGTERM, SIGHUP or SIGINT; exit status 128 + signum."""

    def __init__(self, signum: int):
        super().__init__(f"terminated by signal {signum}")
        self.signum = signum


def _load_prctl():
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True).prctl
    except (OSError, AttributeError):
        return None


_prctl = _load_prctl()
_parent_pid = os.getpid()


def _in_child() -> None:
    """Runs in the child between fork and exec: die with tinyc, even by SIGKILL."""
    if _prctl is not None:
        _prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != _parent_pid:   # tinyc died before prctl took effect
            os._exit(1)


def popen(cmd, **kwargs) -> subprocess.Popen:
    """subprocess.Popen in a process group of its own, killed when tinyc goes."""
    global _parent_pid
    _parent_pid = os.getpid()
    proc = subprocess.Popen(cmd, process_group=0, preexec_fn=_in_child, **kwargs)
    _live.add(proc)
    return proc


def _descendants(pid: int) -> list[int]:
    """The processes below `pid` (Linux: from /proc), also those that left its process group
    (`timeout` in a board's upload command puts itself and QEMU in a group of their own)."""
    children: dict[int, list[int]] = {}
    try:
        entries = os.listdir("/proc")
    except OSError:
        return []
    for name in entries:
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def kill(proc: subprocess.Popen) -> None:
    """Kills the child, its process group and every process below it, and reaps the child.
    (Not once it was reaped: its pid and group id could then belong to another process.)"""
    if proc.returncode is None:
        below = _descendants(proc.pid)   # before killing: orphans lose their parent link
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        for pid in below:
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pass
    _live.discard(proc)


def finished(proc: subprocess.Popen) -> None:
    """The child exited by itself (and was reaped)."""
    _live.discard(proc)


def run(cmd, *, input=None, timeout=None, capture_output=False, text=False,
        **kwargs) -> subprocess.CompletedProcess:
    """subprocess.run on a child that dies with tinyc; on timeout its group is killed and
    subprocess.TimeoutExpired raised."""
    if input is not None:
        kwargs["stdin"] = subprocess.PIPE
    if capture_output:
        kwargs["stdout"] = kwargs["stderr"] = subprocess.PIPE
    proc = popen(cmd, text=text, **kwargs)
    try:
        out, err = proc.communicate(input, timeout=timeout)
    except BaseException:
        kill(proc)
        for pipe in (proc.stdin, proc.stdout, proc.stderr):
            if pipe is not None:
                pipe.close()
        raise
    finished(proc)
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def kill_all() -> None:
    for proc in list(_live):
        kill(proc)


def _on_signal(signum, frame):
    raise Terminated(signum)


def install_signal_handlers() -> None:
    """SIGTERM, SIGHUP and SIGINT raise Terminated (the command line's main() catches it), so
    every `finally` runs and the children are killed on the way out."""
    for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
        signal.signal(sig, _on_signal)


atexit.register(kill_all)
