"""``tests.waiting.eventually``: the check's value once it holds; a failure naming what was awaited."""

from __future__ import annotations

import pytest

from tests.waiting import eventually


def test_it_returns_the_first_value_that_holds() -> None:
    answers = iter([None, False, 0, "ready"])
    assert eventually(lambda: next(answers), timeout=5, what="x", interval=0) == 0  # 0 is a value, not "not yet"


def test_it_fails_naming_what_it_awaited_and_the_last_value() -> None:
    with pytest.raises(AssertionError, match=r"waited 0.05 s for the study to be linked; last seen: False"):
        eventually(lambda: False, timeout=0.05, what="the study to be linked", interval=0.01)


def test_an_exception_of_the_check_is_not_retried() -> None:
    calls = []

    def check() -> None:
        calls.append(1)
        raise AssertionError("503 expected, got 500")

    with pytest.raises(AssertionError, match="503 expected"):
        eventually(check, timeout=5, what="x", interval=0)
    assert calls == [1]
