"""Which tensors of one op are the same memory: the tracer reads a tensor once however many
arguments name it, and knows a parameter by its storage through any view."""

from __future__ import annotations

import torch

__all__ = ["read_once", "storage_key"]


def storage_key(t: torch.Tensor) -> int | None:
    """Identity of a tensor's storage, shared by its views (real, meta or fake)."""
    try:
        return t.untyped_storage()._cdata
    except (RuntimeError, NotImplementedError, AttributeError):
        return None


def read_once(reads) -> list[tuple[torch.Tensor, int]]:
    """``(tensor, elements read)`` for each of ``reads`` (tensors, or such pairs), repeats of
    one tensor dropped: self-attention passes one tensor as query, key and value, and
    ``x @ x.T`` reads ``x`` once. Two reads are the same when they share storage and offset
    (views of one tensor at another shape or stride included); the larger count is kept."""
    kept: dict[tuple, int] = {}
    out: list[tuple[torch.Tensor, int]] = []
    for r in reads:
        t, n = r if isinstance(r, tuple) else (r, r.numel())
        storage = storage_key(t)
        key = (storage, t.storage_offset()) if storage is not None and t.numel() else None
        if key in kept:
            i = kept[key]
            if n > out[i][1]:
                out[i] = (t, int(n))
            continue
        if key is not None:
            kept[key] = len(out)
        out.append((t, int(n)))
    return out
