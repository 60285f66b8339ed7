"""Speed of serving weight tables: per-request latency and table load time, per language.

Run: ``python bench/serving.py --lang python,java,cpp`` (prints the figures; nothing is asserted).
Java and C++ need ``serving/build`` first (``serving/bin/bench-java``, ``serving/bin/bench-cpp``).

* request: p50/p99 of lookup + fuse (logsum) + rank of 1,000 candidates x 8 tasks for one request,
  after warm-up (2 keys, 10 x 5 cells, a new random state per request); targets on the 2-core
  machine: C++ p99 <= 20 us, Java p99 <= 50 us, Python p99 <= 200 us;
* load: time to read and validate a table of 200,000 rows (2 keys x 500 x 400 cells, 8 tasks,
  about 100 MB of JSON as ``batchrl-mtf export`` writes it), in a fresh process for every
  language (Python: the median of 3 fresh processes); target < 2 s;
* Python only: batched lookup throughput (1,000,000 states) and one exploration sample.

Wall-clock figures include time the process waited for a core; on a shared machine the CPU-time
figures (this thread's CPU time per request / per load) show the work itself.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from batchrl_mtf.serving import Exploration, Fusion, TableKey, TableRow, WeightTable, rank

ROOT = Path(__file__).resolve().parents[1]
BIN = ROOT / "serving" / "bin"
N_CANDIDATES, N_TASKS, ITERS = 1000, 8, 20000
TARGET_P99_US = {"python": 200.0, "java": 50.0, "cpp": 20.0}


def grid_table(n_u: int, n_d: int, seed: int = 0) -> WeightTable:
    """A table with one row per cell of an ``n_u x n_d`` grid over two keys, 8 tasks."""
    rng = np.random.default_rng(seed)
    tasks = tuple(f"task{i}" for i in range(N_TASKS))
    e_u = tuple(float(x) for x in np.round(np.linspace(-3, 3, n_u - 1), 6))
    e_d = tuple(float(x) for x in range(1, n_d))
    lo_u, lo_d = (None, *e_u), (None, *e_d)
    hi_u, hi_d = (*e_u, None), (*e_d, None)
    w = np.round(rng.uniform(0, 2, (n_u * n_d, N_TASKS)), 6).tolist()
    rows = [
        TableRow(((lo_u[i], hi_u[i]), (lo_d[j], hi_d[j])), tuple(w[i * n_d + j]), i + j)
        for i in range(n_u)
        for j in range(n_d)
    ]
    return WeightTable(
        tasks=tasks,
        fusion=Fusion("logsum", (0.1,) * N_TASKS),
        action_low=(0.0,) * N_TASKS,
        action_high=(2.0,) * N_TASKS,
        keys=(TableKey("u_activity", e_u), TableKey("session_depth", e_d)),
        default=(1.0,) * N_TASKS,
        rows=tuple(rows),
    )


def percentiles(samples_s: list[float]) -> tuple[float, float]:
    us = np.array(samples_s) * 1e6
    return float(np.percentile(us, 50)), float(np.percentile(us, 99))


LOAD_SNIPPET = """
import json, sys, time
from batchrl_mtf.serving import WeightTable
t0, c0 = time.perf_counter(), time.thread_time()
WeightTable.load(sys.argv[1])
print(json.dumps({"load_s": time.perf_counter() - t0, "load_cpu_s": time.thread_time() - c0}))
"""
"""Python's table load, in a fresh process as the Java and C++ loads are (not in this process,
whose heap holds the tables it just built)."""

LOAD_RUNS = 3


def python_load(big_table: Path) -> tuple[float, float, list[float]]:
    """Median wall and CPU seconds of :data:`LOAD_RUNS` loads, each in a fresh process, and every
    wall time."""
    runs = []
    for _ in range(LOAD_RUNS):
        out = subprocess.run(
            [sys.executable, "-c", LOAD_SNIPPET, str(big_table)],
            capture_output=True,
            text=True,
            check=True,
        )
        runs.append(json.loads(out.stdout.splitlines()[-1]))
    walls = sorted(r["load_s"] for r in runs)
    cpus = sorted(r["load_cpu_s"] for r in runs)
    return walls[len(walls) // 2], cpus[len(cpus) // 2], [r["load_s"] for r in runs]


def bench_python(request_table: Path, big_table: Path) -> dict[str, float]:
    load_s, load_cpu_s, walls = python_load(big_table)
    print(
        f"python load of 200k rows in {LOAD_RUNS} fresh processes: wall "
        + ", ".join(f"{w:.2f}" for w in walls)
        + " s (the median is reported below)"
    )
    table = WeightTable.load(request_table)
    rng = np.random.default_rng(0)
    preds = rng.uniform(0.001, 0.999, size=(N_CANDIDATES, N_TASKS))
    beta = np.asarray(table.fusion.beta)
    states = rng.normal(size=(ITERS + 2000, 2))
    times, cpu = [], []
    for i, (u, d) in enumerate(states):
        one = {"u_activity": u, "session_depth": d}
        c = time.thread_time_ns()
        t = time.perf_counter()
        w = table.lookup(one)[0]
        rank(preds, w, table.fusion.formula, beta)
        if i >= 2000:
            times.append(time.perf_counter() - t)
            cpu.append((time.thread_time_ns() - c) / 1e9)
    p50, p99 = percentiles(times)
    c50, c99 = percentiles(cpu)
    return {
        "load_s": load_s,
        "load_cpu_s": load_cpu_s,
        "p50_us": p50,
        "p99_us": p99,
        "cpu_p50_us": c50,
        "cpu_p99_us": c99,
    }


def bench_port(lang: str, request_table: Path, big_table: Path) -> dict[str, float] | str:
    prog = BIN / f"bench-{lang}"
    if not prog.is_file():
        return f"{prog} missing: run serving/build"
    req = subprocess.run(
        [str(prog), str(request_table), str(N_CANDIDATES), str(ITERS)],
        capture_output=True,
        text=True,
        check=False,
    )
    load = subprocess.run(
        [str(prog), str(big_table), str(N_CANDIDATES), "10"],
        capture_output=True,
        text=True,
        check=False,
    )
    if req.returncode or load.returncode:
        return (req.stderr or load.stderr).strip()[-300:]
    r, lo = json.loads(req.stdout.splitlines()[-1]), json.loads(load.stdout.splitlines()[-1])
    keys = ("p50_us", "p99_us", "cpu_p50_us", "cpu_p99_us")
    return {"load_s": lo["load_s"], "load_cpu_s": lo["load_cpu_s"], **{k: r[k] for k in keys}}


def python_extras(table: WeightTable) -> None:
    rng = np.random.default_rng(0)
    n = 1_000_000
    feats = {"u_activity": rng.normal(size=n), "session_depth": rng.normal(size=n)}
    best = min(_timed(lambda: table.lookup(feats)) for _ in range(3))
    print(
        f"python batched lookup: {n / best / 1e6:6.1f} M states/s ({n:,} states in {best * 1e3:.0f} ms)"
    )
    explore = WeightTable(
        **{**_fields(table), "exploration": Exploration("gaussian", (0.1,) * N_TASKS)}
    )
    one = {"u_activity": 0.2, "session_depth": 3.0}
    times = [_timed(lambda: explore.sample(one, rng)) for _ in range(5000)]
    p50, p99 = percentiles(times)
    print(f"python sample (gaussian, 8 tasks): p50 {p50:.1f} us  p99 {p99:.1f} us")


def _fields(table: WeightTable) -> dict[str, object]:
    names = ("tasks", "fusion", "action_low", "action_high", "keys", "default", "rows", "meta")
    return {n: getattr(table, n) for n in names}


def _timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--lang", default="python,java,cpp", help="comma-separated: python,java,cpp"
    )
    args = parser.parse_args()
    langs = [x.strip() for x in args.lang.split(",") if x.strip()]
    with tempfile.TemporaryDirectory() as tmp:
        small = grid_table(10, 5)
        request_table = small.save(Path(tmp) / "request_table.json")
        t0 = time.perf_counter()
        big = grid_table(500, 400)
        big_table = big.save(Path(tmp) / "table_200k.json")
        size_mb = big_table.stat().st_size / 1e6
        print(
            f"tables: request {len(small.rows)} rows; load {len(big.rows):,} rows, {size_mb:.0f} MB "
            f"(built in {time.perf_counter() - t0:.1f} s); {N_CANDIDATES} candidates x {N_TASKS} tasks, "
            f"{ITERS:,} requests after warm-up"
        )
        for lang in langs:
            if lang == "python":
                res: dict[str, float] | str = bench_python(request_table, big_table)
            elif lang in ("java", "cpp"):
                res = bench_port(lang, request_table, big_table)
            else:
                sys.exit(f"error: --lang: expected python, java or cpp, found {lang!r}")
            if isinstance(res, str):
                print(f"{lang:6s}: not run ({res})")
                continue
            target = TARGET_P99_US[lang]
            verdict = "meets" if res["p99_us"] <= target else "MISSES"
            print(
                f"{lang:6s}: request wall p50 {res['p50_us']:7.1f} us  p99 {res['p99_us']:8.1f} us "
                f"({verdict} p99 <= {target:.0f} us); CPU time p50 {res['cpu_p50_us']:6.1f} us  "
                f"p99 {res['cpu_p99_us']:6.1f} us | load 200k rows wall {res['load_s']:5.2f} s, "
                f"CPU {res['load_cpu_s']:5.2f} s ({'meets' if res['load_s'] < 2 else 'MISSES'} < 2 s)"
            )
        if "python" in langs:
            python_extras(small)


if __name__ == "__main__":
    main()
