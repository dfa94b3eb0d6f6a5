"""Energy: trace a forward pass, price it under a hardware profile (estimates), measure it.

The public names are exported by :mod:`energyprune`; this package imports nothing, so that
reading a hardware profile does not load the tracer.
"""
