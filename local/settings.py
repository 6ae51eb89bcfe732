"""The local stack's settings: where its state lives, its ports and names, and the model it serves.

`LocalSettings.from_config` reads invoke's config (invoke.yaml, INVOKE_* variables); relative paths resolve against
the repository root.
"""

from dataclasses import dataclass
from pathlib import Path

from stack_common.function_zip import DEFAULT_FUNCTION_ZIP

REPO_ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class LocalSettings:
    state_dir: Path
    host: str = "127.0.0.1"
    endpoint_port: int = 8080
    function_port: int = 9001
    endpoint_runtime: str = "auto"       # toolkit | builtin | auto (toolkit where Java >= 11 is installed)
    endpoint_workers: int = 2            # the builtin runtime's; the toolkit's are the image's: one per CPU
    reserved_concurrency: int = 10
    endpoint_name: str = "dog-breeds-local"
    function_name: str = "dog-breeds-local"
    region: str = "us-east-1"
    model_dir: Path = REPO_ROOT / "build/model"
    archive: Path = REPO_ROOT / "build/model.tar.gz"
    function_zip: Path = DEFAULT_FUNCTION_ZIP
    url_allow_networks: str = ""
    image_fetch_timeout_s: float = 10.0
    start_timeout_s: float = 180.0
    # More container environment, merged over the module's as Terraform's endpoint `environment` variable is:
    # ((name, value), ...), e.g. (("OMP_NUM_THREADS", "2"),)
    endpoint_environment: tuple = ()

    @classmethod
    def from_config(cls, config):
        """Settings from invoke's config (invoke.yaml, INVOKE_* variables): the local and train sections."""
        local = config.get("local", {}) or {}
        train = config.get("train", {}) or {}
        aws = config.get("aws", {}) or {}

        def path(value, default):
            chosen = Path(value or default)
            return chosen if chosen.is_absolute() else REPO_ROOT / chosen

        defaults = cls(state_dir=REPO_ROOT / ".state")
        return cls(
            state_dir=path(local.get("state_dir"), ".state"),
            host=str(local.get("host") or defaults.host),
            endpoint_port=int(local.get("endpoint_port") or defaults.endpoint_port),
            function_port=int(local.get("function_port") or defaults.function_port),
            endpoint_runtime=str(local.get("endpoint_runtime") or defaults.endpoint_runtime),
            endpoint_workers=int(local.get("endpoint_workers") or defaults.endpoint_workers),
            reserved_concurrency=int(local.get("reserved_concurrency") or defaults.reserved_concurrency),
            endpoint_name=str(local.get("endpoint_name") or defaults.endpoint_name),
            function_name=str(local.get("function_name") or defaults.function_name),
            region=str(aws.get("region") or defaults.region),
            model_dir=path(train.get("model_dir"), "build/model"),
            archive=path(train.get("archive"), "build/model.tar.gz"),
            url_allow_networks=str(local.get("url_allow_networks") or ""),
            image_fetch_timeout_s=float(local.get("image_fetch_timeout_s") or defaults.image_fetch_timeout_s),
            start_timeout_s=float(local.get("start_timeout_s") or defaults.start_timeout_s),
            endpoint_environment=tuple((str(name), str(value))
                                       for name, value in (local.get("endpoint_environment") or {}).items()),
        )

    @property
    def endpoint_url(self):
        return f"http://{self.host}:{self.endpoint_port}"

    @property
    def function_url(self):
        return f"http://{self.host}:{self.function_port}"

