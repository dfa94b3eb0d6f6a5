"""Issue 37's language-model benchmark: SmolLM2-135M cut to 0.5 and 0.3 of its decode J/token.

    python benchmarks/llm_prune.py

(the defaults: ``--seq-len 256 --finetune-steps 100 --eval-windows 40 --calib-windows 16``,
every regime and arm; the plan and its time estimate, from a distillation step and an
evaluation window timed at start, are printed first). On an idle 2-core CPU a step of 256
tokens took 2.6 s and the plan came to about 2-3.7 hours (3 if the energy arms and depth meet
0.5); ``--seq-len 128`` about 1-1.9 hours. ``--threads 1`` when another job shares the CPU:
two jobs with two threads each on two cores ran 5-10x slower. Rerun the same command to
continue a run that was cut off: the JSON is written after every arm, and arms already in it
with the same settings are skipped (``--redo ARMS`` runs those arms again, after a change to
them). Every row carries the commit and date it was run at.

The model: ``make llm`` (SmolLM2-135M-Instruct, dequantised from a 4-bit GGUF to fp32),
calibrated and distilled on WikiText-2 validation windows, perplexity on the first
``--eval-windows`` windows of WikiText-2 *test* (held out: the same windows for every arm).
Every arm that changed the model gets the same recovery (``--finetune-steps`` distillation
steps from the dense model), one pruning step, and no perplexity guardrail: each arm is judged
at its cut. Arms whose model depends on neither regime nor budget (dense, int8, int4,
wanda-2:4) are cut and recovered once and priced in each regime; depth, width, torch-pruning,
energy and energy+bits run per regime and budget, and budget 0.3 only for the arms that met 0.5
in that regime (the JSON's ``cut`` says which were not run and why).

ESTIMATED: energy, J per generated token at decode batch 1 and 64 with 1,024 tokens of context
on the serving-calibrated ``h100-sxm`` profile (graphs runtime); wanda-2:4 on ``h100-sxm-2of4``
(the same GPU with 2:4 sparse kernels: an uncalibrated datasheet profile), over dense on that
profile. MEASURED on this CPU: perplexity, and ``tokens_per_s``, greedy decode at batch 1 of
the PyTorch model: latency, not energy (int8 / int4 weights are dequantised floats here, so
they decode at the speed of their float shape).
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import statistics
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from provenance import commit, provenance

SHARED = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "wikitext-2"
HARDWARE = "h100-sxm"
SPARSE_HARDWARE = "h100-sxm-2of4"  # the profile with 2:4 sparse kernels
CONTEXT = 1024
BATCHES = ("1", "64")  # decode batch sizes: the regimes
BUDGETS = (0.5, 0.3)
#: arms whose model depends on neither regime nor budget: cut and recovered once
SHARED_ARMS = ("dense", "int8", "int4", "wanda-2:4")
BUDGET_ARMS = ("depth", "width", "torch-pruning", "energy", "energy+bits")
ARMS = SHARED_ARMS + BUDGET_ARMS
NO_GUARDRAIL = 1e9  # percent perplexity rise allowed: every arm is judged at its cut
SETTINGS = ("seq_len", "finetune_steps", "eval_windows", "calib_windows")
LIMIT_MINUTES = 180  # issue 37: the whole benchmark in at most 3 hours on this CPU


def regime_name(batch: str) -> str:
    return f"decode:batch={batch},context={CONTEXT}"


@torch.no_grad()
def tokens_per_s(model, prompt: torch.Tensor, new: int = 32, repeats: int = 3) -> float:
    """Greedy decode speed at batch 1 on this CPU (median of ``repeats``): latency only."""
    speeds = []
    for _ in range(repeats):
        start = time.perf_counter()
        model.generate(prompt, max_new_tokens=new, min_new_tokens=new, do_sample=False)
        speeds.append(new / (time.perf_counter() - start))
    return statistics.median(speeds)


def bits_of(plan: dict[str, Any], dtype: str, layers: int) -> str:
    """The weight formats of a plan in words (and the KV cache's, when the plan sets it);
    ``layers``: the decoder layers the cut model kept."""
    dropped = {str(i) for i in plan.get("drop_layers", ())}  # the formats name every layer
    formats = (plan.get("weight_bits") or {}).items()
    stored = Counter(str(fmt) for i, fmt in formats if str(i) not in dropped)
    if not stored:
        words = f"{dtype} weights, as dense"
    elif len(stored) == 1 and sum(stored.values()) == layers:
        words = f"{next(iter(stored))} all {layers} decoder layers, other weights {dtype}"
    else:
        counts = ", ".join(f"{fmt} {n} of {layers} decoder layers" for fmt, n in stored.items())
        words = f"{counts}, other weights {dtype}"
    if "wanda" in plan:
        words = f"{plan['wanda']} sparse, {words}"
    kv = plan.get("kv_cache")
    return f"{words}; KV cache {kv if kv else 'as dense'}"


@dataclass
class Bench:
    """What every arm shares: the model, its windows, the settings, what is done so far."""

    lm: Any
    data: Any
    args: argparse.Namespace
    argv: list[str] | None
    dense_j: dict[str, dict[str, float]]  # regime name -> profile -> J/token
    shared: dict[str, dict] = field(default_factory=dict)  # arm -> row, ratio per regime
    rows: dict[tuple[str, float, str], dict] = field(default_factory=dict)
    time_plan: dict[str, Any] = field(default_factory=dict)

    @property
    def settings(self) -> dict[str, int]:
        return {key: getattr(self.args, key) for key in SETTINGS}

    @property
    def dtype(self) -> str:
        return str(next(self.lm.model.parameters()).dtype).removeprefix("torch.")

    def prompt(self) -> torch.Tensor:
        return self.data.eval[0, :16].unsqueeze(0)

    def config(self, arm: str, budget: float):
        from energyprune.pipeline.lm_prune import LMPruneConfig

        return LMPruneConfig(
            target_energy=budget,
            hardware=SPARSE_HARDWARE if arm == "wanda-2:4" else HARDWARE,
            finetune_steps=self.args.finetune_steps,
            max_ppl_rise=NO_GUARDRAIL,
            method=arm,
            calib_windows=self.args.calib_windows,
            eval_windows=self.args.eval_windows,
            steps=1,
        )


def _log(arm: str):
    from energyprune.pipeline.lm_prune import LMHooks

    def line(text: str) -> None:
        print(f"  [{arm}] {text}", flush=True)

    def step(done: int, total: int, loss: float) -> None:
        if done == total or done % 25 == 0:
            line(f"distillation step {done}/{total}, loss {loss:.3f}")

    return LMHooks(log=line, on_step=step)


def _row(bench: Bench, arm: str, result, ratio, start: float) -> dict[str, Any]:
    """An arm's figures from its :class:`LMPruneResult` (``ratio``: its J/token ratio, or one
    per regime for a shared arm)."""
    model = result.model
    return {
        "arm": arm,
        "energy_ratio": ratio,
        "ppl_after_cut": result.ppl_cut.value,
        "ppl_after_recovery": result.ppl_recovered.value,
        "params": result.params_pruned,
        "bits": bits_of(result.plan, bench.dtype, model.config.num_hidden_layers),
        "tokens_per_s": tokens_per_s(model, bench.prompt()),
        "distillation_steps": len(result.losses),
        "stopped": result.report.get("stopped_early"),
        "hardware": bench.config(arm, 0.5).hardware,
        "plan": result.plan,
        "wall_s": time.perf_counter() - start,
        **_when(),
    }


def _when() -> dict[str, str]:
    """The commit and date a row was run at (rows of one JSON may come from several runs)."""
    return {"commit": commit(), "date": time.strftime("%Y-%m-%d")}


def run_dense(bench: Bench) -> dict[str, Any]:
    from energyprune.pipeline.text import perplexity

    start = time.perf_counter()
    model = bench.lm.model
    ppl = perplexity(model, bench.data.eval, limit=bench.args.eval_windows).value
    return {
        "arm": "dense",
        "energy_ratio": {name: 1.0 for name in bench.dense_j},
        "ppl_after_cut": ppl,
        "ppl_after_recovery": ppl,
        "params": sum(p.numel() for p in model.parameters()),
        "bits": bits_of({}, bench.dtype, model.config.num_hidden_layers),
        "tokens_per_s": tokens_per_s(model, bench.prompt()),
        "distillation_steps": 0,
        "stopped": None,
        "hardware": HARDWARE,
        "plan": {},
        "wall_s": time.perf_counter() - start,
        **_when(),
    }


def run_shared(bench: Bench, arm: str) -> dict[str, Any]:
    """A budget-free arm: cut and recovered once (in the first regime), priced in each."""
    from energyprune.energy.lm.per_token import profile_lm
    from energyprune.energy.lm.regimes import Decode
    from energyprune.pipeline.lm_prune import prune_lm

    if arm == "dense":
        return run_dense(bench)
    start = time.perf_counter()
    torch.manual_seed(0)
    cfg = bench.config(arm, BUDGETS[0])  # the method does not read the budget
    result = prune_lm(bench.lm.model, bench.data, Decode(1, CONTEXT), cfg, hooks=_log(arm))
    ratios = {
        regime_name(b): profile_lm(result.model, Decode(int(b), CONTEXT), cfg.hardware).energy_j
        / bench.dense_j[regime_name(b)][cfg.hardware]
        for b in BATCHES
    }
    return _row(bench, arm, result, ratios, start)


def run_budget(bench: Bench, arm: str, batch: str, budget: float) -> dict[str, Any]:
    """An arm cut to ``budget`` of dense J/token in the regime, then recovered."""
    from energyprune.energy.lm.regimes import Decode
    from energyprune.pipeline.lm_prune import prune_lm

    start = time.perf_counter()
    torch.manual_seed(0)
    regime = Decode(int(batch), CONTEXT)
    cfg = bench.config(arm, budget)
    result = prune_lm(bench.lm.model, bench.data, regime, cfg, hooks=_log(arm))
    row = _row(bench, arm, result, result.energy_ratio, start)
    return {**row, "met": met(row["energy_ratio"], budget)}


def met(ratio: float, budget: float) -> bool:
    """Whether ``ratio`` of dense J/token meets ``budget`` (as the pruner accepts a cut)."""
    from energyprune.pruning.lm_allocate import BUDGET_SLACK

    return ratio <= budget + BUDGET_SLACK


def _not_run(bench: Bench, batch: str, budget: float) -> dict[str, str]:
    """Why a budget arm has no row at ``budget`` in the regime (0.3: it missed 0.5)."""
    cut = {}
    for arm in BUDGET_ARMS:
        first = bench.rows.get((regime_name(batch), BUDGETS[0], arm))
        if budget == BUDGETS[0] or first is None or first["met"]:
            continue
        cut[arm] = (
            f"not run: at budget {BUDGETS[0]} in this regime it reached "
            f"{first['energy_ratio']:.3f} of dense J/token (missed); budget {budget} runs "
            f"only for the arms that met {BUDGETS[0]}"
        )
    return cut


def _shared_rows(bench: Bench, name: str, budget: float, counted: set[str]) -> list[dict]:
    """The shared arms' rows in one run: their ratio in its regime; wall_s in the first only."""
    rows = []
    for arm in (a for a in SHARED_ARMS if a in bench.shared):
        row = bench.shared[arm]
        ratio = row["energy_ratio"][name]
        wall = 0.0 if arm in counted else row["wall_s"]
        counted.add(arm)
        extra = {"met": met(ratio, budget), "shared": True, "wall_s": wall}
        rows.append({**row, "energy_ratio": ratio, **extra})
    return rows


