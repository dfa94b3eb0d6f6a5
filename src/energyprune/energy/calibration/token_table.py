"""Per-token tables: energy per token measured on language models anywhere, one row per run.

Columns (CSV or JSON lines): ``model`` (an ``hf:`` config, relative to the table), ``phase``
(prefill, decode or workload) with its regime columns (``batch``; ``prompt`` / ``context`` /
``output``), ``dtype`` and ``joules_per_token`` (summed over the run's GPUs, as a meter summed
over them reads it). Optional: ``itl_ms`` (median inter-token latency: one decode step),
``tensor_parallel`` and ``expert_parallel`` (how the model was split; ``gpus`` is their
product), ``device`` and ``source``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from energyprune.energy.calibration.tables import BadRow, table_records
from energyprune.energy.lm.regimes import PHASES, Regime
from energyprune.errors import ConfigError
from energyprune.models.layers import TORCH_DTYPES

__all__ = ["TokenRow", "read_token_table"]


@dataclass(frozen=True)
class TokenRow:
    """One measured regime of one language model (J per token, total over ``gpus``)."""

    where: str
    model: str
    regime: Regime
    dtype: str
    joules: float
    gpus: int = 1
    device: str = ""
    order: tuple[str, int] = ("", 0)
    itl_s: float | None = None  # median inter-token latency, when the table gives one
    tensor_parallel: int = 1
    expert_parallel: int = 1

    @property
    def family(self) -> str:
        """What a held-out split keeps together: the model."""
        return self.model


def _int(record: dict[str, Any], key: str, default: int | None = None) -> int:
    value = record.get(key)
    if value in (None, "") and default is not None:
        return default
    try:
        return int(value)
    except (TypeError, ValueError):
        raise ValueError(f"{key} must be a whole number, got {value!r}") from None


#: the columns each phase's regime is made of (batch defaults to 1)
_COLUMNS = {"prefill": ("prompt",), "decode": ("context",), "workload": ("prompt", "output")}


def _regime(record: dict[str, Any]) -> Regime:
    phase = str(record.get("phase") or "").strip()
    if phase not in PHASES:
        raise ValueError(f"phase must be {', '.join(PHASES)}, got {phase!r}")
    fields = {c: _int(record, c) for c in _COLUMNS[phase]}
    return PHASES[phase](batch=_int(record, "batch", 1), **fields)


def _row(record: dict[str, Any], where: str, folder: Path) -> TokenRow:
    missing = [c for c in ("model", "phase", "dtype", "joules_per_token") if not record.get(c)]
    if missing:
        raise ValueError(f"missing {', '.join(missing)}")
    joules = float(record["joules_per_token"])
    if not math.isfinite(joules) or joules <= 0:
        raise ValueError(f"joules_per_token must be a positive number, got {joules}")
    model = str(record["model"]).strip()
    if not model.startswith("hf:"):
        raise ValueError(f"model must be an hf: config (hf:PATH), got {model!r}")
    path = Path(model[3:])
    model = model if path.is_absolute() else f"hf:{folder / path}"
    dtype = str(record["dtype"]).strip()
    if dtype not in TORCH_DTYPES:
        raise ValueError(f"unknown dtype '{dtype}' (use one of {', '.join(TORCH_DTYPES)})")
    ep = _int(record, "expert_parallel", 1)
    tp = _int(record, "tensor_parallel", _int(record, "gpus", 1) // ep)  # gpus alone: tensor
    gpus = _int(record, "gpus", tp * ep)
    if gpus != tp * ep or min(tp, ep) < 1:
        raise ValueError(
            f"gpus ({gpus}) must be tensor_parallel ({tp}) x expert_parallel ({ep}); the "
            "fit prices each row as it was split"
        )
    return TokenRow(
        where,
        model,
        _regime(record),
        dtype,
        joules,
        gpus,
        str(record.get("device") or "").strip(),
        itl_s=_latency(record),
        tensor_parallel=tp,
        expert_parallel=ep,
    )


def _latency(record: dict[str, Any]) -> float | None:
    value = record.get("itl_ms")
    if value in (None, ""):
        return None
    ms = float(value)
    if not math.isfinite(ms) or ms <= 0:
        raise ValueError(f"itl_ms must be a positive number, got {value!r}")
    return ms / 1e3


def read_token_table(source: str | Path) -> tuple[list[TokenRow], list[BadRow]]:
    """The usable rows of a per-token table (file or folder) and the bad ones, by line."""
    rows: list[TokenRow] = []
    bad: list[BadRow] = []
    for file, n, where, record in table_records(source):
        try:
            if not isinstance(record, dict):
                raise ValueError(f"expected an object of columns, got {type(record).__name__}")
            rows.append(replace(_row(record, where, file.parent), order=(file.name, n)))
        except (ValueError, TypeError, ConfigError) as e:
            bad.append(BadRow(where, str(e), (file.name, n)))
    return rows, bad
