"""Measured energy: meters (Zeus, RAPL, Jetson rails), the measurement protocol, noise."""
