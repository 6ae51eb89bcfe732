"""training/sigterm_relay.py as a container's PID 1 (a PID namespace of its own): it reaps the orphans it inherits."""

import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent

# Leaves an orphan that ends while the launcher still runs, then counts the zombies in the namespace.
LAUNCHER = """
import os, sys, time
from pathlib import Path
if os.fork() == 0:
    if os.fork() == 0:          # the grandchild, orphaned at once: the kernel makes PID 1 its parent
        time.sleep(0.2)
        os._exit(0)
    os._exit(0)
os.wait()
time.sleep(1.5)
states = []
for stat in Path("/proc").glob("[0-9]*/stat"):
    try:
        states.append(stat.read_text().rpartition(")")[2].split()[0])
    except OSError:
        pass
print("zombies:", states.count("Z"), flush=True)
sys.exit(3)
"""


def test_the_relay_as_pid_1_reaps_orphans_and_keeps_the_launchers_exit_status(tmp_path):
    launcher = tmp_path / "launcher.py"
    launcher.write_text(LAUNCHER)
    done = subprocess.run(
        ["unshare", "--pid", "--fork", "--mount-proc", "--kill-child",
         sys.executable, str(REPO_ROOT / "training" / "sigterm_relay.py"), sys.executable, str(launcher)],
        capture_output=True, text=True, timeout=60)
    assert "zombies: 0" in done.stdout, done.stdout + done.stderr
    assert done.returncode == 3, done.stdout + done.stderr
