"""Pruning: groups, importance, allocation under an energy budget, apply, plans."""
