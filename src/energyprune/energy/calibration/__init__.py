"""Calibration: measured tables, observations, the time model, the fit, its report and the profile
file it writes."""
