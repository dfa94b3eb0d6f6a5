"""Hardware profiles: per-op energies, power, runtime terms, and the YAML files that ship them."""
