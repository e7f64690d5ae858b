"""The CUDA paths of issue #16, tested on the CPU by construction.

* Every device's forward is compared with the reference: the comparison logic (``agreement.classify``,
  ``agreement.compare_devices``, ``golden.compare_devices_exact``) is fed recorded / fabricated outputs
  standing for another device's, and must locate, explain or refuse each disagreement as on the CPU.
* The reference numerics (TF32 off, deterministic cuDNN) are set around every reference forward and
  restored after it.
* The one training loop (``loop.run_epochs``, used by QAT, distillation and the float teacher) gives,
  on the default CPU recipe, bit-identical weights to the loop it replaced, run here beside it.
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fpga_flow import agreement, data, distill, golden, int_ref, loop, passes, train, zoo
from fpga_flow.errors import FlowError
from tests import float_scaled_nets as fsn
from tests.conftest import needs_gxx, single_torch_thread

pytestmark = pytest.mark.unit

one_thread = pytest.fixture(autouse=True, scope="module")(single_torch_thread)


# ---------------------------------------------------------------------------------------- reference numerics

def test_reference_numerics_sets_and_restores_the_flags():
    before = golden._numeric_flags()
    contrary = {k: not v for k, v in golden.REFERENCE_NUMERICS.items()}
    golden._set_numeric_flags(contrary)
    try:
        with golden.reference_numerics() as used:
            assert used == golden.REFERENCE_NUMERICS == golden._numeric_flags()
            assert torch.backends.cudnn.allow_tf32 is False and torch.backends.cuda.matmul.allow_tf32 is False
            assert torch.backends.cudnn.deterministic is True
        assert golden._numeric_flags() == contrary
        with pytest.raises(RuntimeError), golden.reference_numerics():
            raise RuntimeError("a failing forward")
        assert golden._numeric_flags() == contrary  # restored on error too
        with golden.reference_numerics({"cudnn.allow_tf32": True}) as used:
            assert used["cudnn.allow_tf32"] is True and torch.backends.cudnn.allow_tf32 is True
            assert used["cuda.matmul.allow_tf32"] is False
        with pytest.raises(FlowError, match="cudnn.allow_tf32"):
            with golden.reference_numerics({"tf32": False}):
                pass
    finally:
        golden._set_numeric_flags(before)


class _FlagSpy(torch.nn.Module):
    """Records the numeric flags in force during its forward."""

    def __init__(self):
        super().__init__()
        self.seen = []
        self.lin = torch.nn.Linear(4, 3)

    def forward(self, x):
        self.seen.append(golden._numeric_flags())
        return self.lin(x)


def test_torch_reference_runs_under_the_reference_numerics():
    before = golden._numeric_flags()
    spy = _FlagSpy()
    run = golden.torch_reference(spy, np.ones((5, 4), dtype=np.float32), "cpu", batch=2)
    assert run.output.shape == (5, 3) and len(spy.seen) == 1 + 3  # warm-up + 3 batches
    assert all(s == golden.REFERENCE_NUMERICS for s in spy.seen)
    assert golden._numeric_flags() == before


# ------------------------------------------------------------------- comparison logic, fabricated outputs

def _fake_reference(n: int = 6):
    """One Requant layer, 3 channels, 1 value each; channel 1 has a fragile threshold at accumulator 10."""
    rng = np.random.default_rng(0)
    layer = SimpleNamespace(node="conv0", fragile=[{"channel": 1, "index": 2, "threshold": 10, "error_bound": 0.5}])
    want = rng.integers(0, 15, (n, 3)).astype(np.float32)
    acc = rng.integers(-50, 50, (n, 3))
    acc[:, 1] = 9  # every image's channel 1 sits just below the fragile threshold
    hw_input = rng.integers(0, 255, (n, 4)).astype(np.float32)
    logits = rng.standard_normal((n, 10)).astype(np.float32)
    return agreement.Reference([layer], [want], [acc], hw_input, logits)


def _recorded(ref, flips=()):
    """A forward's codes and output equal to the reference's, with the (image, channel) codes in ``flips``
    moved one level: what a device's run would record."""
    codes = [ref.hw_input.copy(), ref.codes[0].copy()]
    for i, c in flips:
        codes[1][i, c] += 1
    return codes, ref.logits.copy()


