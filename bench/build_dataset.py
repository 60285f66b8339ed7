"""Throughput and peak memory of ``build-dataset`` on generated logs.

Generates schema-v1 logs (default 2,000,000 impressions: 6 tasks, 10 items per request), writes
them as Parquet, then builds the dataset in a fresh process and prints impressions/s and the
peak resident memory of that process next to the input's in-memory size.

    python bench/build_dataset.py [--rows 2000000] [--repeat 3] [--engine local|spark] [--spark-master local[2]]

Local engine: each build runs in its own fresh process; with ``--repeat N`` the median build's time
is reported (all times are printed) and the largest peak memory of the N builds.

Spark engine: ``--repeat N`` runs N builds in one fresh process and one Spark session (into a new
output directory each). The first build is the **cold** one (a fresh JVM: its JIT compiler and
Spark's code generation warm up during it, as on any first job); builds 2..N are **warm** (the
same JVM and Python workers, as a long-lived cluster executor runs every job after its first).
Both are reported, each with its CPU seconds (all processes) and the machine's load average.

Targets: local engine (issue 2) >= 1M impressions/s on 2 cores, peak memory under 3x the input's
in-memory size; Spark engine in ``local[2]`` (issue 19) >= 300k impressions/s.
With ``--engine spark`` the Spark session is started before the clock starts, and so are its
Python workers (one tiny job per core that imports the package, as every executor does once per
session; the time is printed as "Python workers start-up"); the figures are the build itself, the peak RSS of the Python driver (which only merges small per-chunk summaries),
and the peak RSS of the JVM (in ``local[N]`` mode it holds the driver and the executors) and of
the largest Python worker.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from batchrl_mtf.core.d3rlpy import load_d3rlpy

TASKS = ("click", "longview", "like", "follow", "comment", "share")


def generate(n_rows: int, seed: int = 0, items_per_request: int = 10) -> pd.DataFrame:
    """Vectorised generator of valid logs: users with sessions of several requests."""
    rng = np.random.default_rng(seed)
    n_req = n_rows // items_per_request
    req_per_session = 8
    n_sess = max(1, n_req // req_per_session)
    sess_of_req = np.minimum(np.arange(n_req) // req_per_session, n_sess - 1)
    n_users = max(1, n_sess // 5)
    user_of_sess = np.arange(n_sess) % n_users
    sess_rank = np.arange(n_sess) // n_users  # k-th session of its user
    t0 = 1_700_000_000_000
    step_of_req = np.arange(n_req) - sess_of_req * req_per_session
    ts_req = (
        t0
        + user_of_sess[sess_of_req] * 1000
        + sess_rank[sess_of_req] * 7_200_000
        + step_of_req * 15_000
    )
    row_req = np.repeat(np.arange(n_req), items_per_request)
    n = len(row_req)
    cols: dict[str, np.ndarray] = {
        "user_id": user_of_sess[sess_of_req][row_req].astype(np.int64),
        "session_id": sess_of_req[row_req].astype(np.int64),
        "request_id": row_req.astype(np.int64),
        "ts": ts_req[row_req].astype(np.int64),
        "item_id": rng.integers(0, 100_000, n),
        "position": np.tile(np.arange(items_per_request), n_req),
        "u_activity": rng.normal(size=n_users)[user_of_sess[sess_of_req]][row_req],
        "u_age": rng.integers(18, 60, n_users).astype(np.float64)[user_of_sess[sess_of_req]][
            row_req
        ],
    }
    w = rng.uniform(0.2, 2.0, size=(n_req, len(TASKS)))
    for k, t in enumerate(TASKS):
        cols[f"pred_{t}"] = rng.random(n)
        cols[f"w_{t}"] = w[row_req, k]
    cols["behavior_logp"] = rng.normal(-3, 1, n_req)[row_req]
    for t in TASKS:
        cols[t] = (rng.random(n) < 0.1).astype(np.int8)
    cols["watch_time"] = rng.exponential(10.0, n)
    return pd.DataFrame(cols)


def _process_tree(root_pid: int) -> dict[int, str]:
    """Command lines of ``root_pid``'s descendants."""
    import os

    children: dict[int, list[int]] = {}
    names: dict[int, str] = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as fh:
                stat = fh.read()
            with open(f"/proc/{d}/cmdline", "rb") as fh:
                names[int(d)] = fh.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        children.setdefault(int(stat.rsplit(")", 1)[1].split()[1]), []).append(int(d))
    out: dict[int, str] = {}
    stack = list(children.get(root_pid, []))
    while stack:
        pid = stack.pop()
        stack.extend(children.get(pid, []))
        out[pid] = names.get(pid, "")
    return out


