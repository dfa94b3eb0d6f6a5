"""Measurement tables: energy measured anywhere (a Jetson's rails, a USB meter, a Monsoon), as
rows that ``energyprune calibrate --from`` fits a profile to.

A table is CSV (header row) or JSON lines, one row per measured configuration:

===================  ========  ==============================================================
column               required  meaning
===================  ========  ==============================================================
``model``            yes       any model spec the CLI accepts, or one ``torch.nn`` constructor
``input_shape``      yes       e.g. ``1,3,32,32`` (batch first) or a JSON list
``dtype``            yes       fp32, fp16, bf16, ...
``joules_per_sample`` yes (1)  measured energy per sample (one batch's joules / batch size)
``latency_ms``       no (1)    wall-clock milliseconds per forward of the whole batch
``device``           no        where it was measured; rows compare only within one device
``weights``          no        weights file (relative to the table), if they matter
``gross_or_active``  no        ``gross`` (default: the meter's reading) or ``active`` (idle
                               power subtracted); one table holds one kind
===================  ========  ==============================================================

(1) the column being fitted must be there: ``joules_per_sample`` by default, ``latency_ms``
when latency stands in for a meter. A ``.json`` file holding one object (e.g. the output of
``energyprune measure --json``) or a list of objects is read too, and so is a folder of any
of these files.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from energyprune.errors import ConfigError
from energyprune.files import read_text
from energyprune.models.layers import TORCH_DTYPES
from energyprune.models.zoo import parse_input_shape

__all__ = ["FITTABLE", "BadRow", "Row", "read_table", "table_records"]

#: column → how the fitted quantity is named in reports and profiles.
FITTABLE = {
    "joules_per_sample": "joules per sample",
    "latency_ms": "wall-clock latency per sample (a stand-in for a meter, not energy)",
}
_SUFFIXES = (".csv", ".jsonl", ".json")


@dataclass(frozen=True)
class Row:
    """One measured configuration. ``value`` is the fitted quantity, per sample."""

    where: str
    model: str
    input_shape: tuple[int, ...]
    dtype: str
    value: float
    device: str = ""
    weights: str | None = None
    kind: str = "gross"
    order: tuple[str, int] = field(default=("", 0), compare=False)
    latency_s: float | None = None  # measured seconds per forward of the batch, when given
    family: str = ""  # what the row is held out with (a model, a block family); "" = its model

    @property
    def group(self) -> str:
        """Rows are compared only within one device, batch size and dtype."""
        return f"{self.device}/bs{self.input_shape[0]}/{self.dtype}"


@dataclass(frozen=True)
class BadRow:
    """A row that cannot be used, with where it is and why."""

    where: str
    reason: str
    order: tuple[str, int] = ("", 0)  # (file, line): bad rows are listed in table order

    def __str__(self) -> str:
        return f"{self.where}: {self.reason}"


def read_table(
    source: str | Path, column: str = "joules_per_sample"
) -> tuple[list[Row], list[BadRow]]:
    """Rows of a table file or of every table file in a folder, and the rows that are bad.

    Raises:
        ConfigError: the source does not exist, holds no table files, a file does not parse
            at all, or the rows mix gross and active joules.
    """
    if column not in FITTABLE:
        raise ConfigError(f"cannot fit column '{column}'; choose one of {', '.join(FITTABLE)}")
    rows: list[Row] = []
    bad: list[BadRow] = []
    for file, n, where, record in table_records(source):
        parsed = replace(_row(record, where, column, file.parent), order=(file.name, n))
        (rows if isinstance(parsed, Row) else bad).append(parsed)
    if not rows and not bad:
        raise ConfigError(
            f"measurement table '{source}' holds no rows: add a header and one row per "
            "measured configuration (see docs/measurement.md)"
        )
    kinds = {r.kind for r in rows}
    if len(kinds) > 1:
        raise ConfigError(
            "the table mixes gross and active joules; fit one kind (split the table by "
            "gross_or_active)"
        )
    return rows, bad


def table_records(source: str | Path) -> Iterator[tuple[Path, int, str, Any]]:
    """(file, index, where, raw record) of every row of a table file or of every table file
    in a folder; ``where`` is ``name line N``.

    Raises:
        ConfigError: the source does not exist, holds no table files, or a file does not
            parse at all.
    """
    path = Path(source)
    if not path.exists():
        raise ConfigError(f"measurement table '{source}' does not exist; check the path")
    files = sorted(p for p in path.iterdir() if p.suffix in _SUFFIXES) if path.is_dir() else [path]
    if not files:
        raise ConfigError(f"folder '{source}' holds no .csv, .jsonl or .json tables")
    for file in files:
        for n, (where, record) in enumerate(_records(file)):
            yield file, n, where, record


def _records(file: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    """(where, raw record) for every row of ``file``; ``where`` is ``name line N``."""
    text = read_text(file, "measurement table")
    if file.suffix == ".csv":
        reader = csv.DictReader(text.splitlines())
        for record in reader:
            yield f"{file.name} line {reader.line_num}", record
        return
    if file.suffix == ".json":
        data = _json(text, file.name)
        items = data if isinstance(data, list) else [data]
        for i, item in enumerate(items):
            yield f"{file.name} item {i + 1}" if isinstance(data, list) else file.name, item
        return
    for n, line in enumerate(text.splitlines(), 1):
        if line.strip():
            yield f"{file.name} line {n}", _json(line, f"{file.name} line {n}")


def _json(text: str, where: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise ConfigError(f"{where} is not valid JSON ({e.msg}, line {e.lineno})") from e


def _row(record: object, where: str, column: str, folder: Path) -> Row | BadRow:
    if not isinstance(record, dict):
        return BadRow(where, f"expected an object of columns, got {type(record).__name__}")
    if "measured" in record and isinstance(record.get("latency_ms"), dict):  # measure --json
        record = _from_measurement(record)
    try:
        return _parse(record, where, column, folder)
    except (ConfigError, ValueError, TypeError) as e:
        return BadRow(where, str(e))


def _parse(record: dict[str, Any], where: str, column: str, folder: Path) -> Row:
    missing = [c for c in ("model", "input_shape", "dtype", column) if _blank(record.get(c))]
    if missing:
        raise ValueError(f"missing {', '.join(missing)}")
    shape = record["input_shape"]  # "8,3,32,32" or a JSON list: one parser checks both
    shape = parse_input_shape(",".join(map(str, shape)) if isinstance(shape, list) else shape)
    dtype = str(record["dtype"]).strip()
    if dtype not in TORCH_DTYPES:
        raise ValueError(f"unknown dtype '{dtype}' (use one of {', '.join(TORCH_DTYPES)})")
    value = float(record[column])
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{column} must be a positive number, got {record[column]}")
    if column == "latency_ms":
        value = value / 1000 / shape[0]  # seconds per sample
    kind = str(record.get("gross_or_active") or "gross").strip()
    if kind not in ("gross", "active"):
        raise ValueError(f"gross_or_active must be 'gross' or 'active', got '{kind}'")
    weights = record.get("weights") or None
    if weights is not None:
        weights = str(folder / weights)
    device = str(record.get("device") or "").strip()
    return Row(
        where,
        str(record["model"]).strip(),
        shape,
        dtype,
        value,
        device,
        weights,
        kind,
        latency_s=_latency(record),
        family=str(record.get("family") or "").strip(),
    )


def _latency(record: dict[str, Any]) -> float | None:
    """The measured latency in seconds per forward, when the row gives a usable one."""
    try:
        ms = float(record.get("latency_ms") or "nan")
    except (TypeError, ValueError):
        return None
    return ms / 1000 if math.isfinite(ms) and ms > 0 else None


def _blank(value: object) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def _from_measurement(m: dict[str, Any]) -> dict[str, Any]:
    """An ``energyprune measure --json`` output as a table row (gross median J/sample)."""
    joules = m.get("joules_per_sample") if m.get("measured") else None
    return {
        "model": m.get("model"),
        "input_shape": m.get("input_shape"),
        "dtype": m.get("dtype"),
        "joules_per_sample": joules.get("median") if isinstance(joules, dict) else None,
        "latency_ms": m["latency_ms"].get("p50"),
        "device": (m.get("environment") or {}).get("device_name") or m.get("device"),
        "weights": m.get("weights"),
        "gross_or_active": "gross",
    }
