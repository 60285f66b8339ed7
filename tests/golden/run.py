"""The golden run: a fixed chain of commands whose outputs must not change across refactors.

``python tests/golden/run.py --record`` (run once, before a refactor) writes ``golden.json``
beside this file; ``tests/test_golden.py`` re-runs the same chain and compares. Each stage pins
every setting on its command line (no defaults), so a later change of a default does not count
as a change of behaviour; a change of what a pinned command computes does.

Compared:
- simulated logs: the Parquet file's bytes (sha256) and the rollout JSON of two policies;
- the dataset: ``transitions.parquet`` and ``dataset.h5`` bytes, ``features.json`` and
  ``report.json`` values (keys added later are allowed: contracts grow additively);
- a TD3+BC policy trained with a fixed seed: its actions on 32 dataset states;
- an exported weight table (values; ``meta.created`` and versions left out);
- an evaluate report on a fixed seed (every estimate, interval and ranking).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = Path(__file__).with_name("golden.json")
VOLATILE = {"created", "versions", "version", "dataset", "path", "out", "elapsed_s", "seconds"}


def _cli(args: list[str], cwd: Path) -> str:
    env = dict(os.environ, PYTHONHASHSEED="0", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    proc = subprocess.run(
        [sys.executable, "-m", "batchrl_mtf", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"batchrl-mtf {' '.join(args)} failed:\n{proc.stderr}")
    return proc.stdout


def _sha(path: Path) -> str:
    return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()


def _strip(value: Any) -> Any:
    """Drops keys whose values are times, versions or paths (they differ run to run), and writes
    paths inside the repository as ``<repo>/...`` (a clone may live anywhere)."""
    if isinstance(value, dict):
        return {k: _strip(v) for k, v in value.items() if k not in VOLATILE}
    if isinstance(value, list):
        return [_strip(v) for v in value]
    if isinstance(value, str) and value.startswith(str(ROOT)):
        return "<repo>" + value[len(str(ROOT)) :]
    return value


def _json(path: Path) -> Any:
    return _strip(json.loads(path.read_text()))


# Defaults changed on purpose since the recording that only show in a report's echo of its settings
# (the results are compared in full): dotted path -> why.
CHANGED_DEFAULTS = {
    "evaluate.config.torch_threads": "issue 19: 0 = one thread per core (was 1); the d3rlpy FQE "
    "engine pinned below runs one thread either way",
}


def _drop(doc: dict[str, Any], dotted: str) -> None:
    *path, last = dotted.split(".")
    for key in path:
        doc = doc.get(key, {})
    doc.pop(last, None)


def run(work: Path) -> dict[str, Any]:
    """Runs the golden chain in ``work`` and returns what is compared."""
    out: dict[str, Any] = {}
    spec = str(ROOT / "envs" / "short_video.toml")
    _cli(["simulate", "--env", spec, "--sessions", "300", "--policy", "mixed", "--seed", "3",
          "--out", "sim.parquet"], work)  # fmt: skip
    out["sim_logs"] = _sha(work / "sim.parquet")
    out["rollout"] = {}
    for policy in ("production", "constant:1.0,0.4,0.3,0.1,0.1,0.1"):
        text = _cli(["rollout", "--env", spec, "--policy", policy, "--sessions", "200",
                     "--seed", "5"], work)  # fmt: skip
        out["rollout"][policy] = _strip(json.loads(text))

    logs = str(ROOT / "logs" / "sample_short_video.parquet")
    reward = str(ROOT / "envs" / "reward_default.toml")
    _cli(["build-dataset", logs, "--reward", reward, "--out", "ds", "--gamma", "0.95",
          "--hist-n", "500", "--on-error", "fail"], work)  # fmt: skip
    ds = work / "ds"
    out["dataset"] = {
        "transitions.parquet": _sha(ds / "transitions.parquet"),
        "dataset.h5": _sha(ds / "dataset.h5"),
        "features.json": _json(ds / "features.json"),
        "report.json": _json(ds / "report.json"),
    }

    # action_box=minmax: the recorded run predates the quantile-box default (issue 16)
    _cli(["train", "ds", "--algo", "td3bc", "--n-steps", "200", "--seed", "0", "--split", "train",
          "--device", "cpu", "--set", "action_box=minmax", "--no-progress", "--out", "pol"],
         work)  # fmt: skip
    probe = (
        "import json, sys\n"
        "import batchrl_mtf as bm\n"
        "data = bm.load_dataset('ds')\n"
        "policy = bm.load_policy('pol')\n"
        "print(json.dumps(policy.act(data.observations[:32]).tolist()))\n"
    )
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-c", probe], cwd=work, env=env, capture_output=True,
                          text=True, check=True)  # fmt: skip
    out["policy_actions"] = json.loads(proc.stdout)

    _cli(["export", "pol", "--dataset", "ds", "--keys", "u_activity,session_depth", "--buckets",
          "3", "--min-support", "200", "--formula", "logsum", "--beta", "0.1", "--fqe-steps", "100",
          "--fqe-fits", "1", "--fqe-engine", "d3rlpy", "--model-error", "0",
          "--kernel-boundary", "none", "--seed", "0", "--out", "table.json"],
         work)  # fmt: skip
    table = _json(work / "table.json")
    out["table"] = table

    _cli(["evaluate", "ds", "--policy", "pol", "--policy", "behavior", "--policy", "table.json",
          "--policy", "constant:1.0,0.4,0.3,0.1,0.1,0.1", "--estimators",
          "fqe,cfqe,pdis,wpdis,dr,wdr", "--fqe-steps", "100", "--fqe-fits", "2",
          "--cfqe-alpha", "0.0005", "--n-bootstrap", "50", "--split", "test", "--seed", "0",
          "--fqe-engine", "d3rlpy", "--model-error", "0", "--kernel-boundary", "none",
          "--gamma", "1", "--out", "ope.json"], work)  # fmt: skip
    out["evaluate"] = _json(work / "ope.json")
    for dotted in CHANGED_DEFAULTS:
        _drop(out, dotted)
    return out


def machine() -> dict[str, str]:
    """What decides the last bits of the recorded floats: the CPU model and the numeric libraries
    (``golden.json`` keeps the recording machine's under ``_machine``; see tests/test_golden.py)."""
    import numpy
    import torch

    cpu = "unknown"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {"cpu": cpu, "numpy": numpy.__version__, "torch": torch.__version__}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--record", action="store_true", help="write golden.json")
    parser.add_argument("--work", type=Path, required=True, help="empty working directory")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    result = run(args.work)
    if args.record:
        result["_machine"] = machine()
        GOLDEN.write_text(json.dumps(result, indent=1, sort_keys=True) + "\n")
        print(f"wrote {GOLDEN}")
    else:
        print(json.dumps(result, indent=1, sort_keys=True))


if __name__ == "__main__":
    main()
