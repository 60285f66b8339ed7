"""The JSON and CSV forms of a weight table (``batchrl-mtf/weight-table@1``).

This module reads and writes the documents; :class:`~batchrl_mtf.serving.table.WeightTable`
validates the values. It imports only the value types (:mod:`batchrl_mtf.serving._types`), never
the table class, so the two modules do not import each other.
"""

from __future__ import annotations

import csv
import io
import itertools
import math
import operator
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import cast

from batchrl_mtf.errors import ExportError
from batchrl_mtf.serving._grid import RowArrays, check_keys, row_arrays
from batchrl_mtf.serving._json import check_plain_json, count_members
from batchrl_mtf.serving._types import (
    FORMAT,
    FORMULAS,
    Exploration,
    Fusion,
    TableFields,
    TableKey,
    TableRow,
    is_number,
    show,
    weight_names,
)

__all__ = [
    "count_table_members",
    "parse_csv_rows",
    "parse_table",
    "table_to_csv",
    "table_to_dict",
]

_REQUIRED = ("format", "tasks", "fusion", "keys", "default", "rows")
_OPTIONAL = ("action_bounds", "exploration", "meta")
_ROW_FIELDS = frozenset({"bounds", "weights", "support"})
_ROW_FIELDS_NO_SUPPORT = frozenset({"bounds", "weights"})


