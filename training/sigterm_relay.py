"""Run a launcher and pass the SIGTERM that SageMaker sends on to the processes the launcher started.

SageMaker stops a training container (spot interruption, StopTrainingJob) with SIGTERM to its PID 1, then SIGKILL.
The SageMaker SDK's container entrypoint leaves bash as PID 1 running its driver (basic_script_driver.py, which
starts train.py, or torchrun_driver.py, which starts torchrun); bash has no handler, so the kernel drops the signal
there, and the driver would not forward it either. The job's command therefore execs this relay as PID 1
(aws/sagemaker_jobs.py). It runs the driver and, on SIGTERM, signals the driver's children: train.py, which
checkpoints and exits, or torchrun, which signals every rank. The driver itself keeps running to relay their log
and exit status. As PID 1 the relay also inherits every orphaned process of the container; it reaps them (waits for
each), or they would stay zombies until the container ends.

    python training/sigterm_relay.py python /opt/ml/input/data/sm_drivers/distributed_drivers/torchrun_driver.py
"""

import os
import signal
import subprocess
import sys
from pathlib import Path


def children_of(pid):
    """Ids of the running processes whose parent is `pid`."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()   # after "(comm)", which may hold spaces
        except OSError:                                             # the process ended meanwhile
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def wait_reaping(pid):
    """`pid`'s exit code (Popen's: -N when killed by signal N), reaping every other child that ends meanwhile or has
    ended by then."""
    while True:
        ended, status = os.waitpid(-1, 0)
        if ended == pid:
            break
    while True:
        try:
            ended, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:      # no children left
            break
        if ended == 0:                 # only running ones left
            break
    return os.waitstatus_to_exitcode(status)


def main(argv):
    if not argv:
        print("usage: sigterm_relay.py COMMAND [ARG ...]", file=sys.stderr)
        return 2
    launcher = subprocess.Popen(argv)

    def relay(signum, frame):
        for pid in children_of(launcher.pid) or [launcher.pid]:   # before the driver has started anything: itself
            try:
                os.kill(pid, signum)
            except ProcessLookupError:
                pass

    signal.signal(signal.SIGTERM, relay)
    status = launcher.returncode = wait_reaping(launcher.pid)
    return 128 - status if status < 0 else status      # killed by a signal: the shell's 128 + signal number


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
