"""Tables of measurements (meter readings and latency), as ``energyprune measure`` prints them:
what was measured, with its spread and the other load on the machine, and an unmetered run's
labelled estimate."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.table import Table

from energyprune.energy.measurement.noise import TOO_NOISY
from energyprune.reports.report import fmt_joules

if TYPE_CHECKING:
    from energyprune.energy.measurement.protocol import Measurement

__all__ = ["add_noise_rows", "measurement_table"]


def measurement_table(m: Measurement, model: str) -> Table:
    """Key/value table of a measurement; an unmetered result shows the labelled estimate."""
    kind = f"measured ({m.backend})" if m.measured else "NOT measured — no meter"
    table = Table(title=f"{model} on {m.device}: {kind}", title_justify="left", show_header=False)
    table.add_column("quantity")
    table.add_column("value", justify="right")
    table.add_row("batch size / dtype", f"{m.batch_size} / {m.dtype}")
    if m.measured and m.joules_per_sample is not None:
        windows = m.windows
        table.add_row(
            "energy per sample (gross, median)", fmt_joules(m.joules_per_sample["median"])
        )
        table.add_row("  IQR over windows", fmt_joules(m.joules_per_sample["iqr"]))
        if m.active_joules_per_sample is not None:
            table.add_row(
                "energy per sample (idle-subtracted)", fmt_joules(m.active_joules_per_sample)
            )
        table.add_row(
            "power (median) / idle power", f"{m.power_w:.1f} W / {m.idle_power_w or 0:.1f} W"
        )
        table.add_row(
            "windows",
            f"{len(windows)} × {windows[0].seconds:.2f} s, {windows[0].iterations} iterations each",
        )
    else:
        table.add_row("meter", m.unavailable_reason or "none")
        if m.estimate:
            table.add_row(
                f"ESTIMATED energy per sample ({m.estimate['hardware']})",
                fmt_joules(m.estimate["joules_per_sample"]),
            )
    table.add_row(
        "latency p50 / p95 (measured)", f"{m.latency_ms['p50']:.3f} / {m.latency_ms['p95']:.3f} ms"
    )
    table.add_row("throughput (measured)", f"{m.throughput_sps:,.1f} samples/s")
    add_noise_rows(table, m)
    return table


def add_noise_rows(table: Table, m: Measurement) -> None:
    """The spread over windows, the other load on the machine, and a warning when noisy: the
    rows every measurement table ends with (images and language models alike)."""
    noise = m.noise or {}
    load = noise.get("other_load_cores")
    spread = f"{noise.get('spread', 0):.1%} IQR/median over windows"
    table.add_row(
        "spread / other load", spread + (f", {load:.1f} cores" if load is not None else "")
    )
    if m.noisy:
        table.add_row("[yellow]noisy[/]", f"[yellow]{m.noisy}: {TOO_NOISY}[/]")
