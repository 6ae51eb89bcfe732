"""What a model directory holds (and model.tar.gz at its top level): the file names serving reads and training writes.

A flat module like every file of inference/: it ships in the archive's code/ and is imported by bare name.
"""

from pathlib import Path

WEIGHTS_FILE = "model.pth"            # state_dict of the bare model
CONFIG_FILE = "model_config.json"     # architecture, class names, image size, version
CODE_DIR = "code"                     # every inference/*.py plus requirements.txt
INFERENCE_DIR = Path(__file__).resolve().parent   # the folder these modules come from: inference/ in the repository
