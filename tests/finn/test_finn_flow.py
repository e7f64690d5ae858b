"""The FINN backend end to end on zoo models and small Brevitas nets: every stage ``==`` the golden, FINN's
estimates in report.json ``hw.finn``, refusals that name the layer, and a wrong rounding caught (exit 3).

Small image counts keep it fast (FINN's Python execution of hardware layers runs one frame at a time).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

pytest.importorskip("finn.transformation", reason="the finn extra is not installed (make venv-finn)")

from fpga_flow import BuildConfig, FlowError, VerificationError, api  # noqa: E402
from fpga_flow.backends.finn import report as finn_report  # noqa: E402
from fpga_flow.backends.finn import steps as finn_steps  # noqa: E402
from fpga_flow.backends.finn import ties as finn_ties  # noqa: E402

pytestmark = pytest.mark.finn

STAGES = [name for name, _ in finn_steps.STAGES]


def _zoo(name, tmp_path, n, **extra):
    cfg = BuildConfig(model=name, backend="finn", n_images=n, device="cpu", extra=extra)
    return api.build_zoo(cfg, out_dir=tmp_path, progress=False)


def _check_report(rep, tmp_path, name, n):
    assert rep["backend"] == "finn" and rep["n_images"] == n and rep["exact_matches"] == n
    finn_rows = [c for c in rep["comparisons"] if c["name"].startswith("FINN ")]
    assert [c["name"].split(" ")[1] for c in finn_rows] == STAGES
    assert all(c["exact_matches"] == n and c["max_abs_diff"] == 0 for c in finn_rows)
    assert rep["accuracy"]["finn"] == rep["accuracy"]["quantized"]
    on_disk = json.loads((tmp_path / f"{name}_finn" / "report.json").read_text())
    assert on_disk["hw"]["finn"] == json.loads(json.dumps(rep["hw"]["finn"], default=float))
    f = rep["hw"]["finn"]
    e, o = f["estimate"], f["options"]
    assert e["max_cycles"] == max(r["cycles"] for r in e["layers"]) > 0
    assert e["throughput_fps"] == pytest.approx(1e9 / o["clock_ns"] / e["max_cycles"])
    assert e["latency_us"] == pytest.approx(e["critical_path_cycles"] * o["clock_ns"] / 1000)
    assert e["total"]["LUT"] == sum(r["LUT"] for r in e["layers"]) > 0
    assert all(r["impl"] in ("hls", "rtl") for r in e["layers"])
    assert f["not_run"] and all(x["needs"] for x in f["not_run"])
    md = (tmp_path / f"{name}_finn" / "report.md").read_text()
    assert "## Not run" in md and "FINN's estimates" in md and e["bottleneck"] in md
    vr = rep["value_ranges"]  # the common per-layer value ranges reach the FINN report too (#14)
    assert vr["images"] == n and vr["rows"] and "## Value ranges per layer" in md
    used = (rep.get("source") or {}).get("dataset")  # a dataset named, or the API's own images said so
    assert (f"{used['name']} test images used here" if used else "inputs given to the API or seeded random ones") in md
    assert finn_report.summary(rep).startswith(f"{name}: {n}/{n} images bit-exact")
    host = f["host_ops"]  # the input quantizer before the dataflow, the dequantization after it, named in report.md
    assert "Quant" in host["before_dataflow"][-1] and "dequantization" in host["after_dataflow"][0]
    assert "## Runs on the host" in md and f"`{host['before_dataflow'][-1]}`" in md
    return f


def test_mlp_tiny_every_stage_exact_and_estimates(tmp_path):
    rep = _zoo("mlp_tiny", tmp_path, 40)
    f = _check_report(rep, tmp_path, "mlp_tiny", 40)
    assert f["input"]["datatype"] == "UINT8" and rep["output"]["kind"] == "logits"
    assert [r["op"] for r in f["estimate"]["layers"]] == ["MVAU_hls", "MVAU_hls", "MVAU_rtl"]
    assert (tmp_path / "mlp_tiny_finn" / "finn" / "09_minimize_bit_width.onnx").is_file()


def test_convnet_logits_exact_and_folding_follows_the_target(tmp_path):
    """The convnet (convs, pooling, log_softmax): its logits verified; a higher target folds less."""
    slow = _check_report(_zoo("convnet", tmp_path / "a", 12, target_fps=1000), tmp_path / "a", "convnet", 12)
    fast = _check_report(_zoo("convnet", tmp_path / "b", 12, target_fps=30000), tmp_path / "b", "convnet", 12)
    ops = [r["op"] for r in fast["estimate"]["layers"]]
    assert {"ConvolutionInputGenerator_rtl", "Pool_hls", "MVAU_hls"} <= set(ops)
    assert fast["estimate"]["max_cycles"] < slow["estimate"]["max_cycles"]
    assert fast["estimate"]["max_cycles"] <= 1e9 / 10 / 30000 < slow["estimate"]["max_cycles"]
    assert fast["estimate"]["total"]["LUT"] > slow["estimate"]["total"]["LUT"]
    assert fast["options"]["target_fps"] == 30000
    assert "LogSoftmax" in fast["host_ops"]["after_dataflow"][-1]


def test_without_the_tie_fix_verification_fails_and_names_the_stage(tmp_path, monkeypatch):
    """FINN's own rounding (ties up) on mlp_tiny: caught at the first stage, exit 3, failed build kept."""
    monkeypatch.setattr(finn_ties.TiesToEvenFloat, "apply", lambda self, m: (m, False))
    monkeypatch.setattr(finn_ties.TiesToEvenInteger, "apply", lambda self, m: (m, False))
    with pytest.raises(VerificationError, match="FINN qonnx_to_finn .*differ") as e:
        _zoo("mlp_tiny", tmp_path, 20)
    assert e.value.exit_code == 3
    assert not (tmp_path / "mlp_tiny_finn").exists() and (tmp_path / "mlp_tiny_finn.failed" / "report.json").is_file()


