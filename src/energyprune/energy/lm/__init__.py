"""Language models: serving regimes and energy per token."""
