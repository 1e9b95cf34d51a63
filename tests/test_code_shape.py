"""The product's code keeps the shape issue 19 set: no file over 600 lines, no function over 80.

A newcomer reads a module in one sitting and a function on one screen; these limits say when a
module has taken a second noun or a function a second job.
"""

from __future__ import annotations

import ast
from pathlib import Path

PRODUCT = Path(__file__).resolve().parent.parent / "crawler"
MAX_FILE_LINES = 600
MAX_FUNCTION_LINES = 80


def _modules() -> list[Path]:
    return sorted(PRODUCT.rglob("*.py"))


def test_no_product_file_is_over_600_lines() -> None:
    long_files = {
        str(path.relative_to(PRODUCT)): lines
        for path in _modules()
        if (lines := len(path.read_text().splitlines())) > MAX_FILE_LINES
    }
    assert long_files == {}


def test_no_function_is_over_80_lines() -> None:
    long_functions = {}
    for path in _modules():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = (node.end_lineno or node.lineno) - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    long_functions[f"{path.relative_to(PRODUCT)}:{node.lineno} {node.name}"] = lines
    assert long_functions == {}


def test_the_limits_see_the_product() -> None:
    # The checks above pass vacuously if the path is wrong.
    assert len(_modules()) > 100
