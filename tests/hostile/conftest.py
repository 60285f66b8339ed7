"""The hostile-input suite's tally: every case records how it ended; the totals print at the end.

Outcomes: ``clean`` (one ``error:`` line, exit 2, no traceback, inputs intact, nothing
half-written), ``ok`` (accepted and correct), ``traceback``, ``data_lost`` (an input or a foreign
file changed or vanished), ``code_executed`` (a pickle payload ran), ``partial`` (a temporary or
half-written output was left behind).
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

TALLY: Counter[str] = Counter()
CASES: list[tuple[str, str]] = []


def record(case: str, outcome: str) -> None:
    """Record how one hostile case ended (called by the harness)."""
    TALLY[outcome] += 1
    CASES.append((case, outcome))


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not CASES:
        return
    total = len(CASES)
    caught = TALLY["clean"] + TALLY["ok"]
    terminalreporter.write_sep("-", "hostile-input suite")
    terminalreporter.write_line(
        f"cases {total}, caught cleanly {caught} (error line {TALLY['clean']}, accepted "
        f"{TALLY['ok']}), tracebacks {TALLY['traceback']}, data lost {TALLY['data_lost']}, "
        f"code executed {TALLY['code_executed']}, partial output {TALLY['partial']}"
    )


@pytest.fixture
def tally() -> Any:
    return record
