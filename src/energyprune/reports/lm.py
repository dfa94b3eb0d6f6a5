"""Tables and lines for a language model's energy per token (an estimate, labelled so)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rich.table import Table

from energyprune.energy.lm.layer_split import SUMMED
from energyprune.energy.lm.per_token import LMProfile
from energyprune.reports.measured import add_noise_rows
from energyprune.reports.report import fmt_count, fmt_joules

if TYPE_CHECKING:
    from energyprune.energy.measurement.lm_decode import LMMeasurement

__all__ = [
    "describe_lm_cuts",
    "describe_lm_plan",
    "lm_front_table",
    "lm_layer_table",
    "lm_measurement_table",
    "lm_prune_markdown",
    "lm_run_lines",
    "lm_summary_line",
    "regime_text",
]


def regime_text(lm: LMProfile) -> str:
    """``decode, batch 8, 1024 tokens of context`` and the like."""
    r = lm.regime.to_dict()
    if r["phase"] == "prefill":
        return f"prefill, batch {r['batch']}, prompts of {r['prompt']} tokens"
    if r["phase"] == "decode":
        return f"decode, batch {r['batch']}, {r['context']} tokens of context"
    return (
        f"whole requests, batch {r['batch']}: {r['prompt']} prompt + {r['output']} output "
        "tokens, prefill included"
    )


def lm_layer_table(lm: LMProfile, top: int = 15) -> Table:
    """Per-module cost of one token; ``top`` > 0 shows the costliest first, 0 all in order."""
    layers = list(lm.layers)
    if top > 0:
        layers = sorted(layers, key=lambda layer: layer.energy_j, reverse=True)[:top]
    shown = f"top {len(layers)} of {len(lm.layers)} modules" if top > 0 else "all modules"
    table = Table(
        title=f"Estimated energy per {lm.regime.basis} — {lm.model} on {lm.hardware}, "
        f"{lm.dtype}, {regime_text(lm)} ({shown})",
        title_justify="left",
    )
    table.add_column("module", overflow="fold")
    table.add_column("type", overflow="fold")
    timed = lm.seconds > 0
    columns = ["FLOPs", "weight B", "KV B", "act. B", "compute J", "memory J"]
    columns += ["static J", "time"] * timed + ["% of total"]
    for column in columns:
        table.add_column(column, justify="right")
    total = lm.energy_j or 1.0

    def cells(row) -> list[str]:
        values = [
            fmt_count(row.flops),
            fmt_count(row.weight_bytes, "B"),
            fmt_count(row.kv_bytes, "B"),
            fmt_count(row.activation_bytes, "B"),
            fmt_joules(row.compute_j),
            fmt_joules(row.memory_j),
        ]
        if timed:
            values += [fmt_joules(row.static_j), f"{row.seconds * 1e6:.2f} µs"]
        return [*values, f"{100 * row.energy_j / total:.1f}"]

    for layer in layers:
        table.add_row(layer.name, layer.type, *cells(layer))
    table.add_section()
    table.add_row("total", "", *cells(_Sum(lm)))
    return table


class _Sum:
    """The per-token totals, shaped like a row."""

    def __init__(self, lm: LMProfile) -> None:
        for name in (*SUMMED, "seconds"):
            setattr(self, name, lm.total(name))
        self.energy_j = lm.energy_j


def _busy(lm: LMProfile) -> str:
    """How much of the static energy is the board idling and how much is busy power."""
    split = lm.power_split()
    if not split["busy_j"]:
        return ""
    return f": idle {fmt_joules(split['idle_j'])} + busy {fmt_joules(split['busy_j'])}"


def lm_summary_line(lm: LMProfile) -> str:
    """Energy (and time) per token, labelled as an estimate with its regime and profile."""
    timing = ""
    if lm.seconds:
        timing = (
            f" · {lm.seconds * 1e3:.3f} ms of device time per token "
            f"({1 / lm.seconds:,.0f} tokens/s as priced)"
        )
    moe = f" · MoE: {lm.moe['rule']}" if lm.moe else ""
    return (
        f"estimated energy {fmt_joules(lm.energy_j)} per {lm.regime.basis} "
        f"(compute {fmt_joules(lm.total('compute_j'))}, memory {fmt_joules(lm.total('memory_j'))}"
        f", static {fmt_joules(lm.total('static_j'))}{_busy(lm)}){timing} · {regime_text(lm)}"
        f" · profile {lm.hardware} ({lm.calibration}), {lm.dtype}, {lm.runtime}, "
        f"{lm.serving.describe()}{moe} · profiled in {lm.wall_s:.2f} s"
    )


def lm_prune_markdown(report: dict) -> str:
    """report.md of an LM pruning run: estimated J/token, parameters, perplexities (measured
    on the stated windows), the plan and the guardrail."""
    r, ppl = report["regime"], report["ppl_dense"]
    where = ", ".join(f"{k}={v}" for k, v in r.items() if k not in ("phase", "basis"))
    rows = [
        ("dense", 1.0, report["dense_j_per_token"], report["params_dense"], ppl["ppl"], ppl["ppl"]),
        (
            "pruned",
            report["energy_ratio"],
            report["pruned_j_per_token"],
            report["params"],
            report["ppl_after_cut"]["ppl"],
            report["ppl_after_recovery"]["ppl"],
        ),
    ]
    lines = [
        f"# {report['model']} pruned to {report['energy_ratio']:.3f} of dense J/token",
        "",
        f"Weights: {report['weights']}. Energy is **estimated** on `{report['hardware']}` per "
        f"{r['basis']} in {r['phase']} ({where}); perplexity is measured on the first "
        f"{ppl['windows']} windows of {ppl['seq_len']} tokens of the evaluation text: "
        f"{report.get('validation', 'the evaluation file')}.",
        "",
        "| model | J/token ratio | est. J/token | params | ppl after cut | ppl after recovery |",
        "|---|---|---|---|---|---|",
    ]
    for name, ratio, joules, params, cut, rec in rows:
        lines.append(
            f"| {name} | {ratio:.3f} | {joules:.4g} | {params:,} | {cut:.2f} | {rec:.2f} |"
        )
    lines += [
        "",
        f"Cut: {describe_lm_cuts(report)}.",
        "",
        report["guardrail"] + ".",
        f"`from_pretrained`: {report.get('from_pretrained', 'not written')}.",
        "",
    ]
    return "\n".join(lines)


def _layers(per_layer: dict) -> str:
    """``3 in layers 0, 2 and 1 in layer 5`` from ``{layer: count}``."""
    by_count: dict[int, list[str]] = {}
    for layer, n in sorted(per_layer.items(), key=lambda kv: int(kv[0])):
        by_count.setdefault(int(n), []).append(str(layer))
    parts = [
        f"{n} in layer{'s' if len(ls) > 1 else ''} {', '.join(ls)}"
        for n, ls in sorted(by_count.items())
    ]
    return "; ".join(parts)


def describe_lm_plan(plan: dict) -> str:
    """A method's cut in words: layers dropped, MLP chunks and query heads cut per layer,
    sparsity, Torch-Pruning's recipe, and which of the energy criterion's plans was kept."""
    said = []
    if plan.get("drop_layers"):
        said.append(f"drops decoder layers {', '.join(map(str, plan['drop_layers']))}")
    if plan.get("mlp_chunks_cut"):
        said.append(f"cuts MLP channel chunks: {_layers(plan['mlp_chunks_cut'])}")
    if plan.get("query_heads_per_group_cut"):
        said.append(f"cuts query heads per KV group: {_layers(plan['query_heads_per_group_cut'])}")
    if plan.get("wanda"):
        said.append(f"Wanda {plan['wanda']} sparsity in {plan['layers']} linear layers")
    if plan.get("recipe"):
        said.append(_recipe(plan))
    if plan.get("chosen"):
        said.append(f"plan kept: {plan['chosen']}")
    return "; ".join(said) or "nothing cut"


def _recipe(plan: dict) -> str:
    """Torch-Pruning's LLM recipe: its ratio, the widths left, and whether the budget held."""
    said = (
        f"{plan['recipe']} at pruning ratio {plan['pruning_ratio']:.3f}: hidden size "
        f"{plan['hidden_size']}, MLP width {plan['intermediate_size']}, "
        f"{plan['num_attention_heads']} query heads over {plan['num_key_value_heads']} KV heads"
    )
    if str(plan.get("heads", "")).startswith("kept"):
        said += f" (heads {plan['heads']})"
    if plan.get("met", True):
        return said
    return f"{said} (the budget is out of its reach: {plan['reached']:.3f} of dense J/token)"


