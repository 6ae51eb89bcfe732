"""The local stack's settings: the local section (configuration/areas.py) plus what the stack takes from others.

`LocalSettings.from_config` reads invoke's config (invoke.yaml, INVOKE_* variables) through configuration.areas;
relative paths resolve against the repository root.
"""

from dataclasses import asdict, dataclass
from pathlib import Path

from configuration import areas

REPO_ROOT = areas.REPO_ROOT


@dataclass(frozen=True)
class LocalSettings(areas.LocalSettings):
    """local.* and, from the other sections, the model the endpoint serves, the function package and the region
    (the defaults are those sections' own)."""

    region: str = areas.AwsSettings.region
    model_dir: Path = areas.TrainSettings.model_dir
    archive: Path = areas.TrainSettings.archive
    function_zip: Path = areas.ProjectSettings.function_zip

    @classmethod
    def from_config(cls, config):
        train = areas.load(config, areas.TrainSettings)
        return cls(**asdict(areas.load(config, areas.LocalSettings)),
                   region=areas.load(config, areas.AwsSettings).region, model_dir=train.model_dir,
                   archive=train.archive, function_zip=areas.load(config, areas.ProjectSettings).function_zip)

    @property
    def endpoint_url(self):
        return f"http://{self.host}:{self.endpoint_port}"

    @property
    def function_url(self):
        return f"http://{self.host}:{self.function_port}"
