"""How a serving stack runs a decoder's forward pass: CUDA graphs and fused kernels.

vLLM, TensorRT-LLM and SGLang replay decode steps as CUDA graphs (no per-op launch from the
host) and run a handful of fused kernels per decoder layer, not one kernel per aten op. The
fusion map, per decoder layer:

1. residual add + RMSNorm (``input_layernorm``, with the previous layer's residual add);
2. QKV GEMM (``q_proj``, ``k_proj``, ``v_proj`` as one merged weight);
3. QK-norm + RoPE + KV-cache write (the attention module's own element-wise ops);
4. attention (one flash / paged attention kernel);
5. O GEMM;
6. residual add + RMSNorm (``post_attention_layernorm``);
7. gate/up GEMM (``gate_proj``, ``up_proj`` merged);
8. SiLU x mul (the activation and the MLP's own element-wise ops);
9. down GEMM.

Around the layers: the embedding, the final add + norm, the LM head; any other module (a MoE
router, an expert stack) is one kernel per module. Free, because the serving stack never runs
them as kernels of their own: casts and copies (inside the fused kernel), ops on integer or
boolean tensors only (positions and masks, prepared on the host once per step) and the rotary
embedding's cos/sin (a table lookup inside the RoPE kernel).

A fused kernel takes max(Σ compute seconds, Σ memory seconds, ``runtime.graph_kernel_s``) at the
profile's rates: its ops overlap, and no kernel is shorter than the floor. Its dynamic energy
is its ops' (intermediates are priced at the level the tracer saw, an upper bound). The
kernel's time is shared among its ops by their roofline time, so per-module rows still sum to
the pass.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

from energyprune.energy.hardware.profile import HardwareProfile
from energyprune.energy.pricing.estimates import OpEnergy
from energyprune.energy.pricing.features import op_features
from energyprune.energy.pricing.roofline import op_rates
from energyprune.energy.tracing.tracer import OpRecord, Trace

__all__ = ["EAGER", "GRAPHS", "RUNTIMES", "Kernel", "graph_ops", "kernels"]

EAGER = "eager"
GRAPHS = "graphs"
#: what each runtime name prices, as the summary and the JSON say it
RUNTIMES = {
    EAGER: "eager (one kernel launch per aten op)",
    GRAPHS: "graphs (CUDA graphs, 9 fused kernels per decoder layer, no per-op launch)",
}
_FREE_OPS = frozenset({"aten._to_copy.default", "aten.clone.default", "aten.copy_.default"})
_INTEGER = frozenset({"int64", "int32", "int16", "int8", "bool"})
_MERGED = {"q_proj": "qkv", "k_proj": "qkv", "v_proj": "qkv", "gate_proj": "gate_up"}
_MERGED["up_proj"] = "gate_up"
_FFN = ("MLP", "Experts")  # feed-forward modules whose own ops and activation fuse
_ATTENTION_CORE = frozenset({"attention", "matmul"})  # kinds; softmax by its op name
_SOFTMAX = ("aten._softmax", "aten.softmax")


@dataclass(frozen=True)
class Kernel:
    """One fused kernel: the records it runs and its compute and memory seconds at peak."""

    name: str
    members: tuple[int, ...]
    roofs: tuple[float, ...]  # each member's own roofline seconds: how the time is shared
    compute_s: float
    memory_s: float

    def seconds(self, floor: float) -> float:
        """Its duration on ``floor``: the ops overlap, and nothing runs shorter."""
        return max(self.compute_s, self.memory_s, floor)


def _free(record: OpRecord, types: dict[str, str]) -> bool:
    if not record.operands or record.kind == "view":
        return True
    if record.op in _FREE_OPS:  # a cast of a weight still reads it, inside its kernel
        return all(o.role not in ("param", "kv") for o in record.operands)
    if types.get(record.module, "").endswith("RotaryEmbedding"):
        return True
    return all(o.dtype in _INTEGER for o in record.operands)


def _parent(module: str) -> str:
    return module.rpartition(".")[0]


def _key(record: OpRecord, types: dict[str, str]) -> str | None:
    """The kernel a record runs in; None: it joins the next kernel (a container's own op,
    such as a decoder layer's residual add, which the next norm kernel fuses)."""
    module, kind = record.module, types.get(record.module, "")
    leaf = module.rpartition(".")[2]
    if kind.endswith(("DecoderLayer", "Model")) or not module:
        return None
    if kind == "Linear" and leaf in _MERGED:
        return f"{_parent(module)}.{_MERGED[leaf]}"
    if kind.endswith("Attention"):
        core = record.kind in _ATTENTION_CORE or record.op.startswith(_SOFTMAX)
        return f"{module}.{'attn' if core else 'rope'}"
    if types.get(_parent(module), "").endswith("Attention") and kind.endswith("Norm"):
        return f"{_parent(module)}.rope"  # q_norm / k_norm: fused with RoPE
    if kind.endswith(_FFN):
        return f"{module}.act"  # the MLP's own gate x up product
    if types.get(_parent(module), "").endswith(_FFN) and kind != "Linear":
        return f"{_parent(module)}.act"  # its activation function
    return module


def _rates(record: OpRecord, hw: HardwareProfile, dtype: str | None) -> tuple[float, float]:
    """(compute, memory) seconds at peak; none under a profile without rates."""
    return op_rates(op_features(record, hw, dtype).amounts, hw) if hw.timed else (0.0, 0.0)


def kernels(tr: Trace, hw: HardwareProfile, dtype: str | None) -> list[Kernel]:
    """The fused kernels a serving stack runs for one traced pass, in order."""
    types = {name: info.type for name, info in tr.modules.items()}
    groups: dict[str, list[int]] = {}
    pending: list[int] = []
    for i, record in enumerate(tr.records):
        if _free(record, types):
            continue
        key = _key(record, types)
        if key is None:
            pending.append(i)
            continue
        groups.setdefault(key, []).extend([*pending, i])
        pending = []
    if pending:
        groups.setdefault("(root)", []).extend(pending)
    out = []
    for name, members in groups.items():
        rates = [_rates(tr.records[i], hw, dtype) for i in members]
        out.append(
            Kernel(
                name,
                tuple(members),
                tuple(max(r) for r in rates),
                sum(r[0] for r in rates),
                sum(r[1] for r in rates),
            )
        )
    return out


def graph_ops(
    ops: Sequence[OpEnergy], tr: Trace, hw: HardwareProfile, dtype: str | None
) -> tuple[OpEnergy, ...]:
    """``ops`` (one pass priced eagerly) as the fused kernels run them: free ops dropped, each
    kernel's duration shared among its ops by their roofline time, no launches."""
    floor, power = hw.runtime.graph_kernel_s, hw.static_w + hw.active_w
    out: list[OpEnergy] = []
    for kernel in kernels(tr, hw, dtype):
        total, seconds = sum(kernel.roofs), kernel.seconds(floor) if hw.timed else 0.0
        for i, roof in zip(kernel.members, kernel.roofs, strict=True):
            share = roof / total if total else 1 / len(kernel.members)
            op = ops[i]
            out.append(
                dataclasses.replace(
                    op, overhead_j=0.0, seconds=seconds * share, static_j=power * seconds * share
                )
            )
    return tuple(out)
