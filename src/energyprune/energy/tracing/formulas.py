"""Cost formulas per aten operator: MACs, other arithmetic, and which operands are read.

One small pure function per operator family, registered with :func:`register_formula`
(the pattern of ``torch.utils.flop_counter``). MAC counts for convolution and matrix products
equal ``torch.utils.flop_counter`` FLOPs / 2. Fused kernels that ``flop_counter`` does not know
(``_native_multi_head_attention``, ``_transformer_encoder_layer_fwd``, the CPU flash-attention
kernel) have formulas of their own, because a fused op the tracer cannot cost would otherwise
vanish from the estimate. Importing this module registers them (the tracer does).
"""

from __future__ import annotations

import math

import torch

from energyprune.energy.tracing.registry import Cost, first_tensor, numel, register_formula
from energyprune.energy.tracing.tensors import tensors_in

__all__ = ["conv_macs", "sdpa_macs"]

aten = torch.ops.aten

#: Arithmetic operations per element for fused ops (each charged at the profile's add energy).
SOFTMAX_OPS = 4  # max, subtract + exp, sum, divide
NORM_EVAL_OPS = 2  # inference batch norm folds to one multiply-add per element
NORM_TRAIN_OPS = 4  # batch statistics, then normalise + affine
LAYER_NORM_OPS = 5  # mean, variance, subtract, scale, affine


def aten_ops(*names: str) -> list[torch._ops.OpOverloadPacket]:
    """The aten packets among ``names`` that this PyTorch build has (newer ops are skipped)."""
    return [getattr(aten, n) for n in names if hasattr(aten, n)]


# --- convolution and matrix products --------------------------------------------------------


def _conv_channels(w: torch.Tensor) -> tuple[int, ...]:
    """(C_out, C_in/groups); a depthwise conv (one input channel per group) tiles over its
    channels alone, so it is judged by C_out, not by its width-1 reduction."""
    if int(w.shape[1]) == 1:
        return (int(w.shape[0]),)
    return int(w.shape[0]), int(w.shape[1])


def _widths(a: torch.Tensor, b: torch.Tensor) -> tuple[int, int]:
    """Reduction and output widths of ``a @ b``."""
    return int(a.shape[-1]), int(b.shape[-1])


def conv_macs(x: torch.Tensor, w: torch.Tensor, out: torch.Tensor, transposed: bool) -> int:
    """MACs of a (grouped, depthwise, transposed) convolution: flop_counter's conv FLOPs / 2.

    Every output element (input element, when transposed) meets ``prod(w.shape[1:])`` weights.
    """
    per_element = math.prod(w.shape[1:])
    return (x.numel() if transposed else out.numel()) * per_element


@register_formula(*aten_ops("convolution", "_convolution", "convolution_overrideable"))
def _conv(args, kwargs, out) -> Cost:
    x, w, bias = args[0], args[1], args[2]
    transposed = bool(args[6]) if len(args) > 6 else bool(kwargs.get("transposed", False))
    groups = int(args[8]) if len(args) > 8 else int(kwargs.get("groups", 1))
    y = first_tensor(out)
    adds = numel(bias) and y.numel()
    return Cost(
        "conv",
        conv_macs(x, w, y, transposed),
        adds,
        (w,),
        channels=_conv_channels(w),
        groups=groups,
    )


@register_formula(*aten_ops("cudnn_convolution", "mkldnn_convolution", "_slow_conv2d_forward"))
def _backend_conv(args, kwargs, out) -> Cost:
    x, w = args[0], args[1]
    bias = args[2] if isinstance(args[2], torch.Tensor) else None
    y = first_tensor(out)
    adds = numel(bias) and y.numel()
    return Cost("conv", conv_macs(x, w, y, False), adds, (w,), channels=_conv_channels(w))


@register_formula(*aten_ops("mm", "_int_mm"))
def _mm(args, kwargs, out) -> Cost:
    a, b = args[0], args[1]
    return Cost("matmul", a.shape[0] * a.shape[1] * b.shape[1], 0, (a, b), channels=_widths(a, b))


