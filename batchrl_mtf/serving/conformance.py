"""The conformance suite every weight-table port must pass, written from the Python reference.

``python -m batchrl_mtf.serving.conformance --out DIR`` writes:

* ``DIR/manifest.json``: the format tag, the tolerance, and the list of cases;
* ``DIR/valid/<case>.json`` with ``<case>.requests.jsonl`` and ``<case>.expected.jsonl``: a table, the
  request lines of the shared scorer contract (:mod:`batchrl_mtf.serving.scoring`) and the reference's
  response lines (or ``{"error": SUBSTRING}`` for requests the port must refuse);
* ``DIR/invalid/<case>.json``: tables the port must refuse at load, with the substring (field and
  row) that its one-line message must contain, in the manifest.

``python -m batchrl_mtf.serving.conformance --check DIR -- SCORER...`` runs a port's ``score``
program on every case and prints one line per failing vector (exit 1 when any fails).

Agreement: weights and ``behavior_logp`` within ``1e-12 · max(1, |expected|)``; scores within
``1e-12 · Σ_k |w_k x_k|`` (the size of the terms, so that cancellation in the sum is allowed for);
the order exactly, except that candidates whose reference scores differ by less than that
tolerance may come in either order.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt

from batchrl_mtf.core.io import atomic_write_text
from batchrl_mtf.errors import ExportError
from batchrl_mtf.serving._conformance_cases import INVALID_DOCS, INVALID_TEXTS, VALID_CASES
from batchrl_mtf.serving._json import loads_strict
from batchrl_mtf.serving.scoring import format_response, score_request
from batchrl_mtf.serving.table import WeightTable

__all__ = ["SUITE_FORMAT", "TOLERANCE", "Failure", "check_scorer", "main", "write_suite"]

SUITE_FORMAT = "batchrl-mtf/conformance@1"
TOLERANCE = 1e-12


@dataclass
class Failure:
    """One vector a port got wrong.

    Attributes:
        case: Case name (``valid/<name>`` or ``invalid/<name>``).
        line: Request line number (1-based), 0 for table-level problems.
        message: What differed.
    """

    case: str
    line: int
    message: str

    def __str__(self) -> str:
        where = f"{self.case} line {self.line}" if self.line else self.case
        return f"{where}: {self.message}"


@dataclass
class _Manifest:
    valid: list[dict[str, object]] = field(default_factory=list)
    invalid: list[dict[str, object]] = field(default_factory=list)


def _dumps_table(doc: object) -> str:
    return json.dumps(doc, indent=2, sort_keys=True, allow_nan=False) + "\n"


def _expected_error(message: str) -> str:
    """The part of a reference error message that every port's message must contain."""
    text = message
    if text.startswith(("<", "/", "line ")) or text.split(": ", 1)[0].endswith(".json"):
        text = text.split(": ", 1)[1]
    for prefix in ("not valid JSON", "not UTF-8 text", "nesting"):
        if text.startswith(prefix) or (prefix == "nesting" and "nesting" in text):
            return prefix
    return text.split(": ", 1)[0] + ": "


def write_suite(out: str | os.PathLike[str]) -> Path:
    """Write the whole suite under ``out`` (created if needed; only our own files are replaced).

    Raises:
        ExportError: ``out`` exists, is not empty, and is not a conformance suite.
    """
    root = Path(out)
    if root.exists() and (
        not root.is_dir() or (any(root.iterdir()) and not (root / "manifest.json").is_file())
    ):
        raise ExportError(
            f"--out {root}: exists and is not a conformance suite (no manifest.json); "
            "choose a new or empty directory"
        )
    manifest = _Manifest()
    for case in VALID_CASES:
        table = WeightTable.from_dict(case.table, source=case.name)
        lines = [
            json.dumps(r, separators=(",", ":"), allow_nan=False) if not isinstance(r, str) else r
            for r in case.requests
        ]
        expected = []
        for number, line in enumerate(lines, start=1):
            try:
                expected.append(
                    format_response(score_request(table, loads_strict(line, f"line {number}")))
                )
            except ExportError as exc:
                expected.append(json.dumps({"error": _expected_error(str(exc))}))
        base = root / "valid" / case.name
        atomic_write_text(base.with_suffix(".json"), _dumps_table(case.table))
        atomic_write_text(base.with_suffix(".requests.jsonl"), "".join(x + "\n" for x in lines))
        atomic_write_text(base.with_suffix(".expected.jsonl"), "".join(x + "\n" for x in expected))
        manifest.valid.append({"name": case.name, "about": case.about, "requests": len(lines)})
    for name, about, data in _invalid_files():
        path = root / "invalid" / f"{name}.json"
        try:
            WeightTable.loads(data, source=str(path))
        except ExportError as exc:
            error = _expected_error(str(exc))
        else:  # pragma: no cover - a case that the reference accepts is a bug in the cases
            raise ExportError(f"invalid case {name}: the reference accepts it")
        _write_bytes(path, data)
        manifest.invalid.append({"name": name, "about": about, "error": error})
    doc = {
        "format": SUITE_FORMAT,
        "tolerance": TOLERANCE,
        "valid": manifest.valid,
        "invalid": manifest.invalid,
    }
    atomic_write_text(root / "manifest.json", json.dumps(doc, indent=2) + "\n")
    return root