def runs_view(bench: Bench) -> list[dict[str, Any]]:
    """The JSON's ``runs``: per regime (selected, or with rows) and budget, every arm done."""
    from energyprune.energy.lm.regimes import Decode

    runs, counted = [], set()
    chosen = bench.args.regimes.split(",")
    for batch in BATCHES:
        name = regime_name(batch)
        if batch not in chosen and not any(key[0] == name for key in bench.rows):
            continue
        for budget in BUDGETS:
            arms = _shared_rows(bench, name, budget, counted)
            for arm in BUDGET_ARMS:
                row = bench.rows.get((name, budget, arm))
                arms += [{**row, "shared": False}] if row else []
            runs.append(
                {
                    "regime": Decode(int(batch), CONTEXT).to_dict(),
                    "regime_name": name,
                    "budget": budget,
                    "arms": arms,
                    "cut": _not_run(bench, batch, budget),
                }
            )
    return runs


def load_done(path: Path, settings: dict[str, int], redo: set[str]) -> tuple[dict, dict]:
    """The shared arms and budget rows already in ``path``, when it has the same settings
    (less the arms in ``redo``). A row from before rows carried their commit gets the file's,
    marked as such."""
    if not path.is_file():
        return {}, {}
    try:
        old = json.loads(path.read_text())
        if old.get("settings") != settings:
            print(f"{path} holds other settings ({old.get('settings')}): starting afresh")
            return {}, {}
        before = {"commit": f"{old['commit']} or earlier (the file's)", "date": old["date"]}
        rows = {
            (run["regime_name"], run["budget"], row["arm"]): before | row
            for run in old["runs"]
            for row in run["arms"]
            if not row["shared"] and row["arm"] not in redo
        }
        shared = {k: before | row for k, row in old["shared_arms"].items() if k not in redo}
        return shared, rows
    except (ValueError, KeyError, TypeError) as e:
        print(f"{path} cannot be resumed ({type(e).__name__}: {e}): starting afresh")
        return {}, {}