@register_formula(*aten_ops("addmm", "_addmm_activation"))
def _addmm(args, kwargs, out) -> Cost:
    a, b = args[1], args[2]
    m, k, n = a.shape[0], a.shape[1], b.shape[1]
    return Cost("matmul", m * k * n, m * n, (a, b), channels=(k, n))


@register_formula(*aten_ops("bmm"))
def _bmm(args, kwargs, out) -> Cost:
    a, b = args[0], args[1]
    macs = a.shape[0] * a.shape[1] * a.shape[2] * b.shape[2]
    return Cost("matmul", macs, 0, (a, b), channels=_widths(a, b))


@register_formula(*aten_ops("baddbmm"))
def _baddbmm(args, kwargs, out) -> Cost:
    a, b = args[1], args[2]
    bsz, m, k, n = a.shape[0], a.shape[1], a.shape[2], b.shape[2]
    return Cost("matmul", bsz * m * k * n, bsz * m * n, (a, b), channels=(k, n))


@register_formula(*aten_ops("mv", "addmv"))
def _mv(args, kwargs, out) -> Cost:
    offset = 1 if len(args) > 2 else 0
    a = args[offset]
    adds = a.shape[0] if offset else 0
    return Cost("matmul", a.numel(), adds, (a, args[offset + 1]), channels=(a.shape[-1],))


@register_formula(*aten_ops("linear"))
def _linear(args, kwargs, out) -> Cost:
    x, w = args[0], args[1]
    bias = args[2] if len(args) > 2 else None
    y = first_tensor(out)
    macs = x.numel() // x.shape[-1] * w.numel()
    return Cost("matmul", macs, numel(bias) and y.numel(), (w,), channels=tuple(w.shape[:2]))


@register_formula(*aten_ops("matmul"))
def _matmul(args, kwargs, out) -> Cost:
    a, b = args[0], args[1]
    y = first_tensor(out)
    return Cost("matmul", y.numel() * a.shape[-1], 0, (a, b), channels=_widths(a, b))


# --- attention --------------------------------------------------------------------------------


def sdpa_macs(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, causal: bool = False
) -> tuple[int, int]:
    """MACs of softmax(Q Kᵀ) V for (..., L, E) queries and (..., S, E/Ev) keys/values, and the
    element count of the score matrix (for the softmax's arithmetic).

    Under ``causal`` only the visible (query, key) pairs count: fused kernels skip the masked
    tiles, so a causal prefill of S tokens computes S(S+1)/2 scores per head, not S². The mask
    is aligned to the end of the keys (queries are the last L positions), as in PyTorch."""
    batch_heads = math.prod(q.shape[:-2])
    length, emb = q.shape[-2], q.shape[-1]
    source, emb_v = k.shape[-2], v.shape[-1]
    pairs = length * source
    if causal:  # query i sees keys 0 .. i + (source - length)
        pairs = sum(min(source, i + 1 + source - length) for i in range(length))
    scores = batch_heads * pairs
    return scores * emb + scores * emb_v, scores


#: Where each fused kernel takes ``is_causal`` (None: it has no such flag; efficient attention
#: forward encodes causality in ``custom_mask_type``, 1 = causal from the top left).
_CAUSAL_ARG = {
    "_scaled_dot_product_flash_attention_for_cpu": 4,
    "_scaled_dot_product_flash_attention": 4,
    "_scaled_dot_product_efficient_attention": 6,
    "_scaled_dot_product_cudnn_attention": 6,
    "_scaled_dot_product_fused_attention_overrideable": 6,
    "_flash_attention_forward": 8,
    "_efficient_attention_forward": None,
}


def _fused_attention(causal_at: int | None):
    def formula(args, kwargs, out) -> Cost:
        if causal_at is None:
            causal = kwargs.get("custom_mask_type", args[9] if len(args) > 9 else 0) in (1, 2)
        else:
            causal = kwargs.get("is_causal", args[causal_at] if len(args) > causal_at else 0)
        return sdpa_attention_cost(args[0], args[1], args[2], bool(causal))

    return formula


for _name, _at in _CAUSAL_ARG.items():
    register_formula(*aten_ops(_name))(_fused_attention(_at))


