"""Another dataset end to end through the CLI (#14), on a synthetic folder in Fashion-MNIST's file layout (the
real files are not on this machine; docs/byom.md says what to run with them): the seed ConvNet trained on it
builds `==`, and its report names the dataset, its checksum and the checkpoint; the shipped MNIST checkpoint
verified on it warns; a non-ConvNet model's report speaks of its own layers, not the ConvNet's or MNIST."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest

from fpga_flow import cli, data
from tests.conftest import needs_gxx

pytestmark = [pytest.mark.csim, needs_gxx]


def _idx(path: Path, magic: int, arr: np.ndarray) -> None:
    path.write_bytes(magic.to_bytes(4, "big") + b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
                     + arr.astype(np.uint8).tobytes())


def fashion_folder(d: Path, n_train: int = 300, n_test: int = 100, seed: int = 7) -> Path:
    """Fashion-MNIST's four file names and IDX layout, random images of 10 classes (each class brighter in its
    own row band, so a short training run has something to learn)."""
    rng = np.random.default_rng(seed)
    d.mkdir()
    for split, n in (("train", n_train), ("t10k", n_test)):
        y = rng.integers(0, 10, n)
        x = rng.integers(0, 96, (n, 28, 28))
        for i, c in enumerate(y):
            x[i, 2 + 2 * c:4 + 2 * c] += 150
        _idx(d / f"{split}-images-idx3-ubyte", 0x803, x)
        _idx(d / f"{split}-labels-idx1-ubyte", 0x801, y)
    return d


@pytest.fixture(scope="module")
def fashion(tmp_path_factory) -> Path:
    return fashion_folder(tmp_path_factory.mktemp("data") / "fashion")


def test_convnet_trained_on_fashion_builds_exact_and_names_its_data(fashion, tmp_path, capsys):
    ckpt = tmp_path / "convnet_fashion.pt"
    assert cli.main(["train", "--model", "convnet", "--dataset", "fashion-mnist", "--data", str(fashion),
                     "--epochs", "1", "--batch-size", "64", "--augment", "none", "--out", str(ckpt), "--quiet"]) == 0
    assert str(ckpt) in capsys.readouterr().err  # the path written is printed
    card = json.loads(ckpt.with_suffix(".json").read_text())
    train_split, test_split = data.load("train", fashion, "fashion-mnist"), data.load("test", fashion, "fashion-mnist")
    assert card["dataset"] == "fashion-mnist" and card["data_sha256"] == train_split.sha256

    assert cli.main(["hls", "--model", "convnet", "--checkpoint", str(ckpt), "--dataset", "fashion-mnist",
                     "--data", str(fashion), "-n", "100", "--stock-check", "0", "--out", str(tmp_path / "out"),
                     "-q"]) == 0
    assert "warning" not in capsys.readouterr().err  # the card and the data agree
    build = tmp_path / "out" / "convnet"
    rep = json.loads((build / "report.json").read_text())
    assert rep["exact_matches"] == rep["n_images"] == 100 and rep["mismatches"] == 0
    assert rep["source"]["dataset"] == {"name": "fashion-mnist", "split": "test", "sha256": test_split.sha256,
                                        "images": 100}
    assert rep["checkpoint"].endswith("convnet_fashion.pt") and rep["checkpoint_card"]["dataset"] == "fashion-mnist"
    md = (build / "report.md").read_text()
    assert f"fashion-mnist test images used here, sha256 {test_split.sha256[:12]}" in md
    assert "convnet_fashion.pt" in md and "**warning**" not in md
    rows = rep["value_ranges"]["rows"]
    graph = onnx.load(str(build / "20_channels_last.onnx")).graph
    layers = [n.name for n in graph.node if n.op_type in ("Conv", "MatMul")]
    assert len(layers) == 4 and rep["value_ranges"]["images"] == 100
    assert [r["layer"] for r in rows if r["what"] == "accumulator"] == layers  # every layer of the model
    assert (build / "report-ranges.png").is_file() and "![value ranges](report-ranges.png)" in md


@pytest.fixture(scope="module")
def mlp_tiny_on_fashion(fashion, tmp_path_factory) -> tuple[dict, str, Path]:
    """mlp_tiny (a non-ConvNet model) from its shipped MNIST checkpoint, verified on the Fashion-MNIST folder."""
    out = tmp_path_factory.mktemp("tiny")
    assert cli.main(["hls", "--model", "mlp_tiny", "--dataset", "fashion-mnist", "--data", str(fashion), "-n", "50",
                     "--stock-check", "0", "--out", str(out), "-q"]) == 0
    build = out / "mlp_tiny"
    return json.loads((build / "report.json").read_text()), (build / "report.md").read_text(), build


def test_mnist_checkpoint_on_fashion_warns_and_a_non_convnet_report_names_its_own_layers(mlp_tiny_on_fashion):
    rep, md, _ = mlp_tiny_on_fashion
    warning = "the checkpoint was trained on mnist (its card) but this build verifies on fashion-mnist"
    assert rep["mismatches"] == 0 and warning in " ".join(rep["source"]["warnings"]) and warning in md
    # the model's own layers (read from its graph), and nothing of the ConvNet's or of MNIST's
    for layer in ("MatMul_0", "MatMul_1", "MatMul_2"):
        assert f"| {layer} | accumulator |" in md
    assert "Conv" not in md and "MNIST" not in md


def test_the_hls4ml_output_note_is_the_models_own(mlp_tiny_on_fashion):
    rep, md, _ = mlp_tiny_on_fashion
    assert "fc2" not in md and "seed model" not in md and "(MatMul_2's accumulator)" in md


def test_a_vendor_result_keeps_the_value_ranges_in_report_md(mlp_tiny_on_fashion, tmp_path):
    """`make synth` re-renders report.md from report.json (``add_vendor``): the value-range section that the
    build appended after its first render must survive it."""
    import shutil
    from fpga_flow.backends.hls4ml import report as hls_report
    _, md, build = mlp_tiny_on_fashion
    copy = tmp_path / "mlp_tiny"
    shutil.copytree(build, copy)
    section = md[md.index("## Value ranges"):]
    res = {"resources": {"lut": 1, "ff": 2, "dsp": 0, "bram18k": 0}, "utilisation_pct": {}}
    vendor = {"tool": "stand-in tool", "part": "xc7z020clg400-1", "clock_ns": 10.0, "logs": [],
              "csynth": {"latency_cycles": {"min": 1, "max": 2}, "latency_ns": {"min": 10, "max": 20},
                         "interval_cycles": {"min": 1, "max": 1}, "estimated_clock_ns": 9.0, **res}}
    hls_report.add_vendor(copy, vendor)
    after = (copy / "report.md").read_text()
    assert "vendor synthesis (stand-in tool" in after  # report.md was rendered again
    assert section.strip() in after