def write(bench: Bench, out: Path) -> None:
    """The whole JSON, atomically (written after every arm)."""
    from energyprune.files import atomic_write_text

    args, data = bench.args, bench.data
    walls = [r["wall_s"] for r in (*bench.shared.values(), *bench.rows.values())]
    doc = {
        **provenance(__file__, bench.argv),
        "model": bench.lm.note,
        "estimated_energy": True,
        "hardware": {
            "default": f"{HARDWARE} (serving-calibrated, graphs runtime)",
            "wanda-2:4": f"{SPARSE_HARDWARE} (2:4 sparse kernels, uncalibrated datasheet rates), "
            "its ratio over dense on that profile",
        },
        "dense_j_per_token": bench.dense_j,
        "dense_weights": f"{bench.dtype}, priced as the model stores them",
        "settings": bench.settings,
        "seq_len": args.seq_len,
        "finetune_steps": args.finetune_steps,
        "eval": {
            "text": data.eval_span,
            "windows": args.eval_windows,
            "evaluated": f"its first {args.eval_windows} windows of {args.seq_len} tokens "
            f"(tokens 0-{args.eval_windows * args.seq_len:,}), the same for every arm",
        },
        "train": f"{data.train_path}: distillation reads its windows in order from window 0 "
        f"(batch 1); calibration and probes read its first {args.calib_windows} windows",
        "guardrail": "none: every arm is judged at its cut",
        "tokens_per_s": "greedy decode at batch 1 of the PyTorch model on this CPU: latency",
        "time_plan": bench.time_plan,
        "shared_arms": bench.shared,
        "runs": runs_view(bench),
        "wall_s_total": sum(walls),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, json.dumps(doc, indent=2) + "\n")