def test_classify_agreeing_forward():
    ref = _fake_reference()
    info = agreement.classify(ref, *_recorded(ref))
    assert info["agree"] == info["activations_equal"] == info["argmax_equal"] == 6
    assert info["n_explained"] == info["n_unexplained"] == 0 and info["max_abs_logit_diff"] == 0.0
    assert all(c.ok for c in agreement.checks_of(info, ref, _recorded(ref)[0], "cuda"))


def test_classify_explains_a_fragile_threshold_and_refuses_anything_else():
    ref = _fake_reference()
    codes, out = _recorded(ref, flips=[(2, 1), (4, 0)])  # image 2 on the fragile threshold, image 4 not
    info = agreement.classify(ref, codes, out)
    assert info["activations_equal"] == 4 and info["agree"] == 4
    assert info["n_explained"] == 1 and info["n_unexplained"] == 1
    e, u = info["explained"][0], info["unexplained"][0]
    assert (e["image"], e["layer"], e["channel"], e["accumulator"], e["threshold"]) == (2, "conv0", 1, 9, 10)
    assert e["brevitas"] == e["reference"] + 1
    assert (u["image"], u["channel"]) == (4, 0) and info["unexplained_images"] == [4]
    checks = agreement.checks_of(info, ref, codes, "cuda")
    assert [c.ok for c in checks] == [True, False]
    assert "(cuda)" in checks[1].name and checks[1].mismatching_images == [4]
    assert "(cuda)" not in agreement.checks_of(info, ref, codes, "cpu")[1].name  # the CPU check keeps its name


def test_classify_counts_a_changed_argmax_as_disagreement():
    ref = _fake_reference()
    codes, out = _recorded(ref)
    out[3] = -out[3]  # image 3's predicted class changes (its activations do not)
    info = agreement.classify(ref, codes, out)
    assert info["activations_equal"] == 6 and info["argmax_equal"] == 5 and info["agree"] == 5


def test_classify_refuses_a_forward_with_other_quantizers():
    ref = _fake_reference()
    codes, out = _recorded(ref)
    info = agreement.classify(ref, codes[:1], out)
    assert info["agree"] is None and "no layer-by-layer comparison" in info["note"]


def test_device_record_says_what_was_compared():
    ref = _fake_reference()
    codes, out = _recorded(ref, flips=[(2, 1)])
    info = agreement.classify(ref, codes, out)
    cuda_out = out.copy()
    cuda_out[0, 0] += 0.25
    rec = agreement.device_record("cuda", info, cuda_out, stored=cuda_out, cpu_out=out)
    assert rec["compared_with"] == agreement.COMPARED_WITH and rec["device"] == "cuda"
    assert (rec["images"], rec["agree"], rec["n_explained"], rec["n_unexplained"]) == (6, 5, 1, 0)
    assert rec["numerics"] == golden.REFERENCE_NUMERICS and rec["stored_output_checked"] is True
    assert rec["output_equal_to_cpu"] == 5 and rec["max_abs_diff_vs_cpu"] == 0.25
    assert len(rec["explained"]) == 1
    rec = agreement.device_record("cpu", info, out, stored=out + 1, cpu_out=out)
    assert rec["numerics"] is None and rec["stored_output_checked"] is False and "explained" not in rec


def test_compare_devices_exact_power_of_two():
    want = np.arange(12, dtype=np.float32).reshape(4, 3)
    cuda = want.copy()
    cuda[1, 2] += 0.5
    record, checks = golden.compare_devices_exact({"cpu": want.copy(), "cuda": cuda}, want, "QONNX")
    assert [c.name for c in checks] == ["Brevitas torch (cpu) vs QONNX", "Brevitas torch (cuda) vs QONNX"]
    assert [c.ok for c in checks] == [True, False] and checks[1].mismatching_images == [1]
    assert record["cpu"]["agree"] == 4 and record["cuda"]["agree"] == 3 and record["cuda"]["n_unexplained"] == 1
    assert record["cuda"]["numerics"] == golden.REFERENCE_NUMERICS and record["cpu"]["numerics"] is None
    assert set(record) == {"cpu", "cuda"}  # exactly the devices whose outputs were given


