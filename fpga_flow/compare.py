"""Exact comparison of integer-grid outputs, and where a mismatch first appears."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Comparison:
    name: str  # e.g. "HLS csim vs QONNX golden"
    n: int
    exact_matches: int  # images whose every output is equal
    mismatching_images: list[int] = field(default_factory=list)
    max_abs_diff: float = 0.0
    argmax_agreement: float = 1.0

    @property
    def ok(self) -> bool:
        return self.exact_matches == self.n

    def line(self) -> str:
        s = f"{self.name}: {self.exact_matches}/{self.n} images bit-exact"
        if not self.ok:
            s += (f", {self.n - self.exact_matches} differ (first: image {self.mismatching_images[0]}), "
                  f"max |diff| {self.max_abs_diff:g}, argmax agreement {self.argmax_agreement:.2%}")
        return s


def exact(name: str, got: np.ndarray, want: np.ndarray) -> Comparison:
    """Compare with ``==`` (as float64: every value here lies on a power-of-two grid)."""
    got = np.asarray(got, dtype=np.float64).reshape(len(want), -1)
    want = np.asarray(want, dtype=np.float64).reshape(len(want), -1)
    same = (got == want).all(axis=1)
    bad = np.flatnonzero(~same)
    return Comparison(name, len(want), int(same.sum()), [int(i) for i in bad[:1000]],
                      float(np.abs(got - want).max(initial=0.0)),
                      float((got.argmax(1) == want.argmax(1)).mean()) if len(want) else 1.0)


def first_divergence(hls_trace: list[tuple[str, str, np.ndarray]], golden: dict[str, np.ndarray],
                     quantized_by: dict[str, str] | None = None) -> dict | None:
    """The first hls4ml layer whose traced output differs from the QONNX tensor it implements.

    hls4ml folds a Quant node into the layer before it (a ReLU becomes a quantizing
    activation), so a layer named after ``t`` may hold the value of ``quantized_by[t]``,
    the output of the Quant that consumes ``t``: either one matching is agreement.
    """
    quantized_by = quantized_by or {}
    for layer, tensor, values in hls_trace:
        candidates = [t for t in (tensor, quantized_by.get(tensor)) if t in golden]
        got = np.asarray(values, dtype=np.float64).ravel()
        candidates = [t for t in candidates if np.asarray(golden[t]).size == got.size]
        if not candidates:
            continue
        if any(np.array_equal(got, np.asarray(golden[t], dtype=np.float64).ravel()) for t in candidates):
            continue
        tensor = candidates[-1]
        want = np.asarray(golden[tensor], dtype=np.float64).ravel()
        diff = np.flatnonzero(got != want)
        if diff.size:
            i = int(diff[0])
            return {"layer": layer, "tensor": tensor, "n_differ": int(diff.size), "size": int(want.size),
                    "first_index": i, "hls": float(got[i]), "golden": float(want[i])}
    return None
