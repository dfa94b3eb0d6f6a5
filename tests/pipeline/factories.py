"""Model factories used by CLI tests (``module:factory`` specs)."""

from torch import nn


def five_class_cnn() -> nn.Module:
    """A digits-shaped model with the wrong number of outputs."""
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.Flatten(), nn.Linear(4 * 6 * 6, 5))


def digits_loaders():
    """(train, val) DataLoaders, as a user's ``--data module:factory`` would return."""
    from energyprune.pipeline.data import load_data

    data = load_data("digits", batch_size=32)
    return data.train, data.val