# --------------------------------------------------------------- compare_devices on a real float-scaled net

@pytest.fixture(scope="module")
def lowered_net(tmp_path_factory):
    """A small float-scaled conv net (BatchNorm), calibrated, exported and lowered; its reference trace."""
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.util.cleanup import cleanup_model

    from fpga_flow.export import export_qonnx
    net = fsn.make(kind="conv", w_bits=8, a_bits=8, channels=6, bn=True)
    x = np.random.default_rng(1).random((40, *fsn.input_shape(net)), dtype=np.float32)
    p = tmp_path_factory.mktemp("fs") / "m.onnx"
    export_qonnx(net, fsn.input_shape(net), p)
    low = passes.lower(passes.prepare_for_hls4ml(cleanup_model(ModelWrapper(str(p)))))
    hw_in = low.quantize_input(x)
    cl = np.ascontiguousarray(np.moveaxis(hw_in, 1, -1))
    trace = int_ref.run(low, cl, trace=True)
    out = trace[low.model.graph.output[0].name]
    logits = out * low.layers[-1].final_scale if low.layers[-1].chain is None else out
    return SimpleNamespace(net=net, x=x, low=low, hw_in=hw_in, trace=trace, logits=logits)


def test_compare_devices_cpu_is_the_old_comparison_plus_its_record(lowered_net):
    s = lowered_net
    stored = {"torch_cpu": golden.torch_reference(s.net, s.x, "cpu").output}
    info, checks = agreement.compare_devices(s.low, s.trace, s.net, s.x, s.hw_in, s.logits, ["cpu"], stored)
    old, old_checks = agreement.compare(s.low, s.trace, s.net, s.x, s.hw_in, s.logits)
    assert {k: v for k, v in info.items() if k != "devices"} == old
    assert [c.name for c in checks[:2]] == [c.name for c in old_checks] and all(c.ok for c in checks)
    assert list(info["devices"]) == ["cpu"]
    rec = info["devices"]["cpu"]
    assert rec["stored_output_checked"] is True and rec["agree"] == old["agree"] == 40
    assert checks[2].name.startswith("Brevitas torch (cpu): stored reference output")


def test_compare_devices_fails_when_the_stored_output_is_not_the_checked_one(lowered_net):
    s = lowered_net
    wrong = golden.torch_reference(s.net, s.x, "cpu").output.copy()
    wrong[7, 0] += 1.0
    info, checks = agreement.compare_devices(s.low, s.trace, s.net, s.x, s.hw_in, s.logits, ["cpu"],
                                             {"torch_cpu": wrong})
    assert info["devices"]["cpu"]["stored_output_checked"] is False
    assert not checks[-1].ok and checks[-1].mismatching_images == [7]


def test_compare_devices_holds_another_device_to_the_same_explanation(lowered_net, monkeypatch):
    """'cuda' here is a recorded forward (the CPU's codes with one activation moved off a non-fragile
    point, and one on a fragile threshold when the net has one): the build's check for that device fails
    on exactly the unexplained image and names the device; the CPU's checks still pass."""
    s = lowered_net
    real = agreement.brevitas_codes
    cpu_codes, cpu_out = real(s.net, s.x)
    ref = agreement.reference(s.low, s.trace, s.hw_in, s.logits)
    near = {(f["channel"], t) for f in ref.layers[0].fragile for t in (f["threshold"] - 1, f["threshold"])}
    acc = ref.accumulators[0][5]  # image 5, (C, H, W): a place no fragile threshold explains
    channel, h, w = next((c, h, w) for c, h, w in np.ndindex(*acc.shape) if (c, int(acc[c, h, w])) not in near)
    bad = [a.copy() for a in cpu_codes]
    bad[1][5, channel, h, w] += 1

    def recorded(module, x, batch=1000, device="cpu", numerics=None):
        return (bad, cpu_out.copy()) if device == "cuda" else real(module, x, batch, device, numerics)

    monkeypatch.setattr(agreement, "brevitas_codes", recorded)
    info, checks = agreement.compare_devices(s.low, s.trace, s.net, s.x, s.hw_in, s.logits, ["cpu", "cuda"])
    assert set(info["devices"]) == {"cpu", "cuda"}
    cuda = info["devices"]["cuda"]
    assert cuda["n_unexplained"] == 1 and cuda["unexplained"][0]["image"] == 5
    assert cuda["unexplained"][0]["channel"] == channel and cuda["output_equal_to_cpu"] == 40
    failed = [c for c in checks if not c.ok]
    assert len(failed) == 1 and "(cuda)" in failed[0].name and failed[0].mismatching_images == [5]
    assert info["agree"] == info["devices"]["cpu"]["agree"]  # the top level stays the CPU's


