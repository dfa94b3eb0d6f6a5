"""Energy, in rooms that import one way (import-linter's "energy rooms" contract):

- ``tracing``: a forward pass on fake tensors, op by op, with each op's cost formula;
- ``hardware``: profiles (per-op energies, power, runtime terms) and their YAML files;
- ``pricing``: a traced pass priced on a profile (features, kernel time, the estimate, rescaling);
- ``lm`` and ``measurement``: energy per token in a serving regime, and measured energy;
- ``calibration``: profiles fitted to measurements, and how well they transfer;
- ``quantity``: the ``Estimated`` and ``Measured`` figures every room hands on.

The public names are exported by :mod:`energyprune`; this package imports nothing, so that
reading a hardware profile does not load the tracer.
"""
