"""The Java and C++ ports, built once per test session by ``serving/build`` when missing or stale.

They are a core feature: when they cannot be built the tests fail (with the build's output). Only
``BATCHRL_MTF_SKIP_PORTS=1`` skips them, for a machine without a JDK or a C++ compiler.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SERVING = REPO / "serving"
SKIP_ENV = "BATCHRL_MTF_SKIP_PORTS"


def _stale(program: Path) -> bool:
    if not program.is_file():
        return True
    built = program.stat().st_mtime
    sources = [*SERVING.glob("java/**/*.java"), *SERVING.glob("cpp/**/*.[ch]pp"), SERVING / "build"]
    sources.append(SERVING / "cpp" / "CMakeLists.txt")
    return any(s.stat().st_mtime > built for s in sources)


@pytest.fixture(scope="session")
def ports() -> dict[str, Path]:
    """``{"java": serving/bin/score-java, "cpp": serving/bin/score-cpp}``, built if needed."""
    if os.environ.get(SKIP_ENV) == "1":
        pytest.skip(f"{SKIP_ENV}=1: the Java and C++ ports are not built or tested")
    progs = {"java": SERVING / "bin" / "score-java", "cpp": SERVING / "bin" / "score-cpp"}
    others = [SERVING / "bin" / f"{p}-{lang}" for p in ("bench", "thread-check") for lang in progs]
    if any(_stale(p) for p in [*progs.values(), *others]):
        proc = subprocess.run(
            [str(SERVING / "build")], capture_output=True, text=True, timeout=900, check=False
        )
        if proc.returncode != 0:
            pytest.fail(
                f"serving/build failed (exit {proc.returncode}); set {SKIP_ENV}=1 to skip the "
                f"ports on a machine without a JDK 17 or C++17 toolchain:\n{proc.stdout}{proc.stderr}"
            )
    return progs