# --------------------------------------------------------------------------------- the one training loop

def _pre16_qat_weights(mnist_dir, *, epochs, batch_size, lr, limit, augment, seed=0, teacher=None,
                       kd_temperature=2.0, kd_alpha=0.5, device="cpu"):
    """The QAT loop as it was before #16 (fpga_flow/train.py at d3c0c3c, its setup and epoch loop
    verbatim, resume and pruning left out): the weights it trains."""
    mod = zoo.load("convnet")
    aug = train.make_augmentation(augment)
    split = data.load("train", mnist_dir)
    images, labels = split.images[:limit], split.labels[:limit]
    n = len(images)
    teacher_module = teacher.eval() if teacher is not None else None
    with train._deterministic(seed):
        model = mod.quant_model(4, 4, 8)
        shuffle = torch.Generator().manual_seed(seed)
        start_epoch = 0
        model = model.to(device)
        opt = torch.optim.Adam(model.parameters(), lr=lr)
        if aug is not None:
            aug = aug.to(device)
        if teacher_module is not None:
            teacher_module = teacher_module.to(device)
        x_all = train._to_unit_tensor(images).to(device)
        y_all = torch.from_numpy(labels).to(device)
        steps_per_epoch = math.ceil(n / batch_size)
        total_steps = epochs * steps_per_epoch

        forward = getattr(model, "forward_log_softmax", None) or (lambda x: F.log_softmax(model(x), dim=1))
        for epoch in range(start_epoch, epochs):
            model.train()
            perm = torch.randperm(n, generator=shuffle).to(device)
            for i in range(steps_per_epoch):
                idx = perm[i * batch_size:(i + 1) * batch_size]
                x, y = x_all[idx], y_all[idx]
                if aug is not None:
                    x = aug(x)
                x = data.as_input(x, mod.INPUT_SHAPE)
                for g in opt.param_groups:
                    g["lr"] = loop.lr_at(epoch * steps_per_epoch + i, total_steps, lr)
                if teacher_module is None:
                    logp = forward(x)
                    loss = F.nll_loss(logp, y)
                else:
                    logits = model.logits(x) if hasattr(model, "logits") else model(x)
                    logp = F.log_softmax(logits, dim=1)
                    with torch.no_grad():
                        t_logits = teacher_module(x)
                    loss = distill.kd_loss(logits, t_logits, y, kd_temperature, kd_alpha)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
    return {k: v.detach().cpu() for k, v in model.to("cpu").eval().state_dict().items()}