def sdpa_attention_cost(q, k, v, causal: bool, reads=None) -> Cost:
    """A fused attention kernel: softmax(Q Kᵀ) V, reading its inputs once (``reads``: every
    tensor argument when None)."""
    macs, scores = sdpa_macs(q, k, v, causal=causal)
    channels = _widths(q, v)
    return Cost("attention", macs, SOFTMAX_OPS * scores, (q, k, v), reads, channels=channels)


def _mha_macs(batch: int, length: int, source: int, embed: int) -> tuple[int, int, int]:
    """(in-projection MACs, out-projection MACs, attention MACs) of multi-head attention; the
    attention part (Q Kᵀ and the weighted sum of V) is activation × activation."""
    in_proj = batch * length * embed * embed + 2 * batch * source * embed * embed  # q; k and v
    out_proj = batch * length * embed * embed
    return in_proj, out_proj, 2 * batch * length * source * embed


@register_formula(*aten_ops("_native_multi_head_attention"))
def _native_mha(args, kwargs, out) -> Cost:
    """Fused ``nn.MultiheadAttention`` fast path (torchvision ViT in no-grad eval).

    Args: (query, key, value, embed_dim, num_head, qkv_weight, qkv_bias, proj_weight, proj_bias,
    mask, need_weights, average_attn_weights, mask_type); query (B, L, E), key (B, S, E).
    """
    q, k = args[0], args[1]
    embed, heads = int(args[3]), int(args[4])
    qkv_w, proj_w = args[5], args[7]
    batch, length, source = q.shape[0], q.shape[1], k.shape[1]
    in_proj, out_proj, attention = _mha_macs(batch, length, source, embed)
    scores = batch * heads * length * source
    adds = batch * length * 4 * embed  # qkv and output-projection biases
    ops = SOFTMAX_OPS * scores + adds
    macs = in_proj + out_proj + attention
    operands = ((qkv_w, in_proj), (proj_w, out_proj))
    return Cost("attention", macs, ops, operands, channels=(embed // heads, embed))


@register_formula(*aten_ops("_transformer_encoder_layer_fwd"))
def _encoder_layer(args, kwargs, out) -> Cost:
    """Fused ``nn.TransformerEncoderLayer`` fast path: attention + 2-layer MLP + 2 layer norms.

    Args: (src, embed_dim, num_heads, qkv_weight, qkv_bias, proj_weight, proj_bias, use_gelu,
    norm_first, eps, norm_weight_1, norm_bias_1, norm_weight_2, norm_bias_2, ffn_weight_1,
    ffn_bias_1, ffn_weight_2, ffn_bias_2, mask, mask_type); src (B, L, E).
    """
    src, embed, heads = args[0], int(args[1]), int(args[2])
    ffn_w1, ffn_w2 = args[14], args[16]
    batch, length = src.shape[0], src.shape[1]
    hidden = ffn_w1.shape[0]
    in_proj, out_proj, attention = _mha_macs(batch, length, length, embed)
    mlp = batch * length * embed * hidden  # each of the two MLP layers
    macs = in_proj + out_proj + attention + 2 * mlp
    tokens = batch * length
    ops = SOFTMAX_OPS * batch * heads * length * length + tokens * (4 * embed + hidden + embed)
    ops += (
        2 * LAYER_NORM_OPS * tokens * embed + 2 * tokens * embed + tokens * hidden
    )  # residual, act
    operands = ((args[3], in_proj), (args[5], out_proj), (ffn_w1, mlp), (ffn_w2, mlp))
    return Cost("attention", macs, ops, operands, channels=(embed // heads, embed, hidden))


@register_formula(*aten_ops("_softmax", "_log_softmax", "_safe_softmax"))
def _softmax(args, kwargs, out) -> Cost:
    return Cost("elementwise", 0, SOFTMAX_OPS * args[0].numel())


@register_formula(*aten_ops("cumsum", "cumprod", "logcumsumexp"))
def _scan(args, kwargs, out) -> Cost:
    return Cost("elementwise", 0, args[0].numel())


# --- normalisation and pooling --------------------------------------------------------------


@register_formula(*aten_ops("_native_batch_norm_legit_no_training"))
def _bn_eval(args, kwargs, out) -> Cost:
    return Cost("norm", 0, NORM_EVAL_OPS * args[0].numel())


@register_formula(
    *aten_ops(
        "native_batch_norm",
        "_native_batch_norm_legit",
        "_batch_norm_with_update",
        "cudnn_batch_norm",
        "miopen_batch_norm",
    )
)
def _bn(args, kwargs, out) -> Cost:
    training = next((a for a in args[5:6] if isinstance(a, bool)), False)
    per_element = NORM_TRAIN_OPS if training else NORM_EVAL_OPS
    return Cost("norm", 0, per_element * args[0].numel())


@register_formula(*aten_ops("native_layer_norm", "native_group_norm", "_fused_rms_norm"))
def _layer_norm(args, kwargs, out) -> Cost:
    return Cost("norm", 0, LAYER_NORM_OPS * args[0].numel())


def _window(kernel: object, dims: int) -> int:
    sizes = list(kernel) if isinstance(kernel, (list, tuple)) else [int(kernel)]
    if len(sizes) == 1:
        sizes = sizes * dims
    return math.prod(int(s) for s in sizes)


@register_formula(
    *aten_ops(
        "max_pool1d",
        "max_pool2d",
        "max_pool3d",
        "max_pool2d_with_indices",
        "max_pool3d_with_indices",
        "avg_pool1d",
        "avg_pool2d",
        "avg_pool3d",
        "mkldnn_max_pool2d",
    )
)
def _pool(args, kwargs, out) -> Cost:
    x, y = args[0], first_tensor(out)
    dims = max(1, x.dim() - 2)
    return Cost("pool", 0, y.numel() * _window(args[1], dims))


@register_formula(
    *aten_ops(
        "_adaptive_avg_pool2d",
        "_adaptive_avg_pool3d",
        "adaptive_avg_pool1d",
        "adaptive_max_pool1d",
        "adaptive_max_pool2d",
        "adaptive_max_pool3d",
    )
)
def _adaptive_pool(args, kwargs, out) -> Cost:
    return Cost("pool", 0, args[0].numel())


# --- data movement ----------------------------------------------------------------------------


@register_formula(*aten_ops("embedding", "_embedding_bag"))
def _embedding(args, kwargs, out) -> Cost:
    """Only the gathered rows of the table are read, not the whole table."""
    weight, indices, y = args[0], args[1], first_tensor(out)
    return Cost("embedding", reads=((weight, y.numel()), indices))


@register_formula(
    *aten_ops(
        "cat",
        "stack",
        "clone",
        "copy_",
        "_to_copy",
        "index_select",
        "gather",
        "index",
        "constant_pad_nd",
        "repeat",
        "flip",
        "roll",
        "slice_scatter",
        "select_scatter",
        "fill_",
        "zero_",
        "zeros",
        "ones",
        "full",
        "arange",
        "scalar_tensor",
        "zeros_like",
        "ones_like",
        "full_like",
        "new_zeros",
        "new_ones",
        "new_full",
        "_local_scalar_dense",
        "native_dropout",
        "bernoulli_",
        "randn",
        "rand",
    )
)
def _data(args, kwargs, out) -> Cost:
    """Zero-arithmetic ops whose bytes still move: concatenation, copies, padding, fills. A
    broadcast view (stride 0, e.g. ``expand``) is read once per distinct element: copying K
    expanded over a query group (``repeat_kv``) reads the cache once and writes it G times."""
    return Cost("data", reads=tuple((t, distinct_elements(t)) for t in tensors_in((args, kwargs))))


def distinct_elements(t: torch.Tensor) -> int:
    """Elements of ``t`` at distinct addresses along its dims (broadcast dims count once)."""
    return math.prod(n for n, stride in zip(t.shape, t.stride(), strict=True) if stride)


@register_formula(*aten_ops("_unsafe_view", "alias", "lift_fresh"))
def _alias(args, kwargs, out) -> Cost:
    """Views that aten does not tag as views (``_unsafe_view`` ends every bias-free
    ``nn.Linear`` on a 3-D input): the output shares the input's bytes, nothing moves."""
    return Cost("view", reads=(), writes_output=False)


@register_formula(
    *aten_ops("empty", "empty_like", "empty_strided", "new_empty", "new_empty_strided")
)
def _empty(args, kwargs, out) -> Cost:
    """Allocation only: nothing is read or written."""
    return Cost("data", reads=(), writes_output=False)
