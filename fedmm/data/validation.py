"""Data validation with Great Expectations 1.x (called directly, no ZenML integration).

Two suites are provided:

* ``prepared_data`` (:func:`validate_dataset`): structural checks on the modality arrays
  (per-sample shape, sample count), then a GX suite over a vectorised per-sample summary
  table (labels in range, every sample with a modality, each modality's presence rate, no
  NaN/inf and values within plausible bounds where a modality is present, non-empty).
* ``partitions`` (:func:`validate_partitions`): a GX suite over a per-client table
  (minimum client size, realised vs requested simulated missing rates within a tolerance,
  and the data's own missing rates beside them).

Great Expectations is imported lazily inside the functions (its import takes several
seconds); every call uses a fresh in-memory (ephemeral) context, so nothing is cached or
written to disk. GX progress bars are disabled through the context config and GX's log
records below WARNING are suppressed for the duration of a run.
"""

from __future__ import annotations

import contextlib
import logging
import math
import warnings
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from fedmm.errors import UserError

if TYPE_CHECKING:  # pragma: no cover
    import pandas

__all__ = [
    "DataValidationError",
    "Spec",
    "ExpectationOutcome",
    "ValidationReport",
    "row_count_spec",
    "run_gx",
    "validate_dataset",
    "validate_partitions",
]

TABLE = "<table>"  # column name used for table-level expectations
SHAPE_EXPECTATION = "expect_modality_shape_to_equal"  # structural check done in numpy
COLUMN_EXISTS_EXPECTATION = "expect_column_to_exist"  # structural check done in pandas
_TOL_EPS = 1e-9  # slack so that |realised - requested| == tolerance is not lost to rounding


class DataValidationError(UserError, ValueError):
    """Raised by :meth:`ValidationReport.raise_if_failed`; the message lists every failure."""


@dataclass(frozen=True)
class ExpectationOutcome:
    """Result of one expectation: what was checked, on which column, and the counts."""

    expectation: str
    column: str
    success: bool
    unexpected_count: int
    element_count: int
    details: str

    def describe(self) -> str:
        """One-line human summary, used in error messages."""
        text = (
            f"{self.expectation}({self.column}): "
            f"{self.unexpected_count} of {self.element_count} rows unexpected"
        )
        return f"{text} [{self.details}]" if self.details else text


@dataclass(frozen=True)
class ValidationReport:
    """Outcome of a validation suite (``prepared_data`` or ``partitions``)."""

    suite: str
    success: bool
    outcomes: tuple[ExpectationOutcome, ...]
    presence_rates: dict[str, float] = field(default_factory=dict)
    """Per modality, the share of samples that have it (``prepared_data`` only)."""

    def failed(self) -> tuple[ExpectationOutcome, ...]:
        """The outcomes that did not succeed."""
        return tuple(o for o in self.outcomes if not o.success)

    def to_dict(self) -> dict:
        """JSON-serialisable dict (inverse of :meth:`from_dict`)."""
        return {
            "suite": self.suite,
            "success": self.success,
            "outcomes": [asdict(o) for o in self.outcomes],
            "presence_rates": self.presence_rates,
        }

    @classmethod
    def from_dict(cls, d: dict) -> ValidationReport:
        """Rebuild a report produced by :meth:`to_dict`."""
        return cls(
            suite=str(d["suite"]),
            success=bool(d["success"]),
            outcomes=tuple(
                ExpectationOutcome(
                    expectation=str(o["expectation"]),
                    column=str(o["column"]),
                    success=bool(o["success"]),
                    unexpected_count=int(o["unexpected_count"]),
                    element_count=int(o["element_count"]),
                    details=str(o["details"]),
                )
                for o in d["outcomes"]
            ),
            presence_rates={str(k): float(v) for k, v in d.get("presence_rates", {}).items()},
        )

    def raise_if_failed(self) -> None:
        """Raise :class:`DataValidationError` naming each failed expectation, if any failed."""
        bad = self.failed()
        if self.success and not bad:
            return
        parts = "; ".join(o.describe() for o in bad) or "no individual expectation failed"
        raise DataValidationError(
            f"{self.suite} validation failed: {len(bad)} of {len(self.outcomes)} "
            f"expectations: {parts}"
        )