def measure_speed(bench: Bench) -> tuple[float, float]:
    """Seconds per evaluation window (no gradient) and per distillation step (student
    forward and backward, the teacher's forward, AdamW), timed on this CPU now."""
    from energyprune.pipeline.lm_prune import lm_run_config
    from energyprune.pipeline.text import next_token_loss, perplexity

    model, data = bench.lm.model, bench.data
    perplexity(model, data.eval[:1])  # warm-up
    start = time.perf_counter()
    perplexity(model, data.eval[1:3])
    forward = (time.perf_counter() - start) / 2
    student = copy.deepcopy(model).train()
    optimiser = torch.optim.AdamW(student.parameters(), lr=5e-5)
    train = lm_run_config(bench.config("depth", BUDGETS[0])).train
    times = []
    for i in range(3):
        start = time.perf_counter()
        loss = next_token_loss(student, data.train[i : i + 1], model, train)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        times.append(time.perf_counter() - start)
    return forward, statistics.median(times[1:])


def _forwards(arm: str, budget: float, layers: int, args: argparse.Namespace) -> int:
    """Evaluation-sized forward passes one arm's run makes besides distillation (rough)."""
    from energyprune.pipeline.lm_prune import LMPruneConfig

    probe = LMPruneConfig().probe_windows
    evals, calib = args.eval_windows, args.calib_windows
    common = 5 * evals + 3 * calib  # dense (twice), cut, guardrail, final; calibration scores
    drop = math.ceil(layers * (1 - budget))
    # re-measured layer removal: round r tries drop + 5 - r layers on a model r + 1 layers
    # shorter (the head and embeddings, about a fifth of a forward, stay)
    rounds = [(drop + 5 - r) * (0.2 + 0.8 * (layers - r - 1) / layers) for r in range(drop)]
    greedy = round(sum(rounds) * probe)
    extra = {
        "wanda-2:4": calib,
        "energy": greedy + 5 * calib,
        "energy+bits": greedy + 2 * layers * probe + 8 * calib,
    }
    return common + extra.get(arm, 0)


