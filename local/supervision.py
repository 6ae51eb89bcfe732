"""Supervision of the local stack's processes: the record of what runs (stack.json in the state folder), finding
our servers (recorded or orphaned) by their command lines, and stopping every process of the stack.

The pids are written before anything waits, so a deploy interrupted half-way leaves a record the next deploy or
destroy uses to stop what was started; processes whose command line names this state folder are found and
stopped even when stack.json is gone.
"""

import json
import os
import signal
import time
from pathlib import Path

from local import procfs
from local.servers import COMPONENTS, ENDPOINT_RUNTIMES, SERVER_MODULES, TORCHSERVE_PROGRAMS

STATE_FILE = "stack.json"
STOP_TIMEOUT_S = 35          # gunicorn's graceful timeout is 30 s


# --------------------------------------------------------------------------------------------------- state file

def state_path(settings):
    return Path(settings.state_dir) / STATE_FILE


def read_state(settings):
    try:
        return json.loads(state_path(settings).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def write_state(settings, state):
    path = state_path(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(state, indent=2, default=str) + "\n")
    os.replace(tmp, path)


# ------------------------------------------------------------------------------------------------ finding them

def is_our_server(pid, component, settings):
    """True when `pid` runs our server for this state folder (not a recycled pid of something else)."""
    modules = ENDPOINT_RUNTIMES.values() if component == "endpoint" else (SERVER_MODULES[component],)
    if not procfs.available():   # not Linux: trust the record if the pid exists
        try:
            os.kill(pid, 0)
            return True
        except OSError:
            return False
    text = procfs.cmdline_text(pid)
    return any(module in text for module in modules) and str(Path(settings.state_dir).resolve()) in text


def group_alive(pgid):
    """True while a process of the group runs. Zombies do not count: once deploy's invoke process has exited,
    the servers' parent is the init process, which may take seconds to collect their exit status."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return not procfs.available() or bool(procfs.group_processes(pgid))


def reap(pid):
    """Collect the exit status when we are the parent (deploy in this process), so no zombie keeps the pid."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def orphans(settings):
    """(component, pid) of our servers for this state folder that stack.json does not know about."""
    if not procfs.available():
        return []
    found = []
    for pid in procfs.pids():
        for component in COMPONENTS:
            try:
                leader = os.getpgid(pid) == pid    # the gunicorn master; its workers are in its group
            except ProcessLookupError:
                continue
            if leader and pid != os.getpid() and is_our_server(pid, component, settings):
                found.append((component, pid))
    return found


def stack_processes(settings):
    """Live pids of every process of this state folder's stack, whichever process group it is in."""
    programs = (*SERVER_MODULES.values(), *ENDPOINT_RUNTIMES.values(), *TORCHSERVE_PROGRAMS)
    return [pid for pid in procfs.processes_naming(str(Path(settings.state_dir).resolve()))
            if any(program in procfs.cmdline_text(pid) for program in programs)]


# ---------------------------------------------------------------------------------------------------- stopping

def _signal(send, ids, signum):
    for target in ids:
        try:
            send(target, signum)
        except ProcessLookupError:
            pass


def _wait_while(still_running, ids, deadline=None):
    """Reap `ids` until still_running(ids) is false (or, with a deadline, until then); True when they are gone."""
    while still_running(ids):
        if deadline is not None and time.monotonic() >= deadline:
            return False
        for target in ids:
            reap(target)
        time.sleep(0.05)
    return True


def _groups_running(pgids):
    return any(group_alive(pgid) for pgid in pgids)


def _processes_running(pids):
    return any(procfs.is_running(pid) for pid in pids)


def stop_groups(pgids, timeout_s=STOP_TIMEOUT_S):
    """SIGTERM each gunicorn master (it stops its workers after their in-flight requests, as on SageMaker);
    SIGKILL whatever is left of the process groups after timeout_s.

    The signal goes to the master only: a worker killed first would be replaced by the master before it
    handles its own SIGTERM, which makes the shutdown seconds longer.
    """
    _signal(os.kill, pgids, signal.SIGTERM)
    if not _wait_while(_groups_running, pgids, time.monotonic() + timeout_s):
        _signal(os.killpg, pgids, signal.SIGKILL)
        _wait_while(_groups_running, pgids)


def stop_stragglers(settings, timeout_s=STOP_TIMEOUT_S):
    """SIGTERM, then SIGKILL after timeout_s, each process of the stack the stop of its groups left, until none is left.

    A group is stopped through its leader, found by its command line: a group whose leader had already exited
    (a server that failed during start, once its children outlive it) is found by no one, and nothing else
    signals or waits for its other members.
    A scan of /proc misses a child forked after it listed /proc by a parent that exited before it was read (as
    TorchServe's CLI starts the Java frontend and exits): the scan after an empty one sees it.
    """
    while (left := stack_processes(settings)) or (left := stack_processes(settings)):
        _signal(os.kill, left, signal.SIGTERM)
        if not _wait_while(_processes_running, left, time.monotonic() + timeout_s):
            _signal(os.kill, left, signal.SIGKILL)
            _wait_while(_processes_running, left)


def stop_all(settings):
    """Stop every process of the stack (recorded or orphaned) and forget them; returns what was stopped.
    Returns only once no process of the stack is left."""
    state = read_state(settings)
    stopped = []
    for component in COMPONENTS:
        pid = (state.get(component) or {}).get("pid")
        if pid and is_our_server(pid, component, settings):
            stopped.append((component, pid))
    stopped.extend(orphan for orphan in orphans(settings) if orphan not in stopped)
    stop_groups([pid for _component, pid in stopped])
    if procfs.available():
        stop_stragglers(settings)
    state_path(settings).unlink(missing_ok=True)
    return stopped
