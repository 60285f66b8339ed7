"""The fusion formula: how per-task predictions and fusion weights become one ranking score.

A feed ranks candidates by a fused score of its multi-task predictions ``p_k``:

- ``logsum`` (BatchRL-MTF, KDD 2022, eq. 1): ``score = sum_k w_k * log(p_k + beta_k)``;
- ``sum``: ``score = sum_k w_k * p_k``.

:class:`Fusion` is the one value object for it: the formula and the offsets ``beta_k``, read from
command-line text (:meth:`Fusion.parse`), a TOML ``[fusion]`` table or a JSON object
(:meth:`Fusion.from_dict`, :meth:`Fusion.from_toml`, :meth:`Fusion.from_json`), written back with
:meth:`Fusion.to_dict`, and applied with :meth:`Fusion.transform` (``log(p + beta)``) and
:meth:`Fusion.score`. The dataset records it (``features.json``), weight tables carry it, the
simulator, the learned environment, OPE and serving apply it.

Offsets come in three shapes: one number for every task (``beta=(0.1,)``), one per task in task
order (``beta=(0.1, 0.05, 0.2)``), or named (``beta=(0.1, 0.05)``, ``tasks=("click", "like")``).
:meth:`Fusion.for_tasks` turns any of them into one offset per task in a given task order, which is
the form that is applied and compared.

Only the standard library and numpy.
"""

from __future__ import annotations

import json
import math
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, cast

import numpy as np
import numpy.typing as npt

from batchrl_mtf.errors import FusionError

__all__ = ["DEFAULT_BETA", "DEFAULT_FORMULA", "FORMULAS", "Fusion", "choose_fusion"]

FORMULAS = ("logsum", "sum")
"""Fusion formulas: ``logsum`` = sum_k w_k * log(p_k + beta_k); ``sum`` = sum_k w_k * p_k."""

DEFAULT_FORMULA: Literal["logsum", "sum"] = "logsum"
"""The formula when none is given."""

DEFAULT_BETA = 0.1
"""The ``logsum`` offset of every task when none is given (the one default of the package)."""

FloatArray = npt.NDArray[np.float64]

_BETA_SYNTAX = "a number (0.1), numbers in task order (0.1,0.05,0.2) or task=number pairs (click=0.1,like=0.05)"


def _offsets(values: object, where: str) -> tuple[float, ...]:
    """``values`` as a tuple of finite offsets > 0, or a :class:`FusionError` naming ``where``."""
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
        raise FusionError(f"{where}: expected a list of numbers > 0, found {values!r}")
    out = []
    for i, b in enumerate(values):
        ok = isinstance(b, (int, float, np.floating, np.integer)) and not isinstance(b, bool)
        if not ok or not math.isfinite(float(b)) or float(b) <= 0:
            raise FusionError(f"{where}[{i}]: expected a finite number > 0, found {b!r}")
        out.append(float(b))
    return tuple(out)


