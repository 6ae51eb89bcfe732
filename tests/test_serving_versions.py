"""A model trained with this machine's torch loads and answers the same under the serving image's torch.

The serving environment (Python 3.12, torch 2.6.0, torchvision 0.21.0, as in the SageMaker PyTorch inference image)
is built by tools/check_serving_versions.py; .ci/setup builds it before the tests, so here it is only reused.
"""

import re
from pathlib import Path

from tools import check_serving_versions

REPO_ROOT = Path(__file__).resolve().parent.parent


def test_the_serving_torch_checked_is_the_one_terraform_deploys():
    variables = (REPO_ROOT / "terraform" / "variables.tf").read_text()
    deployed = re.search(r'framework_version\s*=\s*optional\(string,\s*"([^"]+)"\)', variables).group(1)
    module = (REPO_ROOT / "terraform" / "modules" / "endpoint" / "variables.tf").read_text()
    module_default = re.search(r'variable "framework_version" \{[^}]*?default\s*=\s*"([^"]+)"', module).group(1)
    assert check_serving_versions.SERVING_TORCH == deployed == module_default


def test_a_model_trained_here_answers_the_same_under_the_serving_images_torch_and_torchvision(trained_model_dir):
    archive = trained_model_dir.parent / "model.tar.gz"
    said = []
    here, serving, differences = check_serving_versions.compare(archive, log=said.append)

    # the image's Python too: a serving environment built on a fallback Python says so and fails here
    assert serving["python"].rsplit(".", 1)[0] == check_serving_versions.SERVING_PYTHON
    assert not [line for line in said if "not the image's" in line]
    marker = (check_serving_versions.default_venv() / "serving-packages.txt").read_text().split()
    assert f"python=={serving['python']}" in marker
    assert (serving["torch"].split("+")[0], serving["torchvision"].split("+")[0]) == ("2.6.0", "0.21.0")
    assert serving["torch"] != here["torch"]
    assert len(serving["answers"]) == 4
    assert differences == []
