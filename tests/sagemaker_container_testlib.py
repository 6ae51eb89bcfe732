"""A SageMaker training container on this machine, without Docker: the job's own entry point runs as PID 1 of fresh
mount, PID, UTS and network namespaces, with a temporary folder mounted at /opt/ml and laid out as SageMaker lays
it out (input/config/*.json, input/data/<channel>/, model/, output/, checkpoints/), the hostname algo-1 and a
loopback-only network (so torchrun's default port cannot collide with anything on the machine).

What stands in for AWS is only what puts files in place: the channels are copied from (moto's) S3 by the test. Every
process in the container is real, and SIGTERM goes to PID 1, as `docker stop` delivers it; the kernel drops it there
unless PID 1 has a handler. When PID 1 exits, the kernel kills whatever is left in the container.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

HOST = "algo-1"
CONTAINER_ROOT = "/opt/ml"
# The SageMaker PyTorch training images set these; the job's own Environment comes on top.
IMAGE_ENVIRONMENT = {"PYTHONUNBUFFERED": "1", "PYTHONDONTWRITEBYTECODE": "1", "LANG": "C.UTF-8", "HOME": "/root",
                     "SAGEMAKER_TRAINING_MODULE": "sagemaker_pytorch_container.training:main"}
# A job without a ContainerEntrypoint (every tuning job) starts the image's own: a bash script that SageMaker runs
# with the argument `train` and that runs the sagemaker-training toolkit's `train` as its child (after setting the
# hostname), so bash is PID 1 there too.
IMAGE_ENTRYPOINT_SCRIPT = """#!/bin/bash
if [ "$1" = train ]; then
    train
else
    eval "$@"
fi
"""
_ENTER = r"""set -e
mount --bind "$1" /opt/ml
mount --bind "$2" /etc/hosts
hostname algo-1
ip link set lo up
cd /
shift 2
exec "$@"
"""


def _cannot_run_containers():
    """Why this machine cannot run the container (root with unshare, mount and ip, as the build machines are)."""
    if os.geteuid() != 0:
        return "needs root for the mount and PID namespaces"
    missing = [tool for tool in ("unshare", "ip", "mount") if shutil.which(tool) is None]
    return f"needs {', '.join(missing)} on PATH" if missing else ""


class TrainingContainer:
    """One training container's /opt/ml under `root`; `start(command)` runs it, `stop()` sends SIGTERM to PID 1."""

    def __init__(self, root, *, hyperparameters, channels, instance_type="ml.m5.xlarge", job_name="local-job",
                 environment=None, checkpoints=True):
        self.root = Path(root)
        self.job_name = job_name
        self.instance_type = instance_type
        self.environment = dict(environment or {})
        config = self.root / "input" / "config"
        config.mkdir(parents=True, exist_ok=True)
        for folder in ("model", "output/data", "code"):
            (self.root / folder).mkdir(parents=True, exist_ok=True)
        if checkpoints:
            (self.root / "checkpoints").mkdir(exist_ok=True)
        (config / "hyperparameters.json").write_text(json.dumps(hyperparameters))
        (config / "inputdataconfig.json").write_text(json.dumps(
            {name: {"TrainingInputMode": "File", "S3DistributionType": "FullyReplicated", "RecordWrapperType": "None"}
             for name in channels}))
        (config / "resourceconfig.json").write_text(json.dumps({
            "current_host": HOST, "current_instance_type": instance_type, "current_group_name": "homogeneousCluster",
            "hosts": [HOST], "network_interface_name": "eth0",
            "instance_groups": [{"instance_group_name": "homogeneousCluster", "instance_type": instance_type,
                                 "hosts": [HOST]}]}))
        for name, files in channels.items():
            target = self.root / "input" / "data" / name
            target.mkdir(parents=True, exist_ok=True)
            for relative, body in files.items():
                path = target / relative
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(body)
        self.starts = 0
        self.log_path = None
        self.process = None

    def path(self, container_path):
        """Where a path inside the container (/opt/ml/...) lies on this machine."""
        return self.root / Path(container_path).relative_to(CONTAINER_ROOT)

    def image_entrypoint(self):
        """The command SageMaker runs for a job that names no entrypoint: the image's, with `train`."""
        script = self.path("/opt/ml/input/image-entrypoint.sh")
        script.write_text(IMAGE_ENTRYPOINT_SCRIPT)
        return ["bash", "-m", "/opt/ml/input/image-entrypoint.sh", "train"]

    def start(self, command):
        """Run `command` (the container's entrypoint and arguments) as the container's PID 1."""
        if _cannot_run_containers():
            raise RuntimeError(f"a training container {_cannot_run_containers()}")
        Path(CONTAINER_ROOT).mkdir(parents=True, exist_ok=True)      # the mount point; stays empty on the host
        hosts = self.root.parent / f"{self.root.name}.hosts"
        hosts.write_text(f"127.0.0.1 localhost {HOST}\n")
        bin_dir = str(Path(sys.executable).parent)
        env = {"PATH": f"{bin_dir}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
               **IMAGE_ENVIRONMENT, "TRAINING_JOB_NAME": self.job_name,
               "TRAINING_JOB_ARN": f"arn:aws:sagemaker:us-east-1:123456789012:training-job/{self.job_name}",
               "AWS_REGION": "us-east-1", **self.environment}
        self.starts += 1            # a log per start: a restarted job's log does not replace the first one's
        self.log_path = self.root.parent / f"{self.root.name}-{self.starts}.log"
        self._log = open(self.log_path, "wb")
        self.process = subprocess.Popen(
            ["unshare", "--mount", "--pid", "--uts", "--net", "--fork", "--mount-proc", "--kill-child",
             "sh", "-c", _ENTER, "enter", str(self.root), str(hosts), *command],
            env=env, stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        return self

    def pid_one(self):
        """This machine's id of the container's PID 1 (unshare's only child)."""
        children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children")
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            found = children.read_text().split() if children.exists() else []
            if found:
                return int(found[0])
            time.sleep(0.05)
        raise RuntimeError("the container's first process did not start")

    def stop(self):
        """SIGTERM to PID 1, as SageMaker stops a container (spot interruption, StopTrainingJob)."""
        os.kill(self.pid_one(), signal.SIGTERM)

    def log(self):
        return self.log_path.read_text(errors="replace")

    def wait_for_line(self, text, timeout_s):
        """Wait until the container has logged a line containing `text`; False if it ended or the time ran out."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if text in self.log():
                return True
            if self.process.poll() is not None:
                return text in self.log()
            time.sleep(0.1)
        return False

    def wait(self, timeout_s):
        """The container's exit status, or None if it was still running after `timeout_s` (it is then killed)."""
        try:
            return self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            return None
        finally:
            self.close()

    def close(self):
        if self.process is not None and self.process.poll() is None:
            self.process.kill()          # --kill-child takes the container's processes with it
            self.process.wait()
        if getattr(self, "_log", None) is not None:
            self._log.close()
            self._log = None