def _reset_peak(pid: int) -> None:
    """Reset the kernel's peak-RSS counter (VmHWM) of ``pid`` (Linux >= 4.0)."""
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as fh:
            fh.write("5")
    except OSError:
        pass


def _peak(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as fh:
            return next(int(ln.split()[1]) * 1024 for ln in fh if ln.startswith("VmHWM"))
    except (OSError, StopIteration):
        return 0


def _import_package(batches: Iterator[Any]) -> Iterator[Any]:
    """A Spark task that imports what every build task imports (on a Python worker)."""
    import batchrl_mtf.data.spark  # noqa: F401

    yield from batches


def _cpu_seconds() -> dict[int, float]:
    """User + system CPU seconds of this process and its descendants (from ``/proc``)."""
    out = {}
    for pid in [os.getpid(), *_process_tree(os.getpid())]:
        try:
            with open(f"/proc/{pid}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        out[pid] = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return out


def child(path: str, out: str, engine: str, master: str, repeat: int = 1) -> None:
    from batchrl_mtf.data.build import build_dataset
    from batchrl_mtf.data.reward import RewardConfig

    reward = RewardConfig(
        10.0,
        {"watch_time": 0.02, "valid_play": 0.3},
        {"like": 1.0, "follow": 2.0, "comment": 1.5, "share": 2.0},
    )
    load_d3rlpy()  # import cost is not part of the build

    extra: dict[str, float] = {}
    if engine == "spark":
        from batchrl_mtf.data.spark import SparkOptions, build_dataset_spark, spark_session

        spark = spark_session(master)
        spark.range(1).count()  # the JVM up before the clock starts
        t0 = time.perf_counter()  # the Python workers up, with the package imported
        cores = spark.sparkContext.defaultParallelism
        spark.range(0, cores, 1, cores).mapInArrow(_import_package, "id long").collect()
        extra["workers_start_s"] = time.perf_counter() - t0
        for pid in _process_tree(os.getpid()):
            _reset_peak(pid)
    _reset_peak(os.getpid())
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    if engine != "spark":
        start = time.perf_counter()
        build_dataset([path], reward, out)
        elapsed = time.perf_counter() - start
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        print(json.dumps({"seconds": elapsed, "peak_rss": peak, "rss_after_imports": base}))
        return
    builds = []
    for i in range(repeat):  # build 0: cold (fresh JVM); then warm, in the same session
        cpu0, load0 = _cpu_seconds(), os.getloadavg()[0]
        start = time.perf_counter()
        build_dataset_spark([path], reward, f"{out}{i}", options=SparkOptions(master=master))
        elapsed = time.perf_counter() - start
        cpu1 = _cpu_seconds()  # the driver, the JVM and the Python workers
        cpu = sum(c - cpu0.get(pid, 0.0) for pid, c in cpu1.items())
        builds.append({"seconds": elapsed, "cpu": cpu, "load": [load0, os.getloadavg()[0]]})
    tree = _process_tree(os.getpid())
    extra["jvm"] = max([_peak(p) for p, n in tree.items() if "java" in n] or [0])
    extra["python_worker"] = max([_peak(p) for p, n in tree.items() if "java" not in n] or [0])
    extra["driver_build_peak"] = _peak(os.getpid())
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"builds": builds, "peak_rss": peak, "rss_after_imports": base, **extra}))


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--rows", type=int, default=2_000_000)
    ap.add_argument("--engine", choices=["local", "spark"], default="local")
    ap.add_argument("--spark-master", default="local[2]")
    ap.add_argument(
        "--repeat",
        type=int,
        default=3,
        help="builds to run: local, fresh processes (median reported); spark, one session "
        "(the first cold, the others warm, reported separately)",
    )
    ap.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child[0], args.child[1], args.engine, args.spark_master, args.repeat)
        return
    with tempfile.TemporaryDirectory() as tmp:
        df = generate(args.rows)
        in_mem = int(df.memory_usage(deep=True).sum())
        path = str(Path(tmp) / "logs.parquet")
        df.to_parquet(path, index=False)
        del df
        runs = []
        # local: a fresh process per build (no warm caches or allocator); spark: one process
        for _ in range(args.repeat if args.engine == "local" else 1):
            res = subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--engine",
                    args.engine,
                    "--spark-master",
                    args.spark_master,
                    "--repeat",
                    str(args.repeat),
                    "--child",
                    path,
                    str(Path(tmp) / "ds"),
                ],
                capture_output=True,
                text=True,
                check=False,
            )
            if res.returncode:  # the build's own error, not only "exit status 1"
                sys.exit(f"build failed:\n{res.stderr[-4000:]}")
            runs.append(json.loads(res.stdout.strip().splitlines()[-1]))
    if args.engine == "spark":
        _report_spark(args.rows, in_mem, runs[0])
        return
    runs.sort(key=lambda r: float(r["seconds"]))
    m = runs[len(runs) // 2]  # the median build (by time)
    m["peak_rss"] = max(r["peak_rss"] for r in runs)
    rate = args.rows / m["seconds"]
    if len(runs) > 1:
        times = ", ".join(f"{r['seconds']:.2f}" for r in runs)
        print(f"builds:               {len(runs)} ({times} s); figures below: the median build")
    print(f"machine load (1 min): {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    build_peak = m["peak_rss"] - m["rss_after_imports"]
    print(f"engine:               {args.engine}")
    print(f"impressions:          {args.rows:,}")
    print(f"build time:           {m['seconds']:.2f} s")
    target = "300,000 (issue 19, local[2])" if args.engine == "spark" else "1,000,000"
    print(f"throughput:           {rate:,.0f} impressions/s (target >= {target})")
    print(f"input in memory:      {in_mem / 2**20:,.0f} MiB")
    print(
        f"peak RSS (process):   {m['peak_rss'] / 2**20:,.0f} MiB ({m['peak_rss'] / in_mem:.2f}x input)"
    )
    print(
        f"peak RSS above imports: {build_peak / 2**20:,.0f} MiB ({build_peak / in_mem:.2f}x input; target < 3x)"
    )


def _report_spark(rows: int, in_mem: int, run: dict[str, Any]) -> None:
    """Print the cold build and the warm builds of one Spark session, separately."""
    builds = run["builds"]

    def line(b: dict[str, Any]) -> str:
        return (
            f"{b['seconds']:.2f} s, {rows / b['seconds']:,.0f} impressions/s, "
            f"{b['cpu']:.1f} CPU-s, load {b['load'][0]:.2f}->{b['load'][1]:.2f}"
        )

    print(f"machine load (1 min): {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    print("engine:               spark (one session; target >= 300,000 impressions/s, issue 19)")
    print(f"impressions:          {rows:,} ({in_mem / 2**20:,.0f} MiB in memory)")
    print(
        f"Python workers start-up (before the clock, not in the build time): "
        f"{run['workers_start_s']:.2f} s"
    )
    print(f"cold build (first in a fresh JVM): {line(builds[0])}")
    warm = builds[1:]
    for i, b in enumerate(warm, start=2):
        print(f"warm build {i}:        {line(b)}")
    if warm:
        mid = sorted(warm, key=lambda b: float(b["seconds"]))[len(warm) // 2]
        print(f"warm builds, median:  {line(mid)}")
    print(f"peak RSS Python driver during the builds: {run['driver_build_peak'] / 2**20:,.0f} MiB")
    print(
        f"peak RSS JVM during the builds (driver+executors, local mode): {run['jvm'] / 2**20:,.0f} MiB"
    )
    print(
        f"peak RSS largest Python worker during the builds: {run['python_worker'] / 2**20:,.0f} MiB"
    )


if __name__ == "__main__":
    main()