def describe_lm_cuts(report: dict) -> str:
    """Every step's cut in words (one step: its cut alone)."""
    steps = report.get("plan_steps", {}).get("steps") or [report["plan"]]
    if len(steps) == 1:
        return describe_lm_plan(steps[0])
    return "; ".join(f"step {i}: {describe_lm_plan(p)}" for i, p in enumerate(steps, 1))


def lm_run_lines(report: dict, out) -> list[str]:
    """What an LM run prints at its end: perplexities, the cut, the outcome, the files."""
    outcome = report["outcome"]
    lines = [
        f"perplexity: dense {report['ppl_dense']['ppl']:.2f}, after the cut "
        f"{report['ppl_after_cut']['ppl']:.2f}, after recovery "
        f"{report['ppl_after_recovery']['ppl']:.2f} ({report['ppl_dense']['windows']} windows)",
        f"J/token: {report['energy_ratio']:.3f} of dense (estimated, {report['hardware']}): "
        f"{report['dense_j_per_token']:.4g} -> {report['pruned_j_per_token']:.4g}",
        f"cut: {describe_lm_cuts(report)}",
        outcome["guardrail"],
        outcome["budget"],
    ]
    plan = ", plan.json" if str(report.get("from_pretrained", "")).startswith("no") else ""
    lines.append(
        f"wrote {out}/ (config.json, model.safetensors{plan}, tokenizer, report.json, report.md)"
    )
    return lines


