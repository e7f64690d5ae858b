"""Bad input through the public API: clear errors, nothing half-written (no compiler needed)."""

import pytest
import torch
from torch import nn

from fpga_flow import BuildConfig, FlowError, api, backends, runner

pytestmark = pytest.mark.unit


def test_unwritable_output_directory(calibrated_convnet, tiny_images, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    x, _ = tiny_images
    with pytest.raises(FlowError, match="cannot write the build directory"):
        api.build(calibrated_convnet, (1, 28, 28), name="m", out_dir=blocker / "sub", config=BuildConfig(model="m"),
                  images=x, progress=False)


def test_unsupported_user_layer_is_refused_and_leaves_nothing(tmp_path):
    from brevitas import nn as qnn
    from brevitas.quant import Int8WeightPerTensorFixedPoint, Uint8ActPerTensorFixedPoint
    net = nn.Sequential(qnn.QuantIdentity(act_quant=Uint8ActPerTensorFixedPoint, return_quant_tensor=True),
                        qnn.QuantLinear(8, 4, weight_quant=Int8WeightPerTensorFixedPoint, bias=False),
                        nn.Sigmoid())
    net.train()
    with torch.no_grad():
        net(torch.rand(4, 8))
    with pytest.raises(FlowError) as e:
        api.build(net.eval(), (8,), name="sig", out_dir=tmp_path, config=BuildConfig(model="sig", n_images=8),
                  progress=False)
    assert "Sigmoid" in str(e.value) and "Supported:" in str(e.value) and "Conv" in str(e.value)
    assert [p.name for p in tmp_path.iterdir()] == [".sig.lock"]  # only the build's lock file (runner.build_lock)


def test_images_of_the_wrong_shape(calibrated_convnet, tmp_path):
    with pytest.raises(FlowError, match="the model takes"):
        api.build(calibrated_convnet, (1, 28, 28), name="m", out_dir=tmp_path, images=torch.zeros(2, 1, 8, 8).numpy(),
                  progress=False)


def test_step_selection():
    steps = list(backends.get("hls4ml").steps)
    assert runner.select(steps, None, None) == steps
    assert [s.__name__ for s in runner.select(steps, "golden", "write")] == ["step_golden", "step_convert", "step_write"]
    with pytest.raises(FlowError, match="steps in order"):
        runner.select(steps, "nope", None)
    with pytest.raises(FlowError, match="comes after"):
        runner.select(steps, "write", "export")


def test_reverify_without_a_project(calibrated_convnet, tiny_images, tmp_path):
    x, _ = tiny_images
    with pytest.raises(FlowError, match="no build in .* to re-verify"):
        api.build(calibrated_convnet, (1, 28, 28), name="m", out_dir=tmp_path, images=x, reverify=True,
                  progress=False)