def time_plan(bench: Bench, forward_s: float, step_s: float) -> dict[str, Any]:
    """What runs, and how long it should take on this CPU (from the timings just measured)."""
    from energyprune.pipeline.lm_prune import LMPruneConfig

    args = bench.args
    layers = bench.lm.model.config.num_hidden_layers
    arms, batches = args.arms.split(","), args.regimes.split(",")
    once = [(a, BUDGETS[0]) for a in SHARED_ARMS if a in arms and a != "dense"]
    per = [a for a in BUDGET_ARMS if a in arms]
    first = once + [(a, BUDGETS[0]) for a in per for _ in batches]
    second = [(a, BUDGETS[1]) for a in per for _ in batches]
    # the probes (once per process) and the dense arm's evaluation and decode speed
    base = 3 * layers * LMPruneConfig().probe_windows if {*per} - {"depth", "torch-pruning"} else 0
    base += args.eval_windows if "dense" in arms else 0

    def minutes(calls: list[tuple[str, float]]) -> float:
        windows = base + sum(_forwards(a, b, layers, args) for a, b in calls)
        overhead = 20 * len(calls)  # pricing, decode speed, copies (rough)
        return (len(calls) * args.finetune_steps * step_s + windows * forward_s + overhead) / 60

    return {
        "measured_here": {"s_per_eval_window": forward_s, "s_per_distillation_step": step_s},
        "once": "dense, int8, int4 and wanda-2:4 do not depend on the regime or the budget: "
        "each is cut and recovered once and priced in each regime",
        "per_regime_and_budget": per,
        "regimes": [regime_name(b) for b in batches],
        "recovered_runs": {"at least": len(first), "at most": len(first) + len(second)},
        "distillation_steps": {
            "at least": len(first) * args.finetune_steps,
            "at most": (len(first) + len(second)) * args.finetune_steps,
        },
        "estimated_minutes": {"at least": minutes(first), "at most": minutes(first + second)},
        "cut": f"budget {BUDGETS[1]} runs only for the arms that met {BUDGETS[0]} in that "
        "regime (the rest are listed under each run's 'cut'); the energy arms' probes are "
        "measured once per process and shared by width, energy and energy+bits",
    }


