"""The code base passes ruff with the rule set chosen in pyproject.toml."""

import ast
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_ruff_finds_nothing():
    ruff = shutil.which("ruff", path=str(Path(sys.executable).parent))
    assert ruff, "ruff is part of the test extra; reinstall with pip install -e '.[test]'"
    result = subprocess.run([ruff, "check", "--no-cache", str(ROOT)], capture_output=True,
                            text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


# Which package may import which (the layering of the architecture): the golden model stands
# alone, the hardware uses only the model's constants, co-simulation joins the two, and only
# the command-line package (xbarode/) sits on top of everything.
ALLOWED_IMPORTS = {
    "model": {"xbarode.model"},
    "hdl": {"xbarode.model", "xbarode.hdl"},
    "sim": {"xbarode.model", "xbarode.hdl", "xbarode.sim"},
}


def project_imports(path: Path):
    """The ``xbarode…`` modules that the file at ``path`` imports, with their line numbers."""
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:
            continue
        for name in names:
            if name == "xbarode" or name.startswith("xbarode."):
                yield node.lineno, name


def test_packages_import_only_the_layers_below_them():
    wrong = []
    for folder, allowed in ALLOWED_IMPORTS.items():
        for path in sorted((ROOT / folder).glob("*.py")):
            for line, name in project_imports(path):
                if not any(name == top or name.startswith(top + ".") for top in allowed):
                    wrong.append(f"{folder}/{path.name}:{line} imports {name}")
    assert not wrong, "\n".join(wrong)


#: The longest a function may be, in lines (a component's elaborate, a command, a test).
MAX_FUNCTION_LINES = 150
#: Functions allowed to be longer than that: none. (Were one ever admitted while it is split,
#: the test fails as soon as it is short enough to leave the set.)
LONG_FUNCTIONS: set[str] = set()


def function_lengths():
    """``{"folder/file.py::name": lines}`` for every function of the project (tests too)."""
    lengths = {}
    for folder in ("hdl", "model", "sim", "xbarode", "tests"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                    key = f"{path.relative_to(ROOT).as_posix()}::{node.name}"
                    lines = node.end_lineno - node.lineno + 1
                    lengths[key] = max(lengths.get(key, 0), lines)
    return lengths


def test_no_function_is_longer_than_the_limit():
    lengths = function_lengths()
    too_long = {k: n for k, n in lengths.items()
                if n > MAX_FUNCTION_LINES and k not in LONG_FUNCTIONS}
    assert not too_long, f"functions over {MAX_FUNCTION_LINES} lines: {too_long}"
    fixed = {k for k in LONG_FUNCTIONS if lengths.get(k, 0) <= MAX_FUNCTION_LINES}
    assert not fixed, f"short enough now, remove from LONG_FUNCTIONS: {sorted(fixed)}"
