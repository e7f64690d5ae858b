"""The CUDA paths of issue #16 on a real GPU (marker ``gpu``; skipped where ``torch.cuda.is_available()``
is False, i.e. on CI and on the CPU-only development machines). Run: ``pytest -m gpu tests/gpu``."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from fpga_flow import agreement, data, golden, int_ref, loop, passes, train
from fpga_flow.errors import FlowError
from tests import float_scaled_nets as fsn

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(),
                                                  reason="needs CUDA: torch.cuda.is_available() is False")]


@pytest.fixture(scope="module")
def lowered_net(tmp_path_factory):
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.util.cleanup import cleanup_model

    from fpga_flow.export import export_qonnx
    net = fsn.make(kind="conv", w_bits=8, a_bits=8, channels=6, bn=True)
    x = np.random.default_rng(1).random((500, *fsn.input_shape(net)), dtype=np.float32)
    p = tmp_path_factory.mktemp("fs") / "m.onnx"
    export_qonnx(net, fsn.input_shape(net), p)
    low = passes.lower(passes.prepare_for_hls4ml(cleanup_model(ModelWrapper(str(p)))))
    hw_in = low.quantize_input(x)
    trace = int_ref.run(low, np.ascontiguousarray(np.moveaxis(hw_in, 1, -1)), trace=True)
    out = trace[low.model.graph.output[0].name]
    logits = out * low.layers[-1].final_scale if low.layers[-1].chain is None else out
    return SimpleNamespace(net=net, x=x, low=low, hw_in=hw_in, trace=trace, logits=logits)


def test_cuda_forward_of_a_float_scaled_net_is_explained_like_the_cpu(lowered_net):
    s = lowered_net
    before = golden._numeric_flags()
    stored = {f"torch_{d}": golden.torch_reference(s.net, s.x, d).output for d in ("cpu", "cuda")}
    info, checks = agreement.compare_devices(s.low, s.trace, s.net, s.x, s.hw_in, s.logits, ["cpu", "cuda"], stored)
    assert golden._numeric_flags() == before
    failed = [c.line() for c in checks if not c.ok]
    assert not failed, failed
    cuda = info["devices"]["cuda"]
    assert cuda["n_unexplained"] == 0 and cuda["stored_output_checked"] is True
    assert cuda["numerics"] == golden.REFERENCE_NUMERICS and cuda["images"] == 500


def test_cuda_reference_runs_are_reproducible(lowered_net):
    s = lowered_net
    a = golden.torch_reference(s.net, s.x, "cuda").output
    b = golden.torch_reference(s.net, s.x, "cuda").output
    assert np.array_equal(a, b)


def test_power_of_two_convnet_cpu_equals_cuda(calibrated_convnet, tiny_images):
    x, _ = tiny_images
    runs = {d: golden.torch_reference(calibrated_convnet, x, d).output for d in ("cpu", "cuda")}
    record, checks = golden.compare_devices_exact(runs, runs["cpu"], "Brevitas torch (cpu)")
    assert all(c.ok for c in checks), [c.line() for c in checks]
    assert record["cuda"]["agree"] == len(x)


def test_reference_devices_lists_cuda():
    assert golden.reference_devices("auto") == ["cpu", "cuda"] == golden.reference_devices("cuda")


def test_one_epoch_on_cuda_with_device_resident_batches(tmp_path):
    try:
        data.find_dir()
    except FlowError as e:
        pytest.skip(f"MNIST not available: {e}")
    card = train.train("convnet", epochs=1, batch_size=256, lr_scaling="linear", limit=2048, augment="default",
                       device="cuda", out=tmp_path / "c.pt", progress=False)
    assert card["device"] == "cuda" and card["peak_lr"] == loop.effective_lr(2e-3, 256, "linear")
    model, _ = train.load_checkpoint("convnet", tmp_path / "c.pt")
    assert next(model.parameters()).device.type == "cpu"