@dataclass(frozen=True)
class Fusion:
    """A fusion formula and its offsets.

    Attributes:
        formula: ``"logsum"`` (``sum_k w_k * log(p_k + beta_k)``) or ``"sum"``
            (``sum_k w_k * p_k``).
        beta: ``logsum`` offsets (finite, > 0): one for every task, one per task in task order, or
            one per name in ``tasks``; ``None`` means :data:`DEFAULT_BETA` for every task.
            Must be ``None`` for ``sum``.
        tasks: The task each offset belongs to, when the offsets were given by name
            (``click=0.1,like=0.05``); ``None`` when they are in task order.

    Raises:
        FusionError: An unknown formula, offsets that are not finite numbers > 0, offsets for
            ``sum``, or names that do not match the offsets.
    """

    formula: Literal["logsum", "sum"] = DEFAULT_FORMULA
    beta: tuple[float, ...] | None = None
    tasks: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if self.formula not in FORMULAS:
            raise FusionError(f"fusion.formula: expected one of {FORMULAS}, found {self.formula!r}")
        if self.formula == "sum":
            if self.beta is not None:
                raise FusionError("fusion.beta: expected no beta for formula 'sum'")
            object.__setattr__(self, "tasks", None)
            return
        beta = (DEFAULT_BETA,) if self.beta is None else _offsets(self.beta, "fusion.beta")
        if not beta:
            raise FusionError("fusion.beta: expected one offset per task for formula 'logsum'")
        object.__setattr__(self, "beta", beta)
        if self.tasks is not None:
            tasks = tuple(self.tasks)
            if not all(isinstance(t, str) and t for t in tasks) or len(set(tasks)) != len(tasks):
                raise FusionError(f"fusion.tasks: expected unique task names, found {list(tasks)}")
            if len(tasks) != len(beta):
                raise FusionError(
                    f"fusion.beta: expected one offset per named task {list(tasks)}, "
                    f"found {len(beta)}"
                )
            object.__setattr__(self, "tasks", tasks)

    # ------------------------------------------------------------------ reading
    @classmethod
    def parse(
        cls,
        formula: str | None,
        beta: str | None,
        formula_flag: str = "--formula",
        beta_flag: str = "--beta",
    ) -> Fusion:
        """The fusion given on a command line (``--formula logsum --beta 0.1``).

        Args:
            formula: ``"logsum"``, ``"sum"`` or ``None`` (``logsum``).
            beta: ``"0.1"`` (every task), ``"0.1,0.05,0.2"`` (task order),
                ``"click=0.1,like=0.05"`` (by name), or ``None`` (:data:`DEFAULT_BETA`).
            formula_flag: The option name used in error messages.
            beta_flag: The option name used in error messages.

        Raises:
            FusionError: One line naming the flag, what was expected and what was found.
        """
        form = DEFAULT_FORMULA if formula is None else formula.strip()
        if form not in FORMULAS:
            raise FusionError(f"{formula_flag}: expected one of {FORMULAS}, found {formula!r}")
        if beta is None or not beta.strip():
            return cls(cast(Literal["logsum", "sum"], form))
        if form == "sum":
            raise FusionError(f"{beta_flag}: expected no offsets with {formula_flag} sum")
        parts = [p.strip() for p in beta.split(",")]
        if any(not p for p in parts):
            raise FusionError(f"{beta_flag}: expected {_BETA_SYNTAX}, found {beta!r}")
        names: list[str] | None = None
        values: list[object] = []
        if any("=" in p for p in parts):
            names = []
            for p in parts:
                name, sep, num = (x.strip() for x in p.partition("="))
                if not sep or not name:
                    raise FusionError(f"{beta_flag}: expected task=number, found {p!r}")
                if name in names:
                    raise FusionError(f"{beta_flag}: task {name!r} given twice")
                names.append(name)
                values.append(num)
        else:
            values = list(parts)
        nums: list[float] = []
        for v in values:
            try:
                nums.append(float(cast(str, v)))
            except ValueError:
                raise FusionError(f"{beta_flag}: expected {_BETA_SYNTAX}, found {beta!r}") from None
        return cls("logsum", _offsets(nums, beta_flag), None if names is None else tuple(names))

    @classmethod
    def from_dict(
        cls, doc: Mapping[str, object], where: str = "fusion", ignore: Sequence[str] = ()
    ) -> Fusion:
        """The fusion of a JSON object or TOML ``[fusion]`` table.

        ``{"formula": "logsum", "beta": 0.1}``; ``beta`` may also be a list in task order or a
        table ``{click = 0.1, like = 0.05}``; ``formula`` defaults to ``logsum``, ``beta`` to
        :data:`DEFAULT_BETA`.

        Args:
            doc: The mapping.
            where: Where it came from (``"pipeline.toml [fusion]"``), for error messages.
            ignore: Further keys that may be present and are not part of the fusion
                (``"source"`` in a dataset's ``features.json``).

        Raises:
            FusionError: Unknown keys or invalid values, naming ``where`` and the key.
        """
        if not isinstance(doc, Mapping):
            raise FusionError(f"{where}: expected a table with formula and beta, found {doc!r}")
        unknown = sorted(set(doc) - {"formula", "beta", *ignore})
        if unknown:
            raise FusionError(f"{where}: unknown key(s) {unknown}; expected formula, beta")
        formula = doc.get("formula", DEFAULT_FORMULA)
        if formula not in FORMULAS:
            raise FusionError(f"{where}: 'formula': expected one of {FORMULAS}, found {formula!r}")
        form = cast(Literal["logsum", "sum"], formula)
        beta = doc.get("beta")
        if beta is None:
            return cls(form)
        if form == "sum":
            raise FusionError(f"{where}: 'beta': expected no beta for formula 'sum'")
        if isinstance(beta, Mapping):
            names = tuple(str(t) for t in beta)
            return cls(form, _offsets(list(beta.values()), f"{where}: 'beta'"), names)
        if isinstance(beta, (int, float)) and not isinstance(beta, bool):
            return cls(form, _offsets([beta], f"{where}: 'beta'"))
        offsets = _offsets(beta, f"{where}: 'beta'")
        if not offsets:
            raise FusionError(f"{where}: 'beta': expected one offset per task, found none")
        return cls(form, offsets)

    @classmethod
    def from_toml(cls, text: str, where: str = "fusion") -> Fusion:
        """The ``[fusion]`` table of a TOML document (the default fusion when it has none)."""
        try:
            doc = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise FusionError(f"{where}: invalid TOML ({exc})") from None
        table = doc.get("fusion", {})
        return cls.from_dict(cast(Mapping[str, object], table), f"{where} [fusion]")

    @classmethod
    def from_json(cls, text: str, where: str = "fusion") -> Fusion:
        """The fusion of a JSON object, or of the ``fusion`` member of a JSON document."""
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as exc:
            raise FusionError(f"{where}: invalid JSON ({exc})") from None
        if isinstance(doc, dict) and isinstance(doc.get("fusion"), dict):
            return cls.from_dict(doc["fusion"], f"{where}: fusion")
        return cls.from_dict(doc, where)

    # ------------------------------------------------------------------ writing
    def to_dict(self, tasks: Sequence[str] | None = None) -> dict[str, object]:
        """The JSON/TOML form: ``{"formula": ..., "beta": ...}`` (``beta`` absent for ``sum``).

        ``beta`` is a table ``{task: offset}`` when the offsets are named or ``tasks`` names them,
        else a list in task order. :meth:`from_dict` reads it back.
        """
        if self.beta is None:
            return {"formula": self.formula}
        if self.tasks is not None:
            return {"formula": self.formula, "beta": dict(zip(self.tasks, self.beta, strict=True))}
        if tasks is not None:
            beta = self.for_tasks(tasks).beta or ()
            return {"formula": self.formula, "beta": dict(zip(tasks, beta, strict=True))}
        return {"formula": self.formula, "beta": list(self.beta)}

    def describe(self, tasks: Sequence[str] | None = None) -> str:
        """One line for command output: ``logsum, beta 0.1`` (every task), ``logsum, beta
        click=0.1,like=0.05`` (named, or in the order of ``tasks``) or ``sum``."""
        if self.beta is None:
            return self.formula
        names = self.tasks if self.tasks is not None else tasks
        if len(set(self.beta)) == 1:
            return f"{self.formula}, beta {self.beta[0]:g}"
        if names is not None and len(names) == len(self.beta):
            pairs = ",".join(f"{t}={b:g}" for t, b in zip(names, self.beta, strict=True))
            return f"{self.formula}, beta {pairs}"
        return f"{self.formula}, beta {','.join(f'{b:g}' for b in self.beta)}"

    # ----------------------------------------------------------------- tasks
    def for_tasks(self, tasks: Sequence[str], where: str = "fusion.beta") -> Fusion:
        """This fusion with one offset per task, in the order of ``tasks``.

        A single offset is repeated; named offsets are put in ``tasks`` order. The result has
        ``tasks=None`` (the offsets are in task order), so equal fusions compare equal.

        Raises:
            FusionError: Named offsets whose names are not exactly ``tasks``, or a number of
                offsets that is neither 1 nor ``len(tasks)``.
        """
        tasks = tuple(tasks)
        if self.beta is None:
            return self
        if self.tasks is not None:
            if set(self.tasks) != set(tasks):
                missing = [t for t in tasks if t not in self.tasks]
                extra = [t for t in self.tasks if t not in tasks]
                raise FusionError(
                    f"{where}: expected one offset for each task {list(tasks)}; "
                    f"missing {missing}, unknown {extra}"
                )
            named = dict(zip(self.tasks, self.beta, strict=True))
            return Fusion(self.formula, tuple(named[t] for t in tasks))
        if len(self.beta) == len(tasks):
            return Fusion(self.formula, self.beta)
        if len(self.beta) == 1:
            return Fusion(self.formula, self.beta * len(tasks))
        raise FusionError(
            f"{where}: expected 1 or {len(tasks)} offsets (tasks {list(tasks)}), "
            f"found {len(self.beta)}"
        )

    # ------------------------------------------------------------------ apply
    def transform(self, preds: npt.ArrayLike) -> FloatArray:
        """The per-task fusion inputs: ``log(p_k + beta_k)`` (``logsum``) or ``p_k`` (``sum``).

        Args:
            preds: Predictions in task order, shape (..., k).

        Returns:
            float64 array of the same shape.

        Raises:
            FusionError: Named offsets (call :meth:`for_tasks` first) or a number of offsets that
                is neither 1 nor k.
        """
        p = np.asarray(preds, dtype=np.float64)
        if self.beta is None:
            return p
        if self.tasks is not None:
            raise FusionError(
                f"fusion.beta: offsets named {list(self.tasks)}; put them in task order first"
            )
        k = p.shape[-1] if p.ndim else 0
        if len(self.beta) not in (1, k):
            raise FusionError(
                f"fusion.beta: expected 1 or {k} offsets (one per task), found {len(self.beta)}"
            )
        return cast(FloatArray, np.log(p + np.asarray(self.beta, dtype=np.float64)))

    def score(self, preds: npt.ArrayLike, weights: npt.ArrayLike) -> FloatArray:
        """The fused scores ``sum_k w_k * transform(p)_k``.

        Args:
            preds: Predictions in task order, shape (n_candidates, k) for one request or
                (n_requests, n_candidates, k).
            weights: Fusion weights, shape (k,), or (n_requests, k) with 3-D ``preds``.

        Returns:
            Scores, shape (n_candidates,) or (n_requests, n_candidates).

        Raises:
            FusionError: Shapes that do not fit, or offsets that do not fit the tasks.
        """
        p = np.asarray(preds, dtype=np.float64)
        w = np.asarray(weights, dtype=np.float64)
        fits2 = p.ndim == 2 and w.shape == (p.shape[1],)
        fits3 = p.ndim == 3 and w.shape == (p.shape[0], p.shape[2])
        if not (fits2 or fits3):
            raise FusionError(
                "fuse: expected preds (n_candidates, k) with weights (k,), or preds "
                "(n_requests, n_candidates, k) with weights (n_requests, k); "
                f"found {p.shape} and {w.shape}"
            )
        x = self.transform(p)
        if fits2:
            return x @ w
        return cast(FloatArray, np.matmul(x, w[:, :, None])[:, :, 0])


