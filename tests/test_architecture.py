"""The dependency arrows of ARCHITECTURE, as import-linter contracts (pyproject.toml): kept on
this tree, and broken (exit 1, the contract named) by one wrong import in a copy of it."""

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")
PACKAGES = ("project", "scheduling", "deadletters", "monitoring")


def lint_imports(cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(LINT_IMPORTS), "--no-cache"], cwd=cwd, capture_output=True,
                          text=True, timeout=120, env={"PYTHONPATH": str(cwd), "PATH": ""})


def test_the_contracts_are_kept():
    run = lint_imports(ROOT)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "0 broken" in run.stdout


def test_a_wrong_arrow_breaks_a_contract(tmp_path):
    for package in PACKAGES:
        shutil.copytree(ROOT / package, tmp_path / package,
                        ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    lease = tmp_path / "scheduling" / "engine" / "lease.py"
    lease.write_text(lease.read_text() + "\nfrom scheduling.billing import models  # noqa\n")
    status = tmp_path / "monitoring" / "status.py"
    status.write_text(status.read_text() + "\nfrom scheduling.engine import ledger  # noqa\n")

    run = lint_imports(tmp_path)

    assert run.returncode == 1, run.stdout + run.stderr
    assert "The scheduler engine knows nothing of billing BROKEN" in run.stdout
    assert "Other apps reach the engine through scheduling.beat only BROKEN" in run.stdout
    assert "2 broken" in run.stdout
