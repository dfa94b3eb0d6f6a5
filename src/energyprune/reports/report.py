"""Render profiles and runs for people: rich tables, summary lines, Markdown (plots: plots.py)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rich.table import Table

from energyprune.energy.measurement.noise import TOO_NOISY

if TYPE_CHECKING:
    from energyprune.energy.pricing.estimates import EnergyProfile

__all__ = [
    "comparison_table",
    "fmt_count",
    "fmt_joules",
    "front_table",
    "int8_measurement_rows",
    "int8_table",
    "latency_change",
    "layer_table",
    "noisy_reason",
    "run_markdown",
    "run_table",
    "summary_line",
    "tradeoff_table",
]


def fmt_count(n: float, unit: str = "") -> str:
    """1234567 → '1.23 M' (SI prefixes, base 1000)."""
    for factor, prefix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= factor:
            return f"{n / factor:.2f} {prefix}{unit}"
    return f"{n:.0f} {unit}".rstrip() if float(n).is_integer() else f"{n:.2f} {unit}".rstrip()


def fmt_joules(j: float) -> str:
    """Joules with an SI prefix: 0.00123 → '1.23 mJ'."""
    for factor, prefix in ((1.0, ""), (1e-3, "m"), (1e-6, "µ"), (1e-9, "n")):
        if abs(j) >= factor:
            return f"{j / factor:.3g} {prefix}J"
    return f"{j / 1e-12:.3g} pJ"


def layer_table(prof: EnergyProfile, top: int = 15) -> Table:
    """Per-layer table; ``top`` > 0 shows the costliest layers first, 0 shows all in order."""
    layers = list(prof.layers)
    if top > 0:
        layers = sorted(layers, key=lambda layer: layer.energy_j, reverse=True)[:top]
    shown = f"top {len(layers)} of {len(prof.layers)} layers" if top > 0 else "all layers"
    table = Table(
        title=f"Estimated energy per layer — {prof.model} on {prof.hardware}, {prof.dtype} "
        f"({shown})",
        title_justify="left",
    )
    for column in ("layer", "type", "dtype"):
        table.add_column(column, overflow="fold")
    overhead = prof.total.overhead_j > 0  # only calibrated profiles charge launches
    columns = ["MACs", "params", "bytes", "compute J", "memory J"]
    columns += ["overhead J"] * overhead + ["% of total"]
    for column in columns:
        table.add_column(column, justify="right")
    total = prof.total.energy_j or 1.0

    def cells(row) -> list[str]:
        values = [
            fmt_count(row.macs),
            fmt_count(row.params),
            fmt_count(row.bytes, "B"),
            fmt_joules(row.compute_j),
            fmt_joules(row.memory_j),
        ]
        values += [fmt_joules(row.overhead_j)] * overhead
        return [*values, f"{100 * row.energy_j / total:.1f}"]

    for layer in layers:
        table.add_row(layer.name, layer.type, layer.dtype, *cells(layer))
    table.add_section()
    table.add_row("total", "", "", *cells(prof.total))
    return table


def summary_line(prof: EnergyProfile) -> str:
    """One line with the totals, labelled as an estimate, and the profile's wall time."""
    t = prof.total
    return (
        f"estimated energy {fmt_joules(t.energy_j)} per forward pass "
        f"(compute {fmt_joules(t.compute_j)}, memory {fmt_joules(t.memory_j)}"
        + (f", overhead {fmt_joules(t.overhead_j)}" if t.overhead_j else "")
        + ") · "
        f"{fmt_count(t.macs)} MACs · {fmt_count(t.params)} params · {fmt_count(t.bytes, 'B')} moved"
        f" · profile {prof.hardware}, {prof.dtype}, input {'x'.join(map(str, prof.input_shape))}"
        f" · profiled in {prof.wall_s:.2f} s"
    )


def comparison_table(before: EnergyProfile, after: EnergyProfile) -> Table:
    """Before/after totals of a prune (estimates) with the after/before ratio."""
    table = Table(
        title=f"{before.model}: before vs after pruning — estimated on {before.hardware}, "
        f"{before.dtype}",
        title_justify="left",
    )
    for column in ("quantity", "before", "after", "after / before"):
        table.add_column(column, justify="left" if column == "quantity" else "right")
    b, a = before.total, after.total
    rows = [
        ("estimated energy", b.energy_j, a.energy_j, fmt_joules),
        ("  compute", b.compute_j, a.compute_j, fmt_joules),
        ("  memory", b.memory_j, a.memory_j, fmt_joules),
        *[("  launches", b.overhead_j, a.overhead_j, fmt_joules)] * bool(b.overhead_j),
        *[("  static + active (time)", b.static_j, a.static_j, fmt_joules)] * bool(b.static_j),
        *[("estimated time", b.seconds, a.seconds, lambda v: f"{1e3 * v:.2f} ms")]
        * bool(b.seconds),
        ("MACs", b.macs, a.macs, fmt_count),
        ("params", b.params, a.params, fmt_count),
        ("bytes moved", b.bytes, a.bytes, lambda v: fmt_count(v, "B")),
    ]
    for label, x, y, fmt in rows:
        table.add_row(label, fmt(x), fmt(y), f"{y / x:.3f}" if x else "—")
    return table


