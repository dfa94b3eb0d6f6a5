"""Pricing a traced model on a profile: features, kernel time (roofline), the estimate, rescaling a
cut."""