def setup(args: argparse.Namespace, argv: list[str] | None) -> Bench:
    """The model, its windows and the dense J/token in every regime, on both profiles."""
    from energyprune.energy.lm.per_token import profile_lm
    from energyprune.energy.lm.regimes import Decode
    from energyprune.models.lms import load_builtin_lm
    from energyprune.pipeline.text import load_text

    torch.manual_seed(0)
    lm = load_builtin_lm("smollm2-135m")
    spec = f"text:{SHARED / 'wiki.valid.tokens'},{SHARED / 'wiki.test.raw'}"
    data = load_text(spec, lm.tokenizer, args.seq_len)
    dense_j = {
        regime_name(b): {
            hw: profile_lm(lm.model, Decode(int(b), CONTEXT), hw).energy_j
            for hw in (HARDWARE, SPARSE_HARDWARE)
        }
        for b in BATCHES
    }
    return Bench(lm, data, args, argv, dense_j)


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seq-len", type=int, default=256, help="tokens per window")
    parser.add_argument("--finetune-steps", type=int, default=100, help="distillation steps")
    parser.add_argument("--eval-windows", type=int, default=40)
    parser.add_argument("--calib-windows", type=int, default=16)
    parser.add_argument("--regimes", default=",".join(BATCHES), help="decode batch sizes")
    parser.add_argument("--arms", default=",".join(ARMS))
    parser.add_argument("--redo", default="", help="arms to run again though already done")
    parser.add_argument("--out", default="benchmarks/results/llm_prune.json")
    parser.add_argument(
        "--threads", type=int, help="torch threads (1 when another job shares the CPU)"
    )
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    flags = (("--arms", args.arms, ARMS), ("--regimes", args.regimes, BATCHES))
    for flag, given, known in (*flags, ("--redo", args.redo, ARMS)):
        unknown = sorted(set(given.split(",")) - set(known) - {""})
        if unknown:
            parser.error(f"{flag}: unknown {', '.join(unknown)}; choose from {', '.join(known)}")
    return args


def _summary(bench: Bench) -> None:
    for run in runs_view(bench):
        print(f"{run['regime_name']}, budget {run['budget']}:")
        for row in run["arms"]:
            print(
                f"  {row['arm']:<14} {row['energy_ratio']:.3f} of dense "
                f"({'met' if row['met'] else 'missed'}), ppl {row['ppl_after_cut']:.2f} -> "
                f"{row['ppl_after_recovery']:.2f}, {row['tokens_per_s']:.1f} tok/s, "
                f"{row['bits']}, {row['wall_s']:.0f} s"
            )
        for arm, why in run["cut"].items():
            print(f"  {arm:<14} {why}")


def _budget_runs(bench: Bench, out: Path) -> None:
    """The budget arms: 0.5 in every regime first, then 0.3 for those that met 0.5 there; arm
    by arm, the energy arms first (a run cut off late still compares them in every regime)."""
    lead = ("energy+bits", "energy")  # the arms the comparison is about, then the baselines
    order = [*lead, *(a for a in BUDGET_ARMS if a not in lead)]
    arms = [a for a in order if a in bench.args.arms.split(",")]
    batches = [b for b in BATCHES if b in bench.args.regimes.split(",")]
    for budget, arm in ((budget, arm) for budget in BUDGETS for arm in arms):
        for batch in batches:  # each arm in every regime before the next arm
            name = regime_name(batch)
            first = bench.rows.get((name, BUDGETS[0], arm), {})
            if (name, budget, arm) in bench.rows or (budget != BUDGETS[0] and not first.get("met")):
                continue
            print(f"{arm}: {name}, budget {budget}", flush=True)
            bench.rows[name, budget, arm] = run_budget(bench, arm, batch, budget)
            write(bench, out)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    out = Path(args.out)
    bench = setup(args, argv)
    bench.shared, bench.rows = load_done(out, bench.settings, set(args.redo.split(",")) - {""})
    bench.time_plan = time_plan(bench, *measure_speed(bench))
    print(json.dumps(bench.time_plan, indent=2), flush=True)
    if bench.time_plan["estimated_minutes"]["at most"] > LIMIT_MINUTES:
        print(f"warning: this plan may take more than {LIMIT_MINUTES} minutes", flush=True)
    for arm in (a for a in SHARED_ARMS if a in args.arms.split(",") and a not in bench.shared):
        print(f"{arm}: once, priced in every regime", flush=True)
        bench.shared[arm] = run_shared(bench, arm)
        write(bench, out)
    _budget_runs(bench, out)
    write(bench, out)
    _summary(bench)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