def run_table(report: dict) -> Table:
    """Before/after table of a pipeline run (test split; energy labelled by its basis)."""
    b, a = report["before"], report["after"]
    basis = report["energy_basis"]
    table = Table(title=f"before vs after — test split; energy {basis}", title_justify="left")
    for column in ("metric", "before", "after", "change"):
        table.add_column(column, justify="left" if column == "metric" else "right")
    pct = lambda v: f"{100 * v:.2f} %"  # noqa: E731
    rows = [
        ("top-1", pct(b["top1"]), pct(a["top1"]), f"{-report['accuracy_drop']:+.2f} pt"),
        ("macro F1", pct(b["f1"]), pct(a["f1"]), f"{100 * (a['f1'] - b['f1']):+.2f} pt"),
        (
            f"energy / inference, {basis}",
            fmt_joules(b["energy_j"]),
            fmt_joules(a["energy_j"]),
            f"−{100 * report['energy_reduction']:.1f} %",
        ),
        (
            "latency (measured, CPU median)",
            f"{b['latency_ms']:.3f} ms",
            f"{a['latency_ms']:.3f} ms",
            latency_change(b, a),
        ),
        ("MACs", fmt_count(b["macs"]), fmt_count(a["macs"]), f"{a['macs'] / b['macs']:.2f}×"),
        (
            "params",
            fmt_count(b["params"]),
            fmt_count(a["params"]),
            f"{a['params'] / b['params']:.2f}×",
        ),
        (
            "size on disk",
            fmt_count(b["size_bytes"], "B"),
            fmt_count(a["size_bytes"], "B"),
            f"{a['size_bytes'] / b['size_bytes']:.2f}×",
        ),
    ]
    for row in rows:
        table.add_row(*row)
    return table


def noisy_reason(*figures: dict) -> str | None:
    """Why any of these latency readings is too noisy to compare (energy/measurement/noise.py), or
    None."""
    reasons = [(f.get("latency_noise") or {}).get("reason") for f in figures]
    return next((r for r in reasons if r), None)


def latency_change(before: dict, after: dict) -> str:
    """after / before, or why the two readings cannot be compared."""
    reason = noisy_reason(before, after)
    if reason:
        return f"{TOO_NOISY} ({reason})"
    return f"{after['latency_ms'] / before['latency_ms']:.2f}×"


def _bn_cell(step: dict) -> str:
    """Validation top-1 with stale and re-estimated batch-norm statistics, where recorded."""
    stale, fresh = step.get("val_top1_before_bn"), step.get("val_top1_after_bn")
    if stale is None:
        return "—"
    return f"{100 * stale:.2f} %" + (f" → {100 * fresh:.2f} %" if fresh is not None else "")


