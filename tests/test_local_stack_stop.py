"""stop_all leaves no process of the stack behind, even one whose group leader had already exited."""

import subprocess
import sys
import time
from pathlib import Path

from local import supervision
from local.settings import LocalSettings

# A server that starts a child and exits before it (as a failing server may): the child names the state folder and
# one of our programs, as TorchServe's frontend and workers do, but it is no group leader and nothing records it.
LEADER = ("import subprocess, sys; subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)', "
          "'local.toolkit_endpoint', sys.argv[1]]); print('started', flush=True)")


def test_stop_all_stops_the_children_of_a_server_that_has_exited(tmp_path):
    settings = LocalSettings(state_dir=tmp_path / "state")
    state_dir = str(Path(settings.state_dir).resolve())
    leader = subprocess.Popen([sys.executable, "-c", LEADER, state_dir], stdout=subprocess.PIPE,
                              start_new_session=True)
    assert leader.stdout.readline() == b"started\n"
    leader.wait()
    supervision.write_state(settings, {"endpoint": {"pid": leader.pid}})
    deadline = time.monotonic() + 10
    while not supervision.stack_processes(settings) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert supervision.stack_processes(settings), "the child should have outlived its leader"
    supervision.stop_all(settings)
    assert supervision.stack_processes(settings) == []
    assert not (Path(settings.state_dir) / "stack.json").exists()
