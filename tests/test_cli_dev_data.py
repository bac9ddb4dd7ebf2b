"""``./dev test`` says, before the tests, which ones will skip for missing Debian datasets and how to install them."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.skipif(not (ROOT / "dev").is_file(), reason="needs the source tree's ./dev")


def _no_data_env(tmp_path: Path) -> dict[str, str]:
    empty = tmp_path / "empty"
    empty.mkdir(exist_ok=True)
    # CI sets FEDGMM_REQUIRE_DATA (missing data fails there): this is the fresh-machine case.
    env = {k: v for k, v in os.environ.items() if k != "FEDGMM_REQUIRE_DATA"}
    return {**env, "FEDGMM_FASHION_MNIST_DIR": str(empty), "FEDGMM_MLBENCH_DIR": str(empty),
            "FEDGMM_AUTO_INSTALL_DATA": "0"}  # fmt: skip


def test_install_data_check_lists_missing_sets_and_the_tests_that_skip(tmp_path: Path) -> None:
    run = subprocess.run(["bash", "scripts/install-data.sh", "--check"], cwd=ROOT, env=_no_data_env(tmp_path),
                         capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    assert run.returncode == 1, run.stderr
    for name in ("fashion-mnist", "shuttle", "satellite", "breastw"):
        assert re.search(rf"^{name} \(", run.stdout, flags=re.MULTILINE), run.stdout
    listed = re.findall(r"^\s+(tests/\S+)::(\w+)", run.stdout, flags=re.MULTILINE)
    assert len(listed) >= 5, run.stdout
    for path, name in listed:  # every test named exists
        assert f"def {name}(" in (ROOT / path).read_text(), (path, name)


def test_dev_says_which_tests_will_skip_and_the_install_command(tmp_path: Path) -> None:
    script = f"set -euo pipefail; cd {ROOT}; source <(sed -n '/^check_data() {{/,/^}}/p' dev); check_data"
    run = subprocess.run(["bash", "-c", script], env=_no_data_env(tmp_path), capture_output=True, text=True,
                         timeout=60, check=False)  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert "[dev] Debian datasets missing; these tests will skip:" in run.stderr
    assert "test_fashion_mnist_all" in run.stderr and "./dev data" in run.stderr