def lm_front_table(result) -> Table:
    """The Pareto front of a language-model search, cheapest J/token first, the knee starred."""
    table = Table(
        title=f"Pareto front ({len(result.front)} of {len(result.trials)} trials; J/token "
        f"{result.energy_basis}; perplexity on validation windows)",
        title_justify="left",
    )
    for column in ("trial", "method", "target", "J/token ratio", "perplexity", "J/token"):
        table.add_column(column, justify="right")
    for t in sorted(result.front, key=lambda t: t["values"]["energy_j"]):
        mark = " ★" if t["number"] == result.knee else ""
        table.add_row(
            f"{t['number']}{mark}",
            str(t["params"]["method"]),
            f"{t['params']['target_energy']:.2f}",
            f"{t['energy_fraction']:.3f}",
            f"{t['values']['perplexity']:.2f}",
            f"{t['values']['energy_j']:.4g}",
        )
    return table


def lm_measurement_table(m: LMMeasurement, model: str, estimate: dict[str, Any] | None) -> Table:
    """A measured phase: what one step was, tokens/s and step latency (always measured), and
    J per token only when a meter was read; an estimate is a separate row, labelled so."""
    s, r = m.setting, m.result
    kind = f"measured ({r.backend})" if r.measured else "energy NOT measured — no meter"
    what = (
        f"decode, batch {s.batch} at context {s.length}"
        if s.phase == "decode"
        else f"prefill, batch {s.batch} x {s.length} prompt tokens"
    )
    title = f"{model}: {what}, on {r.device} ({s.device}, {r.dtype}): {kind}"
    table = Table(title=title, title_justify="left", show_header=False)
    table.add_column("quantity")
    table.add_column("value", justify="right")
    graph = ", one CUDA graph" if s.cuda_graph else ""
    table.add_row("one step", f"{s.tokens_per_step} {s.basis}s (static KV cache{graph})")
    table.add_row("throughput (measured)", f"{m.tokens_per_s:,.1f} tokens/s")
    lat = r.latency_ms
    table.add_row("step latency p50 / p95 (measured)", f"{lat['p50']:.3f} / {lat['p95']:.3f} ms")
    if r.measured and r.joules_per_sample is not None:
        w = r.windows
        table.add_row(
            f"energy per {s.basis} (gross, median)", fmt_joules(r.joules_per_sample["median"])
        )
        table.add_row("  IQR over windows", fmt_joules(r.joules_per_sample["iqr"]))
        if r.active_joules_per_sample is not None:
            table.add_row("  idle-subtracted", fmt_joules(r.active_joules_per_sample))
        idle = "not read" if r.idle_power_w is None else f"{r.idle_power_w:.1f} W"
        table.add_row("power (median) / idle", f"{r.power_w:.1f} W / {idle}")
        table.add_row("windows", f"{len(w)} × {w[0].seconds:.2f} s, {w[0].iterations} steps each")
    else:
        table.add_row(f"energy per {s.basis}", f"not measured ({r.unavailable_reason})")
    if estimate is not None:
        table.add_row(
            f"ESTIMATED energy per {s.basis} ({estimate['hardware']}, not this device)",
            fmt_joules(estimate["joules_per_token"]),
        )
    add_noise_rows(table, r)
    return table