def _pre16_float_weights(mnist_dir, *, epochs, batch_size, lr, limit, augment, seed=0, device="cpu"):
    """distill.train_float's own loop before #16 (now it calls loop.run_epochs): the weights it trains."""
    mod = zoo.load("convnet")
    aug = train.make_augmentation(augment)
    split = data.load("train", mnist_dir)
    images, labels = split.images[:limit], split.labels[:limit]
    n = len(images)
    with train._deterministic(seed):
        net = mod.float_model()
        model = distill.Normalized(net).to(device)
        opt = torch.optim.Adam(model.parameters(), lr=lr)
        shuffle = torch.Generator().manual_seed(seed)
        if aug is not None:
            aug = aug.to(device)
        x_all = train._to_unit_tensor(images).to(device)
        y_all = torch.from_numpy(labels).to(device)
        steps = math.ceil(n / batch_size)
        for epoch in range(epochs):
            model.train()
            perm = torch.randperm(n, generator=shuffle).to(device)
            for i in range(steps):
                idx = perm[i * batch_size:(i + 1) * batch_size]
                x, y = x_all[idx], y_all[idx]
                if aug is not None:
                    x = aug(x)
                x = data.as_input(x, mod.INPUT_SHAPE)
                for g in opt.param_groups:
                    g["lr"] = loop.lr_at(epoch * steps + i, epochs * steps, lr)
                loss = F.nll_loss(model(x), y)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
    return {k: v.detach().cpu() for k, v in net.cpu().state_dict().items()}


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


TINY = dict(epochs=2, batch_size=64, lr=2e-3, limit=200)  # 4 steps per epoch, the last batch short


@pytest.mark.parametrize("augment", [None, "default"], ids=["plain", "kornia-affine"])
def test_default_cpu_recipe_is_bit_identical_to_the_pre16_loop(mnist_dir, tmp_path, augment):
    card = train.train("convnet", augment=augment, data_path=mnist_dir, out=tmp_path / "new.pt", progress=False,
                       device="cpu", **TINY)
    new = torch.load(tmp_path / "new.pt", weights_only=True)["state_dict"]
    old = _pre16_qat_weights(mnist_dir, augment=augment, **TINY)
    assert _same(new, old)
    assert "lr_scaling" not in card and "amp" not in card and "compile" not in card  # plain cards unchanged
    assert [set(h) for h in card["history"]] == [{"epoch", "train_loss", "train_accuracy"}] * 2


def test_distillation_through_the_one_loop_is_bit_identical(mnist_dir, tmp_path):
    torch.manual_seed(0)
    teacher = distill.Normalized(zoo.load("convnet").float_model())
    kw = dict(TINY, limit=128)
    train.train("convnet", augment=None, data_path=mnist_dir, out=tmp_path / "kd.pt", progress=False,
                device="cpu", teacher=teacher, kd_temperature=3.0, kd_alpha=0.5, **kw)
    new = torch.load(tmp_path / "kd.pt", weights_only=True)["state_dict"]
    assert _same(new, _pre16_qat_weights(mnist_dir, augment=None, teacher=teacher, kd_temperature=3.0, **kw))


def test_float_teacher_through_the_one_loop_is_bit_identical(mnist_dir, tmp_path):
    kw = dict(TINY, limit=128)
    card = train.train_float("convnet", augment="default", data_path=mnist_dir, out=tmp_path / "f.pt",
                               progress=False, device="cpu", **kw)
    new = torch.load(tmp_path / "f.pt", weights_only=True)["state_dict"]
    assert _same(new, _pre16_float_weights(mnist_dir, augment="default", **kw))
    assert [set(h) for h in card["history"]] == [{"epoch", "train_loss"}] * 2  # the float card as before


def test_linear_lr_scaling_rule_and_its_record(mnist_dir, tmp_path):
    assert loop.effective_lr(2e-3, 64, "none") == 2e-3
    assert loop.effective_lr(2e-3, 512, "linear") == 2e-3 * 512 / loop.REFERENCE_BATCH
    assert loop.effective_lr(2e-3, 64, "linear") == 2e-3
    with pytest.raises(FlowError, match="linear"):
        loop.effective_lr(2e-3, 64, "sqrt")
    card = train.train("convnet", epochs=1, batch_size=128, lr=1e-3, lr_scaling="linear", limit=128, augment=None,
                       data_path=mnist_dir, out=tmp_path / "s.pt", progress=False, device="cpu")
    assert card["lr_scaling"] == "linear" and card["peak_lr"] == 1e-3 * 128 / 64 and card["lr"] == 1e-3
    # the scaled run is the plain run given the scaled lr
    plain = train.train("convnet", epochs=1, batch_size=128, lr=card["peak_lr"], limit=128, augment=None,
                        data_path=mnist_dir, out=tmp_path / "p.pt", progress=False, device="cpu")
    assert "peak_lr" not in plain
    assert _same(torch.load(tmp_path / "s.pt", weights_only=True)["state_dict"],
                 torch.load(tmp_path / "p.pt", weights_only=True)["state_dict"])