def run_markdown(report: dict, title: str) -> str:
    """report.md: the before/after table and the energy reduction rate."""
    b, a = report["before"], report["after"]
    lines = [
        f"# {title}",
        "",
        f"Energy reduction rate: **{100 * report['energy_reduction']:.1f} %**, "
        f"{report['energy_basis']}; test top-1 change: **{-report['accuracy_drop']:+.2f} pt**.",
        "",
        "| metric | before | after |",
        "|---|---|---|",
    ]
    for key, label in (
        ("top1", "top-1"),
        ("precision", "macro precision"),
        ("recall", "macro recall"),
        ("f1", "macro F1"),
    ):
        lines.append(f"| {label} | {100 * b[key]:.2f} % | {100 * a[key]:.2f} % |")
    lines += [
        f"| energy per inference, {report['energy_basis']} | {fmt_joules(b['energy_j'])} | "
        f"{fmt_joules(a['energy_j'])} |",
        f"| latency (measured) | {b['latency_ms']:.3f} ms | {a['latency_ms']:.3f} ms "
        f"({latency_change(b, a)}) |",
        f"| MACs | {fmt_count(b['macs'])} | {fmt_count(a['macs'])} |",
        f"| params | {fmt_count(b['params'])} | {fmt_count(a['params'])} |",
        f"| size on disk | {fmt_count(b['size_bytes'], 'B')} | {fmt_count(a['size_bytes'], 'B')} |",
        "",
        f"## Steps (validation split: {report.get('validation', 'carved from train')})",
        "",
        "| step | attempt | target | energy / dense | val top-1 stale BN → recalibrated "
        "| val top-1 | drop (pt) | accepted |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for s in report["steps"]:
        lines.append(
            f"| {s['step']} | {s['attempt']} | {s['target_fraction']:.3f} | "
            f"{s['energy_fraction']:.3f} | {_bn_cell(s)} | {100 * s['val_top1']:.2f} % | "
            f"{s['val_drop_pt']:+.2f} | {'yes' if s['accepted'] else 'no'} |"
        )
    if report.get("stability"):
        st = report["stability"]
        lines += [
            "",
            f"Stability over {len(st['top1'])} seeds: top-1 {100 * st['mean']:.2f} ± "
            f"{100 * st['std']:.2f} %.",
        ]
    if report.get("stopped_early"):
        lines += ["", f"Stopped early: {report['stopped_early']}"]
    return "\n".join(lines) + "\n"


def int8_table(report: dict) -> Table:
    """fp32 vs int8: accuracy, estimated energy, measured latency (and energy with a meter)."""
    kept = len(report["float_layers"])
    title = f"{report['model']}: fp32 vs int8 ({report['method']}, {kept} layers kept in float)"
    table = Table(title=title, title_justify="left")
    for column in ("metric", "fp32", "int8"):
        table.add_column(column, justify="left" if column == "metric" else "right")
    v = report["val_top1"]
    table.add_row("validation top-1", f"{100 * v['fp32']:.2f} %", f"{100 * v['int8']:.2f} %")
    if report["test_top1"]:
        t = report["test_top1"]
        table.add_row("test top-1", f"{100 * t['fp32']:.2f} %", f"{100 * t['int8']:.2f} %")
    e = report["estimated_energy_j"]
    table.add_row(
        f"energy, estimated ({e['hardware']})", fmt_joules(e["fp32"]), fmt_joules(e["int8"])
    )
    for row in int8_measurement_rows(report["measurement"]):
        table.add_row(*row)
    return table


def int8_measurement_rows(m: dict) -> list[tuple[str, str, str]]:
    """Rows of :func:`energyprune.pipeline.int8.compare_int8`: measured latency (and energy)."""
    batch = m["fp32"]["batch_size"]
    rows = [
        (
            f"latency p50, measured (CPU, {m['mode']}, batch {batch})",
            f"{m['latency_p50_ms']['fp32']:.3f} ms",
            f"{m['latency_p50_ms']['int8']:.3f} ms",
        )
    ]
    energy = m["measured_joules_per_sample"]
    if energy is not None:
        backend = m["fp32"]["backend"]
        rows.append(
            (
                f"energy per sample, measured ({backend}, gross)",
                fmt_joules(energy["fp32"]),
                fmt_joules(energy["int8"]),
            )
        )
    return rows


def tradeoff_table(report: dict) -> Table:
    """ "prune more" vs "prune less + int8" for one target, and the choice."""
    table = Table(
        title=f"target {report['target_energy']:.0%} of dense energy: prune more, or prune "
        "less + int8?",
        title_justify="left",
    )
    for column in ("option", "pruning target", "energy", "val top-1", "test top-1", "eligible"):
        table.add_column(column, justify="left" if column == "option" else "right")

    def pct(v: float | None) -> str:
        return "—" if v is None else f"{100 * v:.2f} %"

    for o in report["options"]:
        mark = "→ " if o["option"] == report["choice"] else "  "
        energy = "—" if o["energy_fraction"] is None else f"{o['energy_fraction']:.3f}"
        table.add_row(
            mark + o["option"],
            f"{o['pruning_target']:.3f}",
            energy,
            pct(o["val_top1"]),
            pct(o["test_top1"]),
            "yes" if o["eligible"] else "no",
        )
    table.caption = (
        f"energy: estimated fraction of dense ({report['hardware']}). chosen: "
        f"{report['choice'] or 'none'} — {report['reason']}"
    )
    return table


def front_table(result: Any) -> Table:
    """The Pareto front of a search result (``front``, ``trials``, ``knee``,
    ``energy_basis``), cheapest energy first, the knee starred."""
    table = Table(
        title=f"Pareto front ({len(result.front)} of {len(result.trials)} trials; "
        f"energy {result.energy_basis}; accuracy on validation)",
        title_justify="left",
    )
    for column in (
        "trial",
        "target",
        "precision",
        "criterion",
        "round_to",
        "val top-1",
        "energy J",
        "latency ms",
    ):
        table.add_column(column, justify="right")
    for t in sorted(result.front, key=lambda t: t["values"]["energy_j"]):
        mark = " ★" if t["number"] == result.knee else ""
        table.add_row(
            f"{t['number']}{mark}",
            f"{t['params']['target_energy']:.2f}",
            t["precision"],
            t["params"]["criterion"],
            str(t["params"]["round_to"]),
            f"{100 * t['values']['accuracy']:.2f} %",
            f"{t['values']['energy_j']:.4g}",
            f"{t['values']['latency_ms']:.3f}" + (" (noisy)" if t.get("latency_noisy") else ""),
        )
    return table
