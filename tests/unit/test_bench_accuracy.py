"""The accuracy table (fpga_flow.bench_accuracy): measured rows, targets, missing rows, extra runs."""

from __future__ import annotations

import json

import pytest

from fpga_flow import bench_accuracy

pytestmark = pytest.mark.unit


def test_table_marks_targets_and_missing_rows(tmp_path):
    cards = {"w4a4": dict(epochs=20, test_accuracy=0.9902, train_seconds=282),
             "w4a4_p50u": dict(epochs=5, test_accuracy=0.9868, train_seconds=110, init="x/convnet_w4a4.pt", lr=5e-4),
             "w2a2": dict(epochs=20, test_accuracy=0.9831, train_seconds=400),
             "w2a2_kd": dict(epochs=20, test_accuracy=0.9822, train_seconds=400, teacher_accuracy=0.9914,
                             kd_temperature=2.0, kd_alpha=0.5),
             "w2a2_kd_other": dict(epochs=20, test_accuracy=0.97, train_seconds=60, weight_bits=2, act_bits=2)}
    for name, c in cards.items():
        (tmp_path / f"{name}.json").write_text(json.dumps(c))
    text = bench_accuracy.table(tmp_path)
    rows = {line.split("|")[1].strip(): line for line in text.splitlines() if line.startswith("| ")}
    assert "| 99.02% | 99.00% | yes |" in rows["w4a4"]
    assert "no (-0.04)" in rows["w4a4_p50u"] and "-0.34 pts vs W4A4" in rows["w4a4_p50u"]  # target 99.02 - 0.3
    assert "no (-0.19)" in rows["w2a2"] and "-0.09 pts vs W2A2 without KD" in rows["w2a2_kd"]
    assert "not measured" in rows["float"] and "missing" in rows["w8a8"]
    assert "| W2A2 | 20 |" in rows["w2a2_kd_other"]  # extra runs are listed, not dropped