def test_amp_flag_runs_autocast_and_is_recorded(mnist_dir, tmp_path):
    """bfloat16 autocast is really applied when asked (the weights differ from the float32 run) and the
    card says so; whether it changes the *quantized* model's accuracy is not claimed (docs/gpu.md)."""
    kw = dict(epochs=1, batch_size=64, limit=128, augment=None, data_path=mnist_dir, progress=False, device="cpu")
    card = train.train("convnet", amp=True, out=tmp_path / "amp.pt", **kw)
    train.train("convnet", out=tmp_path / "fp32.pt", **kw)
    assert card["amp"] == "bfloat16"
    a = torch.load(tmp_path / "amp.pt", weights_only=True)["state_dict"]
    b = torch.load(tmp_path / "fp32.pt", weights_only=True)["state_dict"]
    assert a.keys() == b.keys() and not all(torch.equal(a[k], b[k]) for k in a)


def test_run_epochs_forms_batches_by_index_on_the_data_device():
    """The loop indexes the resident tensors with a permutation of the seeded generator: every image is
    used once per epoch, in the generator's order, and the batches live where the data live."""
    x_all = torch.arange(10, dtype=torch.float32).reshape(10, 1, 1, 1).repeat(1, 1, 2, 2)
    y_all = torch.arange(10)
    seen = []
    model = torch.nn.Linear(4, 10)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)

    def step(x, y):
        seen.append((y.clone(), x.device))
        return F.cross_entropy(model(x), y), None

    history, _ = loop.run_epochs(model, opt, step, x_all, y_all, input_shape=(4,), epochs=2, batch_size=4, lr=1e-3,
                                  shuffle=torch.Generator().manual_seed(3), progress=False)
    g = torch.Generator().manual_seed(3)
    want = [torch.randperm(10, generator=g) for _ in range(2)]
    got = [torch.cat([y for y, _ in seen[:3]]), torch.cat([y for y, _ in seen[3:]])]
    assert all(torch.equal(a, b) for a, b in zip(got, want))
    assert [len(y) for y, _ in seen] == [4, 4, 2] * 2 and {d for _, d in seen} == {x_all.device}
    assert [h["epoch"] for h in history] == [1, 2] and "train_accuracy" not in history[0]



# ------------------------------------------------------------------------------ gpu_check and bench rows

def _report(float_scaled: bool, devices=("cpu", "cuda"), cuda_agree=10):
    """A report.json shaped like a build's, with per-device results (fabricated)."""
    rep = {"n_images": 10, "exact_matches": 10, "reference_devices": list(devices), "comparisons": [
        {"name": "HLS csim vs QONNX golden", "n": 10, "exact_matches": 10}], "float_scaled": None}
    if float_scaled:
        recs = {d: {"compared_with": agreement.COMPARED_WITH, "images": 10, "agree": 10 if d == "cpu" else cuda_agree,
                    "n_explained": 0 if d == "cpu" else 10 - cuda_agree, "n_unexplained": 0,
                    "output_equal_to_cpu": None if d == "cpu" else 3} for d in devices}
        rep["float_scaled"] = {"brevitas_float_agreement": {"agree": 10, "devices": recs}}
    else:
        rep["comparisons"] += [{"name": f"Brevitas torch ({d}) vs QONNX", "n": 10,
                                "exact_matches": 10 if d == "cpu" else cuda_agree} for d in devices]
    return rep