# --------------------------------------------------------------------------- GX plumbing


@contextlib.contextmanager
def _quiet_gx() -> Iterator[None]:
    """Suppress GX log records below WARNING, and the warnings its import raises, while GX runs.

    Importing GX 1.24 warns about its dependencies, nothing fedmm can act on: google.api_core
    announces the end of its Python 3.11 support (FutureWarning) and GX imports the deprecated
    ``sre_constants``/``sre_parse`` modules. Every other warning passes.
    """
    logger = logging.getLogger("great_expectations")
    old_level = logger.level
    if logger.getEffectiveLevel() < logging.WARNING:
        logger.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="You are using a Python version", category=FutureWarning,
                                    module=r"google\.api_core")
            warnings.filterwarnings("ignore", message="module 'sre_(constants|parse)' is deprecated",
                                    category=DeprecationWarning, module=r"great_expectations\.")
            yield
    finally:
        logger.setLevel(old_level)


def _fmt(x: Any) -> str:
    """Compact number formatting for details text."""
    if isinstance(x, (int, np.integer)):
        return str(int(x))
    try:
        xf = float(x)
    except (TypeError, ValueError):
        return str(x)
    if math.isnan(xf):
        return "nan"
    return f"{xf:.6g}"


# An expectation spec: (GX class name, kwargs, column for the report, details(success)).
Spec = tuple[str, dict, str, Callable[[bool], str]]


def run_gx(suite_name: str, df: pandas.DataFrame, specs: list[Spec]) -> list[ExpectationOutcome]:
    """Run ``specs`` as one GX suite over ``df`` in a fresh ephemeral context."""
    with _quiet_gx():
        import great_expectations as gx
        from great_expectations.data_context.types.base import (
            DataContextConfig,
            InMemoryStoreBackendDefaults,
            ProgressBarsConfig,
        )

        config = DataContextConfig(
            store_backend_defaults=InMemoryStoreBackendDefaults(init_temp_docs_sites=False),
            progress_bars=ProgressBarsConfig(globally=False, metric_calculations=False),
        )
        context = gx.get_context(project_config=config, mode="ephemeral")
        source = context.data_sources.add_pandas(name=f"fedmm_{suite_name}")
        asset = source.add_dataframe_asset(name=suite_name)
        batch_definition = asset.add_batch_definition_whole_dataframe(name="whole")
        suite = context.suites.add(gx.ExpectationSuite(name=suite_name))
        expectations = []
        for cls_name, kwargs, _, _ in specs:
            expectations.append(suite.add_expectation(getattr(gx.expectations, cls_name)(**kwargs)))
        definition = context.validation_definitions.add(
            gx.ValidationDefinition(name=suite_name, data=batch_definition, suite=suite)
        )
        result = definition.run(batch_parameters={"dataframe": df}, result_format="BASIC")

    by_id = {r.expectation_config.id: r for r in result.results}
    outcomes = []
    for exp, (_, _, column, details) in zip(expectations, specs, strict=True):
        res = by_id.get(exp.id)
        if res is None:  # pragma: no cover - GX always reports every expectation
            outcomes.append(
                ExpectationOutcome(exp.expectation_type, column, False, 0, len(df), "not evaluated")
            )
            continue
        info = res.result or {}
        success = bool(res.success)
        exc = res.exception_info or {}
        if exc.get("raised_exception"):
            text = f"GX error: {exc.get('exception_message')}"
            success = False
        else:
            text = details(success)
        element_count = int(info.get("element_count", len(df)))
        if "unexpected_count" in info:
            unexpected = int(info["unexpected_count"])
        else:  # table-level expectation: the whole table is either fine or not
            unexpected = 0 if success else element_count
        outcomes.append(
            ExpectationOutcome(
                expectation=str(res.expectation_config.type),
                column=column,
                success=success,
                unexpected_count=unexpected,
                element_count=element_count,
                details=text,
            )
        )
    return outcomes


