"""Metrics agree with scikit-learn's implementations."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import accuracy_score, precision_recall_fscore_support
from sklearn.metrics import confusion_matrix as sk_confusion

from energyprune.pipeline.evaluate import classification_metrics, confusion_matrix


@settings(max_examples=60, deadline=None)
@given(
    classes=st.integers(2, 6),
    data=st.data(),
)
def test_metrics_match_scikit_learn(classes, data):
    n = data.draw(st.integers(1, 40))
    true = data.draw(st.lists(st.integers(0, classes - 1), min_size=n, max_size=n))
    pred = data.draw(st.lists(st.integers(0, classes - 1), min_size=n, max_size=n))
    got = classification_metrics(torch.tensor(pred), torch.tensor(true), classes)
    p, r, f, _ = precision_recall_fscore_support(true, pred, average="macro", zero_division=0)
    assert got["top1"] == pytest.approx(accuracy_score(true, pred))
    assert got["precision"] == pytest.approx(p)
    assert got["recall"] == pytest.approx(r)
    assert got["f1"] == pytest.approx(f)
    labels = list(range(classes))
    assert np.array_equal(
        np.array(got["confusion_matrix"]), sk_confusion(true, pred, labels=labels)
    )


def test_confusion_matrix_orientation():
    cm = confusion_matrix(torch.tensor([1, 1, 0]), torch.tensor([0, 1, 0]), 2)
    assert cm.tolist() == [[1, 1], [0, 1]]  # row = true class, column = predicted