def _write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _invalid_files() -> list[tuple[str, str, bytes]]:
    out = []
    for name, about, edit in INVALID_DOCS:
        out.append((name, about, _dumps_table(edit()).encode("utf-8")))
    for name, about, data in INVALID_TEXTS:
        out.append((name, about, data()))
    return out


# ----------------------------------------------------------------------------------- checking


def check_scorer(
    suite: str | os.PathLike[str], scorer: Sequence[str], timeout_s: float = 120.0
) -> list[Failure]:
    """Run ``scorer TABLE < requests`` on every case of ``suite``; return what disagreed.

    Args:
        suite: A directory written by :func:`write_suite`.
        scorer: The command (program and leading arguments); the table path is appended.
        timeout_s: Time limit per run.

    Raises:
        ExportError: ``suite`` is not a conformance suite.
    """
    root = Path(suite)
    try:
        manifest = json.loads((root / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise ExportError(f"{root}: not a conformance suite (no readable manifest.json)") from None
    if manifest.get("format") != SUITE_FORMAT:
        raise ExportError(f"{root}/manifest.json: expected format {SUITE_FORMAT!r}")
    tol = float(manifest["tolerance"])
    failures: list[Failure] = []
    for case in manifest["valid"]:
        name = f"valid/{case['name']}"
        base = root / "valid" / case["name"]
        requests = base.with_suffix(".requests.jsonl").read_bytes()
        expected = base.with_suffix(".expected.jsonl").read_text(encoding="utf-8").splitlines()
        table = WeightTable.load(base.with_suffix(".json"))
        request_lines = requests.decode("utf-8").splitlines()
        proc = _run([*scorer, str(base.with_suffix(".json"))], requests, timeout_s)
        if proc is None:
            failures.append(Failure(name, 0, f"timed out after {timeout_s} s"))
            continue
        want_rc = 2 if any('"error"' in e for e in expected) else 0
        if proc.returncode != want_rc:
            tail = proc.stderr.decode("utf-8", "replace").strip().splitlines()[-1:] or [""]
            failures.append(
                Failure(
                    name, 0, f"exit status {proc.returncode}, expected {want_rc}: {tail[0][:200]}"
                )
            )
        got = proc.stdout.decode("utf-8", "replace").splitlines()
        if len(got) != len(expected):
            failures.append(
                Failure(name, 0, f"{len(got)} response lines for {len(expected)} requests")
            )
        for number, (g, e) in enumerate(zip(got, expected, strict=False), start=1):
            want = json.loads(e)
            scales: list[float] = []
            if "error" not in want:
                request = json.loads(request_lines[number - 1])
                scales = score_scales(table, request, np.array(list(want["weights"].values())))
            for msg in _compare(g, want, scales, tol):
                failures.append(Failure(name, number, msg))
    for case in manifest["invalid"]:
        name = f"invalid/{case['name']}"
        proc = _run([*scorer, str(root / "invalid" / f"{case['name']}.json")], b"", timeout_s)
        if proc is None:
            failures.append(Failure(name, 0, f"timed out after {timeout_s} s"))
            continue
        err = proc.stderr.decode("utf-8", "replace").strip()
        if proc.returncode != 2:
            failures.append(Failure(name, 0, f"exit status {proc.returncode}, expected 2"))
        if proc.stdout.strip():
            failures.append(Failure(name, 0, "wrote to stdout for an invalid table"))
        if len(err.splitlines()) != 1:
            failures.append(Failure(name, 0, f"expected one line on stderr, found {err[:200]!r}"))
        if case["error"] not in err:
            failures.append(
                Failure(name, 0, f"message {err[:200]!r} does not contain {case['error']!r}")
            )
    return failures


def _run(
    cmd: list[str], stdin: bytes, timeout_s: float
) -> subprocess.CompletedProcess[bytes] | None:
    try:
        return subprocess.run(cmd, input=stdin, capture_output=True, timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired:
        return None


def _compare(got_line: str, want: dict[str, object], scales: list[float], tol: float) -> list[str]:
    try:
        got = json.loads(got_line)
    except ValueError:
        return [f"response is not JSON: {got_line[:120]!r}"]
    if not isinstance(got, dict):
        return [f"response is not an object: {got_line[:120]!r}"]
    if "error" in want:
        msg = got.get("error")
        if not isinstance(msg, str) or str(want["error"]) not in msg:
            return [f"expected an error containing {want['error']!r}, found {got_line[:160]!r}"]
        return []
    if "error" in got:
        return [f"unexpected error {got['error']!r}"]
    out: list[str] = []
    if set(got) != set(want):
        out.append(f"fields {sorted(got)}, expected {sorted(want)}")
        return out
    ww, gw = want["weights"], got["weights"]
    assert isinstance(ww, dict)
    if not isinstance(gw, dict) or set(gw) != set(ww):
        return [f"weights keys {gw!r}, expected {sorted(ww)}"]
    for k, v in ww.items():
        if not _close(gw[k], v, tol * max(1.0, abs(v))):
            out.append(f"weights.{k} = {gw[k]!r}, expected {v!r}")
    if "behavior_logp" in want:
        v = float(want["behavior_logp"])  # type: ignore[arg-type]
        if not _close(got["behavior_logp"], v, tol * max(1.0, abs(v))):
            out.append(f"behavior_logp = {got['behavior_logp']!r}, expected {v!r}")
    ws, gs = want["scores"], got["scores"]
    assert isinstance(ws, list)
    if not isinstance(gs, list) or len(gs) != len(ws):
        return [*out, f"{len(gs) if isinstance(gs, list) else gs!r} scores, expected {len(ws)}"]
    for i, (g, w) in enumerate(zip(gs, ws, strict=True)):
        if w is None:
            if g is not None:
                out.append(f"scores[{i}] = {g!r}, expected null (a missing prediction)")
        elif not _close(g, w, tol * max(float(scales[i]), 1e-300)):
            out.append(f"scores[{i}] = {g!r}, expected {w!r}")
    out.extend(_check_order(got["order"], ws, scales, tol))
    return out


def _close(got: object, want: float, tol: float) -> bool:
    return isinstance(got, (int, float)) and not isinstance(got, bool) and abs(got - want) <= tol


def _check_order(
    order: object, scores: list[float | None], scales: list[float], tol: float
) -> list[str]:
    n = len(scores)
    if not isinstance(order, list) or sorted(order) != list(range(n)):
        return [f"order is not a permutation of 0..{n - 1}: {str(order)[:120]}"]
    for pos, (a, b) in enumerate(itertools.pairwise(order)):
        sa, sb = scores[a], scores[b]
        if sa is None or sb is None:
            ok = sb is None and (sa is not None or a < b)
        elif sa == sb:
            ok = a < b
        else:
            ok = sa > sb or sb - sa <= tol * max(scales[a], scales[b])
        if not ok:
            return [f"order[{pos}:{pos + 2}] = [{a}, {b}] with scores {sa!r}, {sb!r}"]
    return []


def score_scales(
    table: WeightTable, request: dict[str, object], weights: npt.NDArray[np.float64]
) -> list[float]:
    """Σ_k |w_k x_k| per candidate: the size of the terms a score is summed from."""
    preds_raw = request["preds"]
    assert isinstance(preds_raw, dict)
    preds = np.array(
        [[math.nan if v is None else v for v in preds_raw[t]] for t in table.tasks],
        dtype=np.float64,
    ).T.reshape(-1, len(table.tasks))
    x = np.log(preds + np.asarray(table.fusion.beta)) if table.fusion.formula == "logsum" else preds
    return [float(v) for v in np.nan_to_num(np.abs(x * weights).sum(axis=1))]


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: ``--out DIR`` writes the suite; ``--check DIR -- SCORER...`` checks a port."""
    parser = argparse.ArgumentParser(prog="python -m batchrl_mtf.serving.conformance")
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--out", help="write the suite into this directory")
    group.add_argument("--check", help="check a port's score program against this suite")
    parser.add_argument(
        "scorer", nargs="*", help="with --check: the score command, e.g. serving/bin/score-java"
    )
    args = parser.parse_args(argv)
    try:
        if args.out:
            root = write_suite(args.out)
            print(f"conformance suite: {root}")
            return 0
        if not args.scorer:
            print("error: --check needs the scorer command after --", file=sys.stderr)
            return 2
        failures = check_scorer(args.check, args.scorer)
    except ExportError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for f in failures:
        print(f)
    print(f"{len(failures)} failing vectors" if failures else "all vectors agree")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
