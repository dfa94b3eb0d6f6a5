"""Model factories used by CLI tests (``module:factory`` specs)."""

from torch import nn


def five_class_cnn() -> nn.Module:
    """A digits-shaped model with the wrong number of outputs."""
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.Flatten(), nn.Linear(4 * 6 * 6, 5))