def choose_fusion(
    tasks: Sequence[str],
    recorded: Fusion | None,
    formula: str | None = None,
    beta: str | None = None,
    recorded_source: str = "given",
    origin: str = "the dataset",
) -> tuple[Fusion, str]:
    """The fusion a command applies: ``--formula/--beta`` when given, else the recorded one.

    Args:
        tasks: Task names in action order.
        recorded: The fusion ``origin`` records (``None``: it records none, e.g. a dataset
            written before datasets recorded their fusion).
        formula: ``--formula`` text or ``None``.
        beta: ``--beta`` text or ``None``.
        recorded_source: ``"given"`` or ``"default"``: how the recorded fusion was chosen.
        origin: What recorded it, for the output line and the error (``"the dataset runs/ds"``).

    Returns:
        The fusion with one offset per task, and one line for the command's output saying where
        it came from (a flag that overrides the recorded fusion says so).

    Raises:
        FusionError: No flag and nothing recorded (one line asking for ``--formula``), or flags
            that do not parse or do not fit ``tasks``.
    """
    if formula is None and beta is None:
        if recorded is None:
            raise FusionError(
                f"--formula: {origin} records no fusion (built before datasets recorded it); "
                "give --formula logsum --beta 0.1 (or --formula sum), or rebuild it with "
                "build-dataset --formula/--beta"
            )
        fusion = recorded.for_tasks(tasks)
        how = (
            f"{origin}'s, recorded as the default: it was built without --formula/--beta"
            if recorded_source == "default"
            else f"{origin}'s"
        )
        return fusion, f"fusion: {fusion.describe(tasks)} ({how})"
    fusion = Fusion.parse(formula, beta).for_tasks(tasks, "--beta")
    if recorded is None:
        return fusion, f"fusion: {fusion.describe(tasks)} (--formula/--beta)"
    old = recorded.for_tasks(tasks)
    if old == fusion:
        return fusion, f"fusion: {fusion.describe(tasks)} (--formula/--beta, same as {origin}'s)"
    return fusion, (
        f"fusion: {fusion.describe(tasks)} (--formula/--beta override {origin}'s "
        f"{old.describe(tasks)})"
    )
