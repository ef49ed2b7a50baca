"""Harness of the hostile-input corpus (issue 19): every input is generated in code here (nothing
downloaded, nothing from ../shared), every command runs in its own process, and each case checks
the exit status, the message, the peak memory, the time, and that no file but the command's own
output changed.

``run(args, ...)`` runs ``python -m pulmo ARGS`` and returns a :class:`Run`; a watchdog kills a
process that passes :data:`KILL_RSS_MB` (the test then fails on its peak) or the time limit.
``Snapshot(root)`` records every file under ``root`` (size, mtime, SHA-1) to compare after a run.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
#: Budgets of the issue: peak memory of any run, and the time a refusal may take.
PEAK_MB = 3072
REFUSAL_S = 5.0
#: The watchdog's limits: past these the process is killed (a hang or a blow-up).
KILL_RSS_MB = 4096
KILL_S = 60.0


@dataclass
class Run:
    args: list[str]
    returncode: int
    stdout: str
    stderr: str
    peak_mb: float
    seconds: float
    killed: str | None  # "memory" or "time" when the watchdog stopped it

    @property
    def output(self) -> str:
        return self.stdout + self.stderr

    def assert_refused(self, *fragments: str, exit_code: int = 2, max_s: float = REFUSAL_S) -> None:
        """A clear refusal: the exit status, each fragment in the message (case-insensitive), no
        traceback or internal error, within the memory and time budgets."""
        assert self.killed is None, f"killed ({self.killed}) after {self.seconds:.1f} s, {self.peak_mb:.0f} MB"
        assert "Traceback" not in self.output and "internal error" not in self.output, self.output[-2000:]
        assert self.returncode == exit_code, f"exit {self.returncode}, expected {exit_code}: {self.output[-2000:]}"
        low = self.output.lower()
        for f in fragments:
            assert f.lower() in low, f"{f!r} not in: {self.output[-2000:]}"
        self.assert_budgets(max_s)

    def assert_ok(self, exit_code: int = 0, max_s: float = KILL_S) -> None:
        assert self.killed is None, f"killed ({self.killed})"
        assert "Traceback" not in self.output and "internal error" not in self.output, self.output[-2000:]
        assert self.returncode == exit_code, f"exit {self.returncode}: {self.output[-2000:]}"
        self.assert_budgets(max_s)

    def assert_budgets(self, max_s: float = REFUSAL_S) -> None:
        assert self.peak_mb < PEAK_MB, f"peak memory {self.peak_mb:.0f} MB"
        assert self.seconds < max_s, f"took {self.seconds:.1f} s (budget {max_s} s)"


# The command runs as the child of this small process, which writes the child's peak resident
# memory (wait4, kB -> MB) to $PULMO_TEST_RSS_FILE and exits with its status. Measured from the
# test process itself, the peak would include the test process's own memory: on Linux a process
# started by fork (or vfork) + exec inherits the peak of the process it was forked from.
_MEASURE = r"""
import os, subprocess, sys
p = subprocess.Popen([sys.executable, "-m", "pulmo", *sys.argv[1:]])
_, status, usage = os.wait4(p.pid, 0)
with open(os.environ["PULMO_TEST_RSS_FILE"], "w") as fh:
    fh.write(str(usage.ru_maxrss / 1024))
code = os.waitstatus_to_exitcode(status)
sys.exit(code if code >= 0 else 128 - code)
"""


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as fh:
            return [int(c) for c in fh.read().split()]
    except (OSError, ValueError):
        return []


def _rss_mb(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def run(args, cwd: Path | None = None, stdin: bytes | None = None, timeout: float = KILL_S,
        env: dict | None = None) -> Run:
    """``python -m pulmo ARGS`` in a new process (stdin closed unless given)."""
    args = [str(a) for a in args]
    full_env = {**os.environ, "PYTHONPATH": str(REPO), "PULMO_CT_MODELS": "none", **(env or {})}
    t0 = time.perf_counter()
    rss_fd, rss_file = tempfile.mkstemp(prefix="pulmo-rss-")
    os.close(rss_fd)
    full_env["PULMO_TEST_RSS_FILE"] = rss_file
    proc = subprocess.Popen([sys.executable, "-c", _MEASURE, *args], cwd=cwd, env=full_env,
                            stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    killed: list[str] = []
    finished = threading.Event()

    def watch():
        while not finished.is_set():
            if max([_rss_mb(proc.pid)] + [_rss_mb(c) for c in _children(proc.pid)]) > KILL_RSS_MB:
                killed.append("memory")
            elif time.perf_counter() - t0 > timeout:
                killed.append("time")
            if killed:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                return
            finished.wait(0.05)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    chunks: dict[str, bytes] = {}

    def drain(name, stream):
        chunks[name] = stream.read()

    readers = [threading.Thread(target=drain, args=(n, s), daemon=True)
               for n, s in (("out", proc.stdout), ("err", proc.stderr))]
    for r in readers:
        r.start()
    if stdin is not None:
        try:
            proc.stdin.write(stdin)
            proc.stdin.close()
        except BrokenPipeError:
            pass
    proc.wait()
    finished.set()
    seconds = time.perf_counter() - t0
    for r in readers:
        r.join()
    watcher.join()
    try:
        peak_mb = float(Path(rss_file).read_text() or 0.0)
    except (OSError, ValueError):
        peak_mb = 0.0
    Path(rss_file).unlink(missing_ok=True)
    return Run(args, proc.returncode, chunks.get("out", b"").decode("utf-8", "replace"),
               chunks.get("err", b"").decode("utf-8", "replace"), peak_mb, seconds,
               killed[0] if killed else None)


class Snapshot:
    """Every regular file under ``root``: (size, mtime_ns, SHA-1); symlinks by their target text."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.files = self._take()

    def _take(self) -> dict:
        out = {}
        for d, dirs, files in os.walk(self.root):
            for name in files + [x for x in dirs if os.path.islink(os.path.join(d, x))]:
                p = Path(d) / name
                rel = str(p.relative_to(self.root))
                if p.is_symlink():
                    out[rel] = ("link", os.readlink(p))
                elif p.is_file():
                    st = p.stat()
                    h = hashlib.sha1(p.read_bytes()).hexdigest() if st.st_size < 64 << 20 else "large"
                    out[rel] = (st.st_size, st.st_mtime_ns, h)
        return out

    def changed(self, allowed: tuple[str, ...] = ()) -> list[str]:
        """Files added, removed or changed since the snapshot, outside the ``allowed`` path prefixes."""
        now = self._take()
        keys = set(now) | set(self.files)
        diff = sorted(k for k in keys if now.get(k) != self.files.get(k))
        return [k for k in diff if not any(k == a or k.startswith(a.rstrip("/") + "/") for a in allowed)]


@pytest.fixture
def pulmo():
    return run
