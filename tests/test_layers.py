"""The layers in pyproject.toml ([tool.importlinter]) hold, and no module imports itself back.

CI runs `make test` only, so the contract is checked here as well as by `make check`. Both
checks read the source (grimp), importing nothing; imports inside functions and under
TYPE_CHECKING count like any other.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import grimp

ROOT = Path(__file__).resolve().parent.parent


def test_the_import_contracts_are_kept() -> None:
    run = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from importlinter.cli import lint_imports; "
            "sys.exit(lint_imports(no_cache=True, no_logo=True))",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "0 broken" in run.stdout


def test_no_module_imports_itself_back() -> None:
    graph = grimp.build_graph("crawler", cache_dir=None)
    circles = sorted(
        (importer, imported)
        for importer in graph.modules
        for imported in graph.find_modules_directly_imported_by(importer)
        if imported.startswith("crawler.")
        and graph.chain_exists(importer=imported, imported=importer)
    )
    assert circles == [], "import circles (A imports B, and B leads back to A): " + str(circles)


def test_the_code_is_ruff_formatted() -> None:
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "ruff",
            "format",
            "--check",
            "crawler",
            "tests",
            "bench",
            "fakemarket",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, "run `ruff format crawler tests bench fakemarket`:\n" + run.stdout