def table_to_dict(table: TableFields) -> dict[str, object]:
    """The table as a JSON-ready mapping in the public format (optional fields only when set)."""
    wn = weight_names(table.tasks)
    doc: dict[str, object] = {
        "format": FORMAT,
        "tasks": list(table.tasks),
        "fusion": {"formula": table.fusion.formula},
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
    if table.action_low is not None and table.action_high is not None:
        doc["action_bounds"] = {
            w: [lo, hi] for w, lo, hi in zip(wn, table.action_low, table.action_high, strict=True)
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


def table_to_csv(key_names: Sequence[str], wn: Sequence[str], rows: Sequence[TableRow]) -> str:
    """The CSV twin of a table's rows (see :meth:`WeightTable.to_csv`)."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    header = [f"{k}_{side}" for k in key_names for side in ("lo", "hi")]
    writer.writerow([*header, *wn, "support"])
    for row in rows:
        cells = ["" if v is None else repr(float(v)) for b in row.bounds for v in b]
        writer.writerow([*cells, *(repr(float(w)) for w in row.weights), str(row.support)])
    return buf.getvalue()


def parse_csv_rows(
    text: str, key_names: Sequence[str], wn: Sequence[str], source: str
) -> list[TableRow]:
    """Rows of a CSV twin (columns in any order); values are validated by the table."""
    reader = csv.DictReader(io.StringIO(text))
    expected = {f"{k}_{s}" for k in key_names for s in ("lo", "hi")} | {*wn, "support"}
    try:
        found = set(reader.fieldnames or ())
    except csv.Error as exc:
        raise ExportError(f"{source}: not valid CSV ({exc})") from None
    if found != expected:
        raise ExportError(
            f"{source}: expected columns {sorted(expected)}; missing "
            f"{sorted(expected - found)}, extra {sorted(found - expected)}"
        )
    rows: list[TableRow] = []
    try:
        for i, line in enumerate(reader):
            where = f"{source}: line {i + 2}"
            if None in line or any(v is None for v in line.values()):
                raise ExportError(f"{where}: expected {len(expected)} cells")
            bounds = tuple(
                (
                    _csv_number(line[f"{k}_lo"], f"{where}, {k}_lo", allow_empty=True),
                    _csv_number(line[f"{k}_hi"], f"{where}, {k}_hi", allow_empty=True),
                )
                for k in key_names
            )
            weights = tuple(
                cast(float, _csv_number(line[w], f"{where}, {w}", allow_empty=False)) for w in wn
            )
            cell = line["support"].strip()
            if not (cell.isdigit() and len(cell) <= 18):
                raise ExportError(f"{where}, support: expected an integer >= 0, found {show(cell)}")
            rows.append(TableRow(bounds=bounds, weights=weights, support=int(cell)))
    except csv.Error as exc:
        raise ExportError(f"{source}: not valid CSV ({exc})") from None
    return rows


def _csv_number(cell: str, where: str, allow_empty: bool) -> float | None:
    text = cell.strip()
    if text == "" and allow_empty:
        return None
    try:
        value = float(text) if len(text) <= 100 else math.nan
    except ValueError:
        raise ExportError(f"{where}: expected a number, found {show(cell)}") from None
    if not math.isfinite(value):
        raise ExportError(f"{where}: expected a finite number, found {show(cell)}")
    return value


def _obj(x: object, where: str) -> Mapping[str, object]:
    if not isinstance(x, Mapping):
        raise ExportError(f"{where}: expected an object, found {_kind(x)}")
    return x


def _list(x: object, where: str) -> list[object]:
    if not isinstance(x, list):
        raise ExportError(f"{where}: expected a list, found {_kind(x)}")
    return x


def _kind(x: object) -> str:
    return {dict: "object", list: "list", str: "string", bool: "boolean", type(None): "null"}.get(
        type(x), "number" if is_number(x) else type(x).__name__
    )


def _finite(v: object, where: str) -> float:
    if not is_number(v) or not math.isfinite(cast(float, v)):
        raise ExportError(f"{where}: expected a finite number, found {show(v)}")
    return float(cast(float, v))


def _per_weight(x: object, names: Sequence[str], where: str) -> tuple[float, ...]:
    """Read ``{"w_<task>": number}`` with exactly ``names`` as keys, in ``names`` order."""
    m = _obj(x, where)
    if m.keys() != set(names):
        missing = [n for n in names if n not in m]
        extra = sorted(set(m) - set(names))
        raise ExportError(
            f"{where}: expected exactly the keys {list(names)} (tasks match weights); "
            f"missing {missing}, extra {show(extra)}"
        )
    return tuple(_finite(m[n], f"{where}.{n}") for n in names)


def parse_table(doc: object) -> dict[str, object]:
    """Check the JSON form of a table and return the :class:`WeightTable` constructor arguments.

    Structure and types are checked here, field by field; values (bounds, edges, overlaps) are
    checked by the table. Errors name the field, not the source.
    """
    top = _obj(doc, "table")
    unknown = sorted(set(top) - set(_REQUIRED) - set(_OPTIONAL))
    if unknown:
        raise ExportError(f"table: unknown field(s) {show(unknown)}")
    if top.get("format") != FORMAT:
        raise ExportError(f"format: expected {FORMAT!r}, found {show(top.get('format'))}")
    for name in _REQUIRED:
        if name not in top:
            raise ExportError(f"{name}: missing required field")
    tasks_raw = _list(top["tasks"], "tasks")
    for i, t in enumerate(tasks_raw):
        if not isinstance(t, str) or not t:
            raise ExportError(f"tasks[{i}]: expected a non-empty string, found {show(t)}")
    tasks = tuple(cast(list[str], tasks_raw))
    if not tasks or len(set(tasks)) != len(tasks):
        raise ExportError(
            f"tasks: expected a non-empty list of unique names, found {show(list(tasks))}"
        )
    wn = weight_names(tasks)
    fusion = _parse_fusion(_obj(top["fusion"], "fusion"), tasks)

    low: tuple[float, ...] | None = None
    high: tuple[float, ...] | None = None
    if top.get("action_bounds") is not None:
        ab = _obj(top["action_bounds"], "action_bounds")
        if ab.keys() != set(wn):
            raise ExportError(
                f"action_bounds: expected exactly the keys {list(wn)} (tasks match weights); "
                f"missing {[n for n in wn if n not in ab]}, extra {show(sorted(set(ab) - set(wn)))}"
            )
        pairs = []
        for n in wn:
            pair = _list(ab[n], f"action_bounds.{n}")
            if len(pair) != 2 or not all(is_number(v) for v in pair):
                raise ExportError(f"action_bounds.{n}: expected [low, high], found {show(pair)}")
            pairs.append((float(cast(float, pair[0])), float(cast(float, pair[1]))))
        low = tuple(p[0] for p in pairs)
        high = tuple(p[1] for p in pairs)

    keys: list[TableKey] = []
    for j, kraw in enumerate(_list(top["keys"], "keys")):
        kd = _obj(kraw, f"keys[{j}]")
        if kd.keys() != {"name", "edges"}:
            raise ExportError(
                f"keys[{j}]: expected fields name and edges, found {show(sorted(kd))}"
            )
        edges = _list(kd["edges"], f"keys[{j}].edges")
        for e in edges:
            if not is_number(e) or not math.isfinite(cast(float, e)):
                raise ExportError(f"keys[{j}].edges: expected finite numbers, found {show(e)}")
        if not isinstance(kd["name"], str):
            raise ExportError(f"keys[{j}].name: expected a string, found {show(kd['name'])}")
        keys.append(TableKey(name=kd["name"], edges=tuple(float(cast(float, e)) for e in edges)))
    check_keys(keys)  # names and edges before the rows that refer to them
    key_names = [k.name for k in keys]

    default = _per_weight(top["default"], wn, "default")
    rows = _parse_rows(_list(top["rows"], "rows"), key_names, wn)
    exploration = None
    if top.get("exploration") is not None:
        exploration = _parse_exploration(_obj(top["exploration"], "exploration"), wn)
    meta = _obj(top.get("meta", {}), "meta")
    check_plain_json(meta, "meta", 2)
    return {
        "tasks": tasks,
        "fusion": fusion,
        "action_low": low,
        "action_high": high,
        "keys": tuple(keys),
        "default": default,
        "rows": rows,
        "exploration": exploration,
        "meta": dict(meta),
    }


def count_table_members(doc: Mapping[str, object], rows: object) -> int:
    """Object members plus ``:`` inside strings of a table document that :func:`parse_table`
    accepted (see :func:`~batchrl_mtf.serving._json.loads_counted`).

    When the rows came out as :class:`RowArrays`, each row is known to hold ``bounds`` (one
    ``[number|null, number|null]`` per key name), ``weights`` (one number per weight name) and
    maybe ``support`` (a number), so they are counted without walking them.
    """
    members, colons = count_members({k: v for k, v in doc.items() if k != "rows"})
    raw = doc.get("rows")
    if not isinstance(rows, RowArrays) or not isinstance(raw, list):
        more, more_colons = count_members(raw)
        return members + 1 + more + colons + more_colons
    keys = cast(Sequence[Mapping[str, object]], doc["keys"])
    key_names = [cast(str, k["name"]) for k in keys]
    wn = weight_names(cast(Sequence[str], doc["tasks"]))
    n = len(raw)
    members += (
        1 + sum(map(len, cast(list[dict[str, object]], raw))) + n * (len(key_names) + len(wn))
    )
    colons += n * sum(name.count(":") for name in (*key_names, *wn))
    return members + colons


def _parse_fusion(fus: Mapping[str, object], tasks: tuple[str, ...]) -> Fusion:
    formula = fus.get("formula")
    if formula not in FORMULAS:
        raise ExportError(f"fusion.formula: expected one of {FORMULAS}, found {show(formula)}")
    extra = sorted(set(fus) - {"formula", "beta"})
    if extra:
        raise ExportError(f"fusion: unknown field(s) {show(extra)}")
    if formula == "sum":
        if fus.get("beta") is not None:
            raise ExportError("fusion.beta: expected no beta for formula 'sum'")
        return Fusion(formula="sum")
    if "beta" not in fus:
        raise ExportError("fusion.beta: missing (required for formula 'logsum')")
    beta = _per_weight(fus["beta"], tasks, "fusion.beta")
    for t, b in zip(tasks, beta, strict=True):
        if b <= 0:
            raise ExportError(f"fusion.beta.{t}: expected a number > 0, found {b!r}")
    return Fusion(formula="logsum", beta=beta)


def _parse_exploration(ed: Mapping[str, object], wn: tuple[str, ...]) -> Exploration:
    dist = ed.get("distribution")
    if dist not in ("gaussian", "uniform"):
        raise ExportError(
            f"exploration.distribution: expected 'gaussian' or 'uniform', found {show(dist)}"
        )
    scale_name = "sigma" if dist == "gaussian" else "halfwidth"
    if ed.keys() != {"distribution", scale_name}:
        raise ExportError(
            f"exploration: expected fields distribution and {scale_name}, found {show(sorted(ed))}"
        )
    scale = _per_weight(ed[scale_name], wn, f"exploration.{scale_name}")
    for n, v in zip(wn, scale, strict=True):
        if v <= 0:
            raise ExportError(f"exploration.{scale_name}.{n}: expected a number > 0, found {v!r}")
    return Exploration(distribution=dist, scale=scale)


def _all_equal(items: Iterable[object], value: object) -> bool:
    return all(map(operator.eq, items, itertools.repeat(value)))


def _getter(names: Sequence[str]) -> Callable[[Mapping[str, object]], tuple[object, ...]]:
    """``m -> tuple(m[n] for n in names)``, at C speed."""
    if len(names) == 1:
        name = names[0]
        return lambda m: (m[name],)
    return operator.itemgetter(*names)


def _rows_fast(
    raw: list[object], key_names: list[str], wn: tuple[str, ...]
) -> tuple[TableRow, ...] | RowArrays | None:
    """Rows of well-formed JSON, or ``None`` if any row is not.

    When every number is a float (bounds: or ``null``) and every support an int, as ``export``
    writes them, the rows come as :class:`RowArrays` (the table makes :class:`TableRow` values of
    them only when asked); otherwise as :class:`TableRow` values with the numbers as found.
    """
    kset, wset = set(key_names), set(wn)
    if not raw:
        return ()
    if set(map(type, raw)) != {dict}:
        return None
    rds = cast(list[dict[str, object]], raw)
    if not (
        _all_equal(map(dict.keys, rds), _ROW_FIELDS)
        or _all_equal(map(dict.keys, rds), _ROW_FIELDS_NO_SUPPORT)
        or all(k in (_ROW_FIELDS, _ROW_FIELDS_NO_SUPPORT) for k in map(dict.keys, rds))
    ):
        return None
    bds = list(map(operator.itemgetter("bounds"), rds))
    wds = list(map(operator.itemgetter("weights"), rds))
    if set(map(type, bds)) != {dict} or set(map(type, wds)) != {dict}:
        return None
    # exactly the names: as many keys as names, and every name found (else KeyError)
    if set(map(len, bds)) != {len(kset)} or set(map(len, wds)) != {len(wset)}:
        return None
    try:
        weights = list(map(_getter(wn), wds))
        cols = [list(map(operator.itemgetter(name), bds)) for name in key_names]
    except KeyError:
        return None
    support = list(map(operator.methodcaller("get", "support", 0), rds))
    arrays = row_arrays(cast(list[object], weights), support, cols, len(wn))
    if arrays is not None and arrays.floats:
        return arrays
    for col in cols:
        if set(map(type, col)) != {list} or set(map(len, col)) != {2}:
            return None
    pairs = [map(tuple, col) for col in cols]  # the table normalises and checks them
    bounds = zip(*pairs, strict=True) if pairs else itertools.repeat((), len(rds))
    return tuple(map(TableRow, bounds, weights, support))  # type: ignore[arg-type]


def _parse_rows(
    raw: list[object], key_names: list[str], wn: tuple[str, ...]
) -> tuple[TableRow, ...] | RowArrays:
    """Rows as :class:`TableRow` values or :class:`RowArrays` (numbers unchecked: the table
    checks them as arrays).

    The common case (every row well formed) runs at C speed; otherwise the rows are read field by
    field to name the first one that is not.
    """
    kset = set(key_names)
    rows = _rows_fast(raw, key_names, wn)
    if rows is not None:
        return rows
    for i, rraw in enumerate(raw):
        where = f"rows[{i}]"
        rd = _obj(rraw, where)
        if not (rd.keys() == _ROW_FIELDS or rd.keys() == _ROW_FIELDS_NO_SUPPORT):
            raise ExportError(
                f"{where}: expected fields bounds, weights and (optional) support, "
                f"found {show(sorted(rd))}"
            )
        bd = _obj(rd["bounds"], f"{where}.bounds")
        if bd.keys() != kset:
            raise ExportError(
                f"{where}.bounds: expected one bound per key {key_names}, found {show(sorted(bd))}"
            )
        for name in key_names:
            pair = _list(bd[name], f"{where}.bounds.{name}")
            if len(pair) != 2 or not all(v is None or is_number(v) for v in pair):
                raise ExportError(
                    f"{where}.bounds.{name}: expected [lo, hi] of numbers or null, "
                    f"found {show(pair)}"
                )
        _per_weight(rd["weights"], wn, f"{where}.weights")
    raise ExportError("rows: malformed row")  # pragma: no cover - the fast check agrees
