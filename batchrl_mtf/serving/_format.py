"""The JSON and CSV forms of a weight table (``batchrl-mtf/weight-table@1``)."""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Mapping, Sequence
from typing import Literal, cast

from batchrl_mtf.errors import ExportError
from batchrl_mtf.serving.fusion import FORMULAS
from batchrl_mtf.serving.table import (
    FORMAT,
    Bound,
    Exploration,
    Fusion,
    TableKey,
    TableRow,
    WeightTable,
    _is_number,
)

__all__ = ["parse_table", "table_to_csv", "table_to_dict", "table_with_csv_rows"]

_TOP_LEVEL = ("format", "tasks", "fusion", "action_bounds", "keys", "default", "rows")
_OPTIONAL = ("exploration", "meta")


def table_to_dict(table: WeightTable) -> dict[str, object]:
    """The table as a JSON-ready mapping in the public format."""
    wn = table.weight_names
    doc: dict[str, object] = {
        "format": FORMAT,
        "tasks": list(table.tasks),
        "fusion": {"formula": table.fusion.formula},
        "action_bounds": {
            w: [lo, hi] for w, lo, hi in zip(wn, table.action_low, table.action_high, strict=True)
        },
        "keys": [{"name": key.name, "edges": list(key.edges)} for key in table.keys],
        "default": dict(zip(wn, table.default, strict=True)),
        "rows": [
            {
                "bounds": {
                    key.name: list(b) for key, b in zip(table.keys, row.bounds, strict=True)
                },
                "weights": dict(zip(wn, row.weights, strict=True)),
                "support": row.support,
            }
            for row in table.rows
        ],
        "meta": dict(table.meta),
    }
    if table.fusion.beta is not None:
        doc["fusion"] = {
            "formula": table.fusion.formula,
            "beta": dict(zip(table.tasks, table.fusion.beta, strict=True)),
        }
    if table.exploration is not None:
        ex = table.exploration
        doc["exploration"] = {
            "distribution": ex.distribution,
            ex.scale_name: dict(zip(wn, ex.scale, strict=True)),
        }
    return doc


