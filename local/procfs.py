"""What Linux's /proc says about processes: the one copy of these readings, for the local stack's supervision, the
load test and the tests that look at the stack's processes. Each answers None or an empty list once a process
has gone (a pid read from /proc may exit before its files are read)."""

import os
from pathlib import Path

PROC = Path("/proc")


def available():
    """False where there is no /proc (not Linux): callers then trust what they recorded."""
    return PROC.is_dir()


def pids():
    """Every pid /proc lists now."""
    return [int(entry.name) for entry in PROC.glob("[0-9]*")]


def stat_fields(pid):
    """The fields of /proc/<pid>/stat after the command name: [state, ppid, pgrp, ...], or None once it has gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def process_state(pid):
    """The one-letter state (R, S, Z...), or None once the process has gone."""
    fields = stat_fields(pid)
    return fields[0] if fields else None


def is_running(pid):
    """True while the process exists and is not a zombie."""
    return process_state(pid) not in (None, "Z")


def parent_pid(pid):
    fields = stat_fields(pid)
    return int(fields[1]) if fields else None


def _live_where(field, value):
    found = []
    for pid in pids():
        fields = stat_fields(pid)
        if fields and int(fields[field]) == value and fields[0] != "Z":
            found.append(pid)
    return sorted(found)


def group_processes(pgid):
    """Live pids of a process group (a server with everything it started: workers, TorchServe's Java frontend)."""
    return _live_where(2, pgid)


def children(pid):
    """Live pids whose parent is `pid` (gunicorn's workers of a master)."""
    return _live_where(1, pid)


def cmdline(pid):
    """The command line's arguments as bytes, or None once the process has gone."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return None


def cmdline_text(pid):
    return b" ".join(cmdline(pid) or ()).decode(errors="replace")


def processes_naming(text):
    """Live pids, other than this process, whose command line contains `text` (a state folder, say)."""
    return sorted(pid for pid in pids() if pid != os.getpid() and text in cmdline_text(pid) and is_running(pid))


def cpu_seconds(pid, with_reaped_children=False):
    """User + system CPU seconds of a process (and, when asked, of its children it has reaped); None once gone."""
    fields = stat_fields(pid)
    if not fields:
        return None
    ticks = fields[11:15] if with_reaped_children else fields[11:13]   # utime stime [cutime cstime]
    return sum(int(value) for value in ticks) / os.sysconf("SC_CLK_TCK")


def rss_mib(pid):
    """Resident set size from /proc/<pid>/status, in MiB (None once it has gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def environ_of(pid):
    """A process's environment from /proc/<pid>/environ, as a dict."""
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    pairs = (item.split(b"=", 1) for item in raw.split(b"\0") if b"=" in item)
    return {key.decode(errors="replace"): value.decode(errors="replace") for key, value in pairs}
