"""The runbook needs the project installed (`.ci/setup` installs it editable); without it, one line says so."""

import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def test_invoke_in_a_python_without_the_project_installed_says_to_run_setup_in_one_line(tmp_path):
    # A venv that sees every third-party package of this one, but not the project's editable install: a .pth line
    # adds a folder without processing the .pth files inside it.
    bare = tmp_path / "bare"
    venv.create(bare, with_pip=False)
    purelib = Path(sysconfig.get_paths(vars={"base": str(bare), "platbase": str(bare)})["purelib"])
    third_party = [entry for entry in sys.path if entry.endswith("site-packages")]
    (purelib / "shared.pth").write_text("\n".join(third_party) + "\n")

    result = subprocess.run([str(bare / "bin" / "python"), "-m", "invoke", "--list"], cwd=REPO_ROOT,
                            capture_output=True, text=True, timeout=120)

    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "this checkout is not installed: run `bash .ci/setup` (it installs the project into .venv), "
        "then use .venv/bin/invoke"]
    assert "Traceback" not in result.stdout + result.stderr