def table_to_csv(table: WeightTable) -> str:
    """The CSV twin of ``table`` (see :meth:`WeightTable.to_csv`)."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    header = [f"{k}_{side}" for k in table.key_names for side in ("lo", "hi")]
    writer.writerow([*header, *table.weight_names, "support"])
    for row in table.rows:
        cells = ["" if v is None else repr(float(v)) for b in row.bounds for v in b]
        writer.writerow([*cells, *(repr(float(w)) for w in row.weights), str(row.support)])
    return buf.getvalue()


def table_with_csv_rows(table: WeightTable, text: str, source: str) -> WeightTable:
    """``table`` with its rows replaced by those of CSV ``text`` (see :meth:`WeightTable.with_csv_rows`)."""
    reader = csv.DictReader(io.StringIO(text))
    expected = {f"{k}_{s}" for k in table.key_names for s in ("lo", "hi")}
    expected |= {*table.weight_names, "support"}
    found = set(reader.fieldnames or ())
    if found != expected:
        raise ExportError(
            f"{source}: expected columns {sorted(expected)}; missing "
            f"{sorted(expected - found)}, extra {sorted(found - expected)}"
        )
    rows: list[TableRow] = []
    for i, line in enumerate(reader):
        where = f"{source}: line {i + 2}"
        bounds = tuple(
            (
                _csv_number(line[f"{k}_lo"], f"{where}, {k}_lo", allow_empty=True),
                _csv_number(line[f"{k}_hi"], f"{where}, {k}_hi", allow_empty=True),
            )
            for k in table.key_names
        )
        weights = tuple(
            cast(float, _csv_number(line[w], f"{where}, {w}", allow_empty=False))
            for w in table.weight_names
        )
        try:
            support = int(line["support"])
        except ValueError:
            raise ExportError(
                f"{where}, support: expected an integer, found {line['support']!r}"
            ) from None
        rows.append(TableRow(bounds=bounds, weights=weights, support=support))
    try:
        return table.with_rows(rows)
    except ExportError as exc:
        raise ExportError(f"{source}: {exc}") from None


def _csv_number(cell: str | None, where: str, allow_empty: bool) -> float | None:
    text = (cell or "").strip()
    if text == "" and allow_empty:
        return None
    try:
        return float(text)
    except ValueError:
        raise ExportError(f"{where}: expected a number, found {cell!r}") from None


def _obj(x: object, where: str) -> Mapping[str, object]:
    if not isinstance(x, Mapping):
        raise ExportError(f"{where}: expected an object, found {type(x).__name__}")
    return x


def _list(x: object, where: str) -> list[object]:
    if not isinstance(x, list):
        raise ExportError(f"{where}: expected a list, found {type(x).__name__}")
    return x


def _per_weight(x: object, names: Sequence[str], where: str) -> tuple[float, ...]:
    """Read ``{"w_<task>": number}`` with exactly ``names`` as keys, in ``names`` order."""
    m = _obj(x, where)
    missing = [n for n in names if n not in m]
    extra = sorted(set(m) - set(names))
    if missing or extra:
        raise ExportError(
            f"{where}: expected exactly the keys {list(names)} (tasks match weights); "
            f"missing {missing}, extra {extra}"
        )
    out = []
    for n in names:
        v = m[n]
        if not _is_number(v) or not math.isfinite(cast(float, v)):
            raise ExportError(f"{where}.{n}: expected a finite number, found {v!r}")
        out.append(float(cast(float, v)))
    return tuple(out)


def parse_table(doc: object) -> WeightTable:
    """Build and validate a table from its JSON form (errors name the field, not the source)."""
    top = _obj(doc, "table")
    unknown = sorted(set(top) - set(_TOP_LEVEL) - set(_OPTIONAL))
    if unknown:
        raise ExportError(f"table: unknown field(s) {unknown}")
    if top.get("format") != FORMAT:
        raise ExportError(f"format: expected {FORMAT!r}, found {top.get('format')!r}")
    for name in _TOP_LEVEL:
        if name not in top:
            raise ExportError(f"{name}: missing required field")
    tasks_raw = _list(top["tasks"], "tasks")
    for i, t in enumerate(tasks_raw):
        if not isinstance(t, str) or not t:
            raise ExportError(f"tasks[{i}]: expected a non-empty string, found {t!r}")
    tasks = tuple(cast(list[str], tasks_raw))
    if not tasks or len(set(tasks)) != len(tasks):
        raise ExportError(f"tasks: expected a non-empty list of unique names, found {list(tasks)}")
    wn = tuple(f"w_{t}" for t in tasks)

    fus = _obj(top["fusion"], "fusion")
    formula = fus.get("formula")
    if formula not in FORMULAS:
        raise ExportError(f"fusion.formula: expected one of {FORMULAS}, found {formula!r}")
    extra = sorted(set(fus) - {"formula", "beta"})
    if extra:
        raise ExportError(f"fusion: unknown field(s) {extra}")
    beta = None
    if formula == "logsum":
        if "beta" not in fus:
            raise ExportError("fusion.beta: missing (required for formula 'logsum')")
        beta = _per_weight(fus["beta"], tasks, "fusion.beta")
        for t, b in zip(tasks, beta, strict=True):
            if b <= 0:
                raise ExportError(f"fusion.beta.{t}: expected a number > 0, found {b!r}")
    elif fus.get("beta") is not None:
        raise ExportError("fusion.beta: expected no beta for formula 'sum'")
    fusion = Fusion(formula=cast(Literal["logsum", "sum"], formula), beta=beta)

    ab = _obj(top["action_bounds"], "action_bounds")
    if set(ab) != set(wn):
        raise ExportError(
            f"action_bounds: expected exactly the keys {list(wn)} (tasks match weights); "
            f"missing {[n for n in wn if n not in ab]}, extra {sorted(set(ab) - set(wn))}"
        )
    low, high = [], []
    for n in wn:
        pair = _list(ab[n], f"action_bounds.{n}")
        if len(pair) != 2 or not all(_is_number(v) for v in pair):
            raise ExportError(f"action_bounds.{n}: expected [low, high], found {pair!r}")
        low.append(float(cast(float, pair[0])))
        high.append(float(cast(float, pair[1])))

    keys: list[TableKey] = []
    for j, kraw in enumerate(_list(top["keys"], "keys")):
        kd = _obj(kraw, f"keys[{j}]")
        if set(kd) != {"name", "edges"}:
            raise ExportError(f"keys[{j}]: expected fields name and edges, found {sorted(kd)}")
        edges = _list(kd["edges"], f"keys[{j}].edges")
        for e in edges:
            if not _is_number(e) or not math.isfinite(cast(float, e)):
                raise ExportError(f"keys[{j}].edges: expected finite numbers, found {e!r}")
        key_name = kd["name"]
        if (
            not isinstance(key_name, str)
            or not key_name
            or key_name.startswith("w_")
            or key_name == "support"
        ):
            raise ExportError(
                f"keys[{j}].name: expected a state feature name (not 'w_*' or 'support'), "
                f"found {key_name!r}"
            )
        if any(k.name == key_name for k in keys):
            raise ExportError(f"keys[{j}].name: duplicate key {key_name!r}")
        keys.append(TableKey(name=key_name, edges=tuple(float(cast(float, e)) for e in edges)))
    key_names = [k.name for k in keys]

    default = _per_weight(top["default"], wn, "default")
    rows = []
    for i, rraw in enumerate(_list(top["rows"], "rows")):
        where = f"rows[{i}]"
        rd = _obj(rraw, where)
        if set(rd) != {"bounds", "weights", "support"}:
            raise ExportError(
                f"{where}: expected fields bounds, weights and support, found {sorted(rd)}"
            )
        bd = _obj(rd["bounds"], f"{where}.bounds")
        if set(bd) != set(key_names):
            raise ExportError(
                f"{where}.bounds: expected one bound per key {key_names}, found {sorted(bd)}"
            )
        bounds = []
        for name in key_names:
            pair = _list(bd[name], f"{where}.bounds.{name}")
            if len(pair) != 2 or not all(v is None or _is_number(v) for v in pair):
                raise ExportError(
                    f"{where}.bounds.{name}: expected [lo, hi] of numbers or null, found {pair!r}"
                )
            bounds.append(tuple(None if v is None else float(cast(float, v)) for v in pair))
        weights = _per_weight(rd["weights"], wn, f"{where}.weights")
        support = rd["support"]
        if isinstance(support, bool) or not isinstance(support, int) or support < 0:
            raise ExportError(f"{where}.support: expected an integer >= 0, found {support!r}")
        rows.append(
            TableRow(
                bounds=cast(tuple[Bound, ...], tuple(bounds)), weights=weights, support=support
            )
        )

    exploration = None
    if top.get("exploration") is not None:
        ed = _obj(top["exploration"], "exploration")
        dist = ed.get("distribution")
        if dist not in ("gaussian", "uniform"):
            raise ExportError(
                f"exploration.distribution: expected 'gaussian' or 'uniform', found {dist!r}"
            )
        scale_name = "sigma" if dist == "gaussian" else "halfwidth"
        if set(ed) != {"distribution", scale_name}:
            raise ExportError(
                f"exploration: expected fields distribution and {scale_name}, found {sorted(ed)}"
            )
        scale = _per_weight(ed[scale_name], wn, f"exploration.{scale_name}")
        for n, v in zip(wn, scale, strict=True):
            if v <= 0:
                raise ExportError(
                    f"exploration.{scale_name}.{n}: expected a number > 0, found {v!r}"
                )
        exploration = Exploration(distribution=dist, scale=scale)
    meta = _obj(top.get("meta", {}), "meta")
    return WeightTable(
        tasks=tasks,
        fusion=fusion,
        action_low=tuple(low),
        action_high=tuple(high),
        keys=tuple(keys),
        default=default,
        rows=tuple(rows),
        exploration=exploration,
        meta=dict(meta),
    )