def row_count_spec(n: int) -> Spec:
    return (
        "ExpectTableRowCountToBeBetween",
        {"min_value": 1},
        TABLE,
        lambda ok: f"rows={n} (need >= 1)",
    )


# --------------------------------------------------------------------------- prepared data


def _sample_stats(
    arr: np.ndarray, present: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-sample (nonfinite count, min, max over finite values); absent samples -> 0, NaN, NaN."""
    n = arr.shape[0]
    flat = arr.reshape(n, int(np.prod(arr.shape[1:], dtype=np.int64)))
    if not np.issubdtype(flat.dtype, np.floating):
        flat = flat.astype(np.float64)
    finite = np.isfinite(flat)
    nonfinite = flat.shape[1] - finite.sum(axis=1)
    if flat.shape[1] == 0:
        lo = np.full(n, np.nan)
        hi = np.full(n, np.nan)
    else:
        lo = np.where(finite, flat, np.inf).min(axis=1).astype(np.float64)
        hi = np.where(finite, flat, -np.inf).max(axis=1).astype(np.float64)
        none_finite = ~finite.any(axis=1)
        lo[none_finite] = np.nan
        hi[none_finite] = np.nan
    if present is not None:
        nonfinite = np.where(present, nonfinite, 0)
        lo = np.where(present, lo, np.nan)
        hi = np.where(present, hi, np.nan)
    return nonfinite.astype(np.int64), lo, hi


def _shape_outcome(m: str, ok: bool, unexpected: int, count: int, details: str) -> ExpectationOutcome:
    return ExpectationOutcome(SHAPE_EXPECTATION, m, ok, unexpected, count, details)


def _check_arguments(num_classes: int, expected_shapes: dict, modalities: dict, value_bounds: dict) -> None:
    """Programming errors in the call (not data problems): raise ``ValueError``."""
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    for m, (low, high) in value_bounds.items():
        if m not in expected_shapes and m not in modalities:
            raise ValueError(f"value_bounds names unknown modality {m!r}")
        if not low <= high:
            raise ValueError(f"value_bounds[{m!r}] has low > high: ({low}, {high})")


def _modality_shape(m: str, arr: np.ndarray | None, want: tuple[int, ...] | None, n: int) -> ExpectationOutcome:
    """The structural outcome of one modality: present on both sides, per-sample shape, sample count, numeric."""
    if arr is None:
        return _shape_outcome(m, False, 0, 0, f"modality missing, expected per-sample shape {want}")
    count = int(arr.shape[0]) if arr.ndim >= 1 else 0
    got = tuple(arr.shape[1:]) if arr.ndim >= 1 else ()
    if want is None:
        return _shape_outcome(m, False, count, count, f"unexpected modality with shape {arr.shape} (no expected shape)")
    if arr.ndim < 1 or got != want:
        return _shape_outcome(m, False, count, count, f"per-sample shape {got} != expected {want}")
    if count != n:
        return _shape_outcome(m, False, abs(count - n), max(count, n), f"{count} samples but {n} labels")
    if arr.dtype.kind not in "biuf":
        return _shape_outcome(m, False, count, count, f"dtype {arr.dtype} is not numeric")
    return _shape_outcome(m, True, 0, count, f"per-sample shape {got}")


def _structure(
    modalities: dict[str, np.ndarray], expected_shapes: dict[str, tuple[int, ...]], n: int
) -> tuple[list[ExpectationOutcome], list[str]]:
    """Shape outcomes of every expected or given modality, and the modalities fit for the GX suite."""
    outcomes, good = [], []
    for m in list(expected_shapes) + [k for k in modalities if k not in expected_shapes]:
        arr = np.asarray(modalities[m]) if m in modalities else None
        want = tuple(int(s) for s in expected_shapes[m]) if m in expected_shapes else None
        outcomes.append(_modality_shape(m, arr, want, n))
        if outcomes[-1].success:
            good.append(m)
    return outcomes, good


def _presence(presence: np.ndarray | None, n: int, names: list[str]) -> tuple[np.ndarray, ExpectationOutcome | None]:
    """The (n, M) bool presence (all True when None), or all True and a failed outcome when its shape is wrong."""
    if presence is None:
        return np.ones((n, len(names)), dtype=bool), None
    presence = np.asarray(presence)
    if presence.shape != (n, len(names)):
        detail = f"presence shape {presence.shape} != expected {(n, len(names))} (columns follow modalities order {names})"
        return np.ones((n, len(names)), dtype=bool), _shape_outcome("presence", False, n, n, detail)
    return presence.astype(bool), None


def _label_specs(labels: np.ndarray, num_classes: int) -> list[Spec]:
    """Labels not null and in ``0..num_classes-1``."""
    with np.errstate(invalid="ignore"):
        numeric = labels.astype(np.float64) if labels.dtype.kind in "biuf" else None
    if numeric is not None and np.isfinite(numeric).any():
        seen = f"observed [{_fmt(np.nanmin(numeric))}, {_fmt(np.nanmax(numeric))}]"
    else:
        seen = "no numeric labels"
    return [
        ("ExpectColumnValuesToNotBeNull", {"column": "label"}, "label", lambda ok: "labels must not be null"),
        ("ExpectColumnValuesToBeInSet", {"column": "label", "value_set": list(range(int(num_classes)))}, "label",
         lambda ok: f"{seen}, allowed 0..{num_classes - 1}"),
    ]


def _presence_specs(presence: np.ndarray, names: list[str], columns: dict[str, np.ndarray]) -> list[Spec]:
    """Every sample has a modality; each modality's realised presence rate (reported, any rate passes)."""
    columns["modalities_present"] = presence.sum(axis=1)
    empty = int((presence.sum(axis=1) == 0).sum())
    specs: list[Spec] = [(
        "ExpectColumnValuesToBeBetween", {"column": "modalities_present", "min_value": 1}, "modalities_present",
        lambda ok: f"{empty} sample(s) with no modality present",
    )]
    for j, m in enumerate(names):
        columns[f"present_{m}"] = presence[:, j].astype(np.float64)
        rate, count = float(presence[:, j].mean()) if len(presence) else 0.0, int(presence[:, j].sum())
        specs.append((
            "ExpectColumnMeanToBeBetween", {"column": f"present_{m}", "min_value": 0.0, "max_value": 1.0},
            f"present_{m}", lambda ok, r=rate, c=count: f"presence rate {r:.4f} ({c} of {len(presence)} samples)",
        ))
    return specs


def _value_specs(
    m: str, arr: np.ndarray, present: np.ndarray, bounds: tuple[float, float] | None, columns: dict[str, np.ndarray]
) -> list[Spec]:
    """No NaN/inf where the modality is present; its values within ``bounds`` there (when given)."""
    nonfinite, lo, hi = _sample_stats(arr, present)
    columns[f"{m}_nonfinite"] = nonfinite
    total = int(nonfinite.sum())
    specs: list[Spec] = [(
        "ExpectColumnValuesToBeBetween", {"column": f"{m}_nonfinite", "min_value": 0, "max_value": 0},
        f"{m}_nonfinite", lambda ok: f"{total} NaN/inf values where the modality is present",
    )]
    if bounds is None:
        return specs
    low, high = (float(v) for v in bounds)
    columns[f"{m}_min"], columns[f"{m}_max"] = lo, hi
    seen_lo = np.nanmin(lo) if np.isfinite(lo).any() else np.nan
    seen_hi = np.nanmax(hi) if np.isfinite(hi).any() else np.nan
    text = lambda ok: (  # noqa: E731
        f"min={_fmt(seen_lo)} max={_fmt(seen_hi)} {'within' if ok else 'not within'} [{_fmt(low)}, {_fmt(high)}]"
    )
    return specs + [
        ("ExpectColumnValuesToBeBetween", {"column": f"{m}_min", "min_value": low}, f"{m}_min", text),
        ("ExpectColumnValuesToBeBetween", {"column": f"{m}_max", "max_value": high}, f"{m}_max", text),
    ]


def validate_dataset(
    modalities: dict[str, np.ndarray],
    labels: np.ndarray,
    num_classes: int,
    expected_shapes: dict[str, tuple[int, ...]],
    value_bounds: dict[str, tuple[float, float]],
    presence: np.ndarray | None = None,
) -> ValidationReport:
    """Validate prepared multimodal data; returns a ``prepared_data`` report (does not raise).

    Shapes are checked first in numpy (per-sample shape vs ``expected_shapes``, sample count vs
    ``labels``, modalities missing on either side); modalities with a bad shape are left out of
    the GX suite. The GX suite runs over a per-sample summary: labels not null and in
    ``0..num_classes-1``; every sample with at least one modality present and each modality's
    presence rate; no NaN/inf and values within ``value_bounds`` (if given for the modality)
    where the modality is present; at least one row. ``presence[:, j]`` (all True when None)
    refers to the j-th key of ``modalities``; the report's ``presence_rates`` holds the rates.
    """
    import pandas as pd

    _check_arguments(num_classes, expected_shapes, modalities, value_bounds)
    labels = np.asarray(labels)
    if labels.ndim != 1:
        detail = f"labels must be 1-D (N,), got shape {labels.shape}"
        return ValidationReport("prepared_data", False, (_shape_outcome("label", False, labels.size, labels.size, detail),))
    n, names = int(labels.shape[0]), list(modalities)
    presence, bad_presence = _presence(presence, n, names)
    outcomes, good = _structure(modalities, expected_shapes, n)
    outcomes += [bad_presence] if bad_presence else []
    columns: dict[str, np.ndarray] = {"label": labels}
    specs = _label_specs(labels, num_classes) + _presence_specs(presence, names, columns)
    for m in good:
        present = presence[:, names.index(m)]
        specs += _value_specs(m, np.asarray(modalities[m]), present, value_bounds.get(m), columns)
    specs.append(row_count_spec(n))
    outcomes.extend(run_gx("prepared_data", pd.DataFrame(columns, copy=False), specs))
    rates = {m: float(presence[:, j].mean()) if n else 0.0 for j, m in enumerate(names)}
    return ValidationReport("prepared_data", all(o.success for o in outcomes), tuple(outcomes), rates)


# --------------------------------------------------------------------------- partitions


def _data_missing_specs(clients: pandas.DataFrame, columns: dict[str, Any]) -> list[Spec]:
    """Each modality's missing rate in the clients' own data (before the simulated mask), reported beside the
    simulated rates: a rate in [0, 1], with the range over clients in the details."""
    specs: list[Spec] = []
    for col in sorted(c for c in map(str, clients.columns) if c.startswith("data_missing_rate_")):
        values = clients[col].to_numpy(dtype=np.float64)
        columns[col] = values
        spread = f"{_fmt(values.min())}..{_fmt(values.max())}" if len(values) else "n/a"
        specs.append(("ExpectColumnValuesToBeBetween", {"column": col, "min_value": 0.0, "max_value": 1.0}, col,
                      lambda ok, r=spread: f"missing in the data (before the mask) per client: {r}"))
    return specs


def _numbers(clients: pandas.DataFrame, column: str) -> np.ndarray:
    import pandas as pd

    return pd.to_numeric(clients[column], errors="coerce").to_numpy(dtype=np.float64)


def _missing_columns(cols: list[str], req: set[str], real: set[str], n: int) -> list[ExpectationOutcome]:
    """Failures for the required columns and the per-modality rate columns that are missing."""
    outcomes = [ExpectationOutcome(COLUMN_EXISTS_EXPECTATION, c, False, n, n, "required column missing")
                for c in ("client", "n_samples") if c not in cols]
    for m in sorted(req ^ real):
        missing = f"realised_rate_{m}" if m in req else f"requested_rate_{m}"
        outcomes.append(ExpectationOutcome(COLUMN_EXISTS_EXPECTATION, missing, False, n, n, "column missing for modality"))
    return outcomes


def _size_specs(clients: pandas.DataFrame, min_samples: int, columns: dict[str, Any]) -> list[Spec]:
    """``n_samples`` a number and at least ``min_samples`` for every client."""
    sizes = columns["n_samples"] = _numbers(clients, "n_samples")
    smallest = _fmt(np.nanmin(sizes)) if np.isfinite(sizes).any() else "nan"
    return [
        ("ExpectColumnValuesToNotBeNull", {"column": "n_samples"}, "n_samples", lambda ok: "n_samples must be a number"),
        ("ExpectColumnValuesToBeBetween", {"column": "n_samples", "min_value": int(min_samples)}, "n_samples",
         lambda ok: f"smallest client has {smallest} samples, need >= {int(min_samples)}"),
    ]


def _rate_spec(clients: pandas.DataFrame, m: str, tolerance: float, sampling_z: float, columns: dict[str, Any]) -> Spec:
    """The realised simulated missing rate of modality ``m`` within tolerance plus binomial spread of the request."""
    requested, realised = _numbers(clients, f"requested_rate_{m}"), _numbers(clients, f"realised_rate_{m}")
    drawn = _numbers(clients, "n_samples")
    if "n_dropped" in clients.columns:
        drawn = drawn + _numbers(clients, "n_dropped")
    with np.errstate(divide="ignore", invalid="ignore"):
        spread = sampling_z * np.sqrt(np.clip(requested * (1 - requested), 0, None) / np.maximum(drawn, 1))
    dev = np.abs(realised - requested) - spread
    dev = np.where(np.isnan(dev), np.inf, dev)  # NaN must fail, GX would skip it as missing
    col = f"excess_deviation_{m}"
    columns[col] = dev
    worst = _fmt(dev.max()) if dev.size else "n/a"
    return ("ExpectColumnValuesToBeBetween", {"column": col, "max_value": float(tolerance) + _TOL_EPS}, col,
            lambda ok: f"max |realised - requested| - {_fmt(sampling_z)} sd = {worst}, tolerance {_fmt(tolerance)}")


def validate_partitions(
    clients: pandas.DataFrame,
    min_samples: int,
    tolerance: float,
    sampling_z: float = 3.0,
) -> ValidationReport:
    """Validate a per-client partition table; returns a ``partitions`` report.

    ``clients`` has one row per client with ``client``, ``n_samples`` and, per modality ``m``,
    ``requested_rate_{m}`` / ``realised_rate_{m}``. Checks: ``n_samples`` not null and
    ``>= min_samples``; per modality ``|realised - requested| <= tolerance + z * sd``, where
    ``sd = sqrt(r (1 - r) / n)`` is the binomial spread of a rate r drawn over the client's n
    samples (``n_samples + n_dropped`` when the table has ``n_dropped``), so small clients are
    not failed for honest sampling noise (a NaN rate counts as a violation); the data's own
    missing rates (``data_missing_rate_{m}``, when given) reported beside them; at least one
    client row. Missing columns are reported as failures.
    """
    import pandas as pd

    if tolerance < 0:
        raise ValueError(f"tolerance must be >= 0, got {tolerance}")
    n, cols = int(len(clients)), [str(c) for c in clients.columns]
    req = {c[len("requested_rate_"):] for c in cols if c.startswith("requested_rate_")}
    real = {c[len("realised_rate_"):] for c in cols if c.startswith("realised_rate_")}
    outcomes = _missing_columns(cols, req, real, n)
    columns: dict[str, Any] = {}
    specs = _size_specs(clients, min_samples, columns) if "n_samples" in cols else []
    specs += [_rate_spec(clients, m, tolerance, sampling_z, columns) for m in sorted(req & real)]
    specs += _data_missing_specs(clients, columns)
    specs.append(row_count_spec(n))
    outcomes.extend(run_gx("partitions", pd.DataFrame(columns, index=pd.RangeIndex(n)), specs))
    return ValidationReport("partitions", all(o.success for o in outcomes), tuple(outcomes))
