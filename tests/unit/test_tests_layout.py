"""The house rules of the test suite itself:

- a test module imports nothing from another test module: what several share lives in a helper module
  (``tests/integration/helpers.py``, ``tests/waiting.py``, ...), so a test module can be read, moved or
  deleted on its own;
- a fixed sleep in a test module says why on its line (a slow client, a token expiring): a test waits for
  a positive signal with ``tests.waiting.eventually``, never for a fixed time.
"""

from __future__ import annotations

import ast
import io
import tokenize
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parents[1]
TEST_MODULES = sorted(p for p in TESTS.rglob("test_*.py") if "node_modules" not in p.parts)


def _module_name(path: Path) -> list[str]:
    return ["tests", *path.relative_to(TESTS).with_suffix("").parts]


def imported_test_modules(source: str, module: list[str]) -> list[tuple[int, str]]:
    """(line, module) of each import of a ``test_*`` module in ``source`` (the module named ``module``)."""
    found = []
    package = module[:-1]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - (node.level - 1)] if node.level else []
            target = ".".join([*base, *([node.module] if node.module else [])])
            names = [target, *(f"{target}.{alias.name}" for alias in node.names)]  # ``from tests.unit import test_x``
        else:
            continue
        found += [(node.lineno, name) for name in names if name.rsplit(".", 1)[-1].startswith("test_")]
    return found


def unexplained_sleeps(source: str) -> list[int]:
    """Lines calling ``time.sleep`` (or a bare ``sleep``) without a comment on that line or the one before."""
    comments = {tok.start[0] for tok in tokenize.generate_tokens(io.StringIO(source).readline)
                if tok.type == tokenize.COMMENT}
    lines = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if name == "sleep" and not {node.lineno, node.lineno - 1, node.end_lineno or node.lineno} & comments:
                lines.append(node.lineno)
    return sorted(lines)


@pytest.mark.parametrize("path", TEST_MODULES, ids=lambda p: p.relative_to(TESTS).as_posix())
def test_a_test_module_imports_no_other_test_module(path: Path) -> None:
    found = imported_test_modules(path.read_text(), _module_name(path))
    assert not found, f"{path.name} imports test modules (move the shared helpers to a helper module): {found}"


@pytest.mark.parametrize("path", TEST_MODULES, ids=lambda p: p.relative_to(TESTS).as_posix())
def test_every_fixed_sleep_says_why(path: Path) -> None:
    lines = unexplained_sleeps(path.read_text())
    assert not lines, (f"{path.name}: time.sleep without a comment on lines {lines} (wait for a signal with"
                       " tests.waiting.eventually, or say why the sleep is the scenario)")


def test_the_rules_find_what_they_forbid() -> None:
    module = ["tests", "integration", "test_x"]
    source = ("import tests.integration.test_a\nfrom tests.integration.test_b import f\nfrom .test_c import g\n"
              "from . import test_d\nfrom tests.unit import test_e\nfrom .helpers import put_order\n"
              "from tests.waiting import eventually\nimport time\n")
    assert [name for _, name in imported_test_modules(source, module)] == [
        "tests.integration.test_a", "tests.integration.test_b", "tests.integration.test_c",
        "tests.integration.test_d", "tests.unit.test_e"]
    sleeps = "import time\ntime.sleep(1)\n# a slow client\ntime.sleep(2)\ntime.sleep(3)  # the token expires\n"
    assert unexplained_sleeps(sleeps) == [2]
    assert len(TEST_MODULES) > 50  # the rules read the real suite
