"""Tracing a model: the fake-tensor tracer, the op registry, cost formulas by op family, attention
on the meta device, tensor helpers."""