def _calibrated(net: nn.Module, shape) -> nn.Module:
    torch.manual_seed(0)
    net.train()
    with torch.no_grad():
        net(torch.rand(32, *shape))
    return net.eval()


def _dense(act_quant, act_bits=4, bn=False) -> nn.Module:
    from brevitas import nn as qnn
    from brevitas.quant import Int8WeightPerTensorFixedPoint, Int32Bias, Uint8ActPerTensorFixedPoint
    torch.manual_seed(0)
    wq = dict(weight_quant=Int8WeightPerTensorFixedPoint, weight_bit_width=4, bias_quant=Int32Bias)
    layers = [qnn.QuantIdentity(act_quant=Uint8ActPerTensorFixedPoint, bit_width=8, return_quant_tensor=True),
              qnn.QuantLinear(16, 8, **wq)]
    layers += [nn.BatchNorm1d(8)] if bn else []
    layers += [qnn.QuantReLU(act_quant=act_quant, bit_width=act_bits, return_quant_tensor=True),
               qnn.QuantLinear(8, 4, **wq)]
    return _calibrated(nn.Sequential(*layers), (16,))


def test_refusals_name_the_layer(tmp_path):
    from brevitas.quant import Uint8ActPerTensorFixedPoint
    cases = [(_dense(Uint8ActPerTensorFixedPoint, act_bits=10), r"Quant.*10-bit activation quantizer.*Requant")]
    for net, match in cases:
        with pytest.raises(FlowError, match=match) as e:
            api.build(net, (16,), name="refused", out_dir=tmp_path,
                      config=BuildConfig(model="refused", backend="finn", n_images=4, device="cpu"), progress=False)
        assert e.value.exit_code == 1 and "node '" in str(e.value)
    assert not (tmp_path / "refused_finn").exists()


def test_a_floor_rounding_quantizer_is_refused():
    from tests.finn.qonnx_graphs import dense_tie_graph
    with pytest.raises(FlowError, match=r"node 'Quant_\d+' \(Quant\): rounding mode FLOOR"):
        finn_steps.check_supported(dense_tie_graph(rounding="FLOOR"))


def test_any_brevitas_model_through_the_api(tmp_path):
    """Any supported Brevitas module, on the images passed in (random here): exact at every stage."""
    from brevitas.quant import Uint8ActPerTensorFixedPoint
    net = _dense(Uint8ActPerTensorFixedPoint)
    x = np.random.default_rng(0).random((24, 16), dtype=np.float32)
    rep = api.build(net, (16,), name="dense", out_dir=tmp_path, images=x,
                    config=BuildConfig(model="dense", backend="finn", n_images=24, device="cpu"), progress=False)
    _check_report(rep, tmp_path, "dense", 24)


def test_float_scaled_models_take_the_exact_lowering(tmp_path):
    """BatchNorm and float scales (refused before #14): FINN receives the exact lowering's thresholds and every
    stage equals the integer-accumulator reference; the final fixed-point bias stays on the host."""
    from brevitas.quant import Uint8ActPerTensorFixedPoint, Uint8ActPerTensorFloat
    for i, net in enumerate([_dense(Uint8ActPerTensorFixedPoint, bn=True), _dense(Uint8ActPerTensorFloat)]):
        x = np.random.default_rng(i).random((16, 16), dtype=np.float32)
        rep = api.build(net, (16,), name=f"fs{i}", out_dir=tmp_path, images=x, progress=False,
                        config=BuildConfig(model=f"fs{i}", backend="finn", n_images=16, device="cpu"))
        f = rep["hw"]["finn"]
        assert rep["exact_matches"] == 16 and f["golden"] == "integer-accumulator reference"
        rows = [c for c in rep["comparisons"] if c["name"].startswith("FINN ")]
        assert [c["name"].split(" ")[1] for c in rows] == STAGES
        assert all(c["exact_matches"] == 16 and "integer-accumulator reference" in c["name"] for c in rows)
        assert rep["output"]["kind"] == "accumulator" and any("Add" in h for h in f["host_nodes"])