def test_gpu_check_reads_each_devices_result_and_flags_an_unchecked_one():
    from fpga_flow import gpu_check
    fs = gpu_check.device_results(_report(True, cuda_agree=8))
    assert fs["cuda"] == {"compared_with": agreement.COMPARED_WITH, "images": 10, "agree": 8, "n_explained": 2,
                          "n_unexplained": 0, "output_equal_to_cpu": 3, "checked": True}
    p2 = gpu_check.device_results(_report(False, cuda_agree=9))
    assert p2["cuda"]["compared_with"] == "QONNX" and p2["cuda"]["n_unexplained"] == 1 and p2["cpu"]["agree"] == 10
    # a float-scaled report from a flow that compared only the CPU but lists CUDA (the pre-#16 defect)
    old = _report(True, devices=("cpu",))
    old["reference_devices"] = ["cpu", "cuda"]
    res = gpu_check.device_results(old)
    assert res["cuda"]["checked"] is False and res["cpu"]["checked"] is True
    md = gpu_check.markdown({"date": "d", "machine": gpu_check.machine(), "device": "cuda", "n": "all",
                             "builds": [dict(model="m", w=8, a=8, ok=True, wall_s=1.0, n_images=10, exact_matches=10,
                                             devices=res)], "numerics": {}, "training": [], "skipped": []})
    assert "| m | W8A8 | ok | 10/10 | cuda | **NOT CHECKED**" in md


def test_gpu_check_picks_the_shipped_checkpoints():
    from fpga_flow import gpu_check
    picked = gpu_check.checkpoints()
    for name, w, a in picked:
        assert zoo.checkpoint_path(name, w, a).is_file()
    names = zoo.names()
    assert {n for n, _, _ in picked} == {n for n in names if list(zoo.CHECKPOINTS_DIR.glob(f"{n}_w*a*.pt"))}
    assert [(w, a) for n, w, a in picked if n == "convnet"] == [(4, 4)]
    if zoo.checkpoint_path("convnet_bn", 8, 8).is_file():
        assert ("convnet_bn", 8, 8) in picked


def test_bench_accuracy_marks_gpu_rows(tmp_path):
    import json

    from fpga_flow import bench_accuracy
    card = {"test_accuracy": 0.99, "epochs": 2, "train_seconds": 60.0, "device": "cpu"}
    (tmp_path / "w4a4.json").write_text(json.dumps(card))
    cpu = bench_accuracy.table(tmp_path)
    assert "trained on" not in cpu and "on the GPU" not in cpu
    (tmp_path / "w4a4.json").write_text(json.dumps(dict(card, device="cuda")))
    gpu = bench_accuracy.table(tmp_path)
    assert "trained on cuda" in gpu and "on the GPU" in gpu


@needs_gxx
@pytest.mark.csim
def test_gpu_check_runs_its_cpu_parts(mnist_dir, tmp_path):
    """scripts/gpu_check.sh --no-cuda on one float-scaled checkpoint, 50 images: the build verifies, its CPU
    forward is reported as compared with the integer reference, the numeric-settings sweep recomputes the
    same agreement from the build's graph, the training row and the table are written."""
    from fpga_flow import gpu_check
    res = gpu_check.run(tmp_path, cuda=False, models=["mlp_bn_w4a4"], n="50", train_epochs=1, train_limit=128,
                        data_path=str(mnist_dir), sweep_all=True, log=lambda s: None)
    (b,) = res["builds"]
    assert b["ok"] and b["exact_matches"] == b["n_images"] == 50 and b["float_scaled"]
    assert list(b["devices"]) == ["cpu"] and b["reference_devices"] == ["cpu"]
    cpu = b["devices"]["cpu"]
    assert cpu["checked"] and cpu["compared_with"] == agreement.COMPARED_WITH and cpu["n_unexplained"] == 0
    (sweep,) = res["numerics"]["mlp_bn_w4a4"].values()
    assert (sweep["agree"], sweep["n_explained"], sweep["n_unexplained"]) == \
        (cpu["agree"], cpu["n_explained"], cpu["n_unexplained"])
    assert sweep["output_equal_to_cpu"] == 50
    (t,) = res["training"]
    assert t["device"] == "cpu" and t["train_images"] == 128 and t["epochs"] == 1
    md = (tmp_path / "gpu_check.md").read_text()
    assert f"| mlp_bn | W4A4 | ok | 50/50 | cpu | {agreement.COMPARED_WITH} |" in md
    assert (tmp_path / "builds" / "mlp_bn" / "report.json").is_file() and not res["skipped"]
