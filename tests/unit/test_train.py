"""QAT training, checkpoint round trip and checkpoint error handling (fpga_flow.train)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fpga_flow import data, train, zoo
from fpga_flow.errors import FlowError

from tests.conftest import single_torch_thread  # noqa: E402

pytestmark = pytest.mark.unit

MODEL = "convnet"
CARD = {"model": MODEL, "weight_bits": 4, "act_bits": 4, "input_bits": 8}


one_thread = pytest.fixture(autouse=True, scope="module")(single_torch_thread)


def _mnist_like(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs on the to_unit grid (k/255) and labels, without needing the dataset."""
    g = torch.Generator().manual_seed(seed)
    codes = torch.randint(0, 256, (n, 28, 28), generator=g, dtype=torch.uint8)
    codes[torch.rand(codes.shape, generator=g) < 0.8] = 0  # mostly background, like digits
    x = torch.from_numpy(data.to_unit(codes.numpy()))
    return x, torch.randint(0, 10, (n,), generator=g)


def _qat_steps(steps: int) -> torch.nn.Module:
    """A quant model after ``steps`` Adam steps in training mode (Brevitas collects
    activation statistics for its first 300 training forwards, then learns the scale)."""
    torch.manual_seed(0)
    model = zoo.load(MODEL).quant_model(4, 4, 8)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    x, y = _mnist_like(64, seed=1)
    model.train()
    for i in range(steps):
        xb, yb = x[(i * 8) % 64:(i * 8) % 64 + 8], y[(i * 8) % 64:(i * 8) % 64 + 8]
        loss = F.nll_loss(model.forward_log_softmax(xb), yb)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


@pytest.mark.parametrize("steps", [5, 310], ids=["collecting-stats", "learned-scale"])
def test_checkpoint_round_trip_is_exact(tmp_path, steps):
    model = _qat_steps(steps)
    counters = {int(m.counter) for m in train._runtime_stats_modules(model).values()}
    assert counters == {steps if steps <= 300 else 301}
    x, _ = _mnist_like(200, seed=2)
    with torch.no_grad():
        before = model(x)
    path = train.save_checkpoint(model, dict(CARD), tmp_path / "c.pt")
    assert train.card_path(path).is_file()
    loaded, card = train.load_checkpoint(MODEL, path)
    assert not loaded.training and card == CARD
    with torch.no_grad():
        after = loaded(x)
        fresh = zoo.load(MODEL).quant_model(4, 4, 8).eval()(x)
    assert torch.equal(before, after)
    assert not torch.equal(before, fresh)  # the round trip carried real state


def test_missing_checkpoint_says_make_train(tmp_path):
    path = tmp_path / "nope.pt"
    with pytest.raises(FlowError, match=r"make train MODEL=convnet") as e:
        train.load_checkpoint(MODEL, path)
    assert str(path) in str(e.value)


def test_corrupt_checkpoint_names_path(tmp_path):
    path = tmp_path / "corrupt.pt"
    path.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(FlowError) as e:
        train.load_checkpoint(MODEL, path)
    assert str(path) in str(e.value)


def test_truncated_checkpoint_names_path(tmp_path):
    good = train.save_checkpoint(_qat_steps(2), dict(CARD), tmp_path / "good.pt")
    raw = good.read_bytes()
    path = tmp_path / "truncated.pt"
    path.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(FlowError) as e:
        train.load_checkpoint(MODEL, path)
    assert str(path) in str(e.value)


def test_wrong_content_and_bits_are_refused(tmp_path):
    path = tmp_path / "other.pt"
    torch.save([torch.zeros(3)], path)  # neither our format nor a state_dict (a plain one is accepted: #14)
    with pytest.raises(FlowError, match="neither a state_dict"):
        train.load_checkpoint(MODEL, path)
    torch.save({"weights": torch.zeros(3)}, path)  # a state_dict of another model
    with pytest.raises(FlowError, match="does not fit .*missing keys: .*unexpected keys: weights"):
        train.load_checkpoint(MODEL, path)
    good = train.save_checkpoint(_qat_steps(2), dict(CARD), tmp_path / "good.pt")
    with pytest.raises(FlowError, match="was trained as"):
        train.load_checkpoint(MODEL, good, weight_bits=8)
    torch.save({"state_dict": {"conv1.weight": torch.zeros(1)}, "card": dict(CARD)}, path)
    with pytest.raises(FlowError, match="does not fit") as e:
        train.load_checkpoint(MODEL, path)
    assert str(path) in str(e.value)


def test_unknown_augmentation_lists_valid():
    with pytest.raises(FlowError, match="default"):
        train.make_augmentation("flip")
    assert train.make_augmentation(None) is None


def test_short_training_reduces_loss(mnist_dir, tmp_path):
    out = tmp_path / "short.pt"
    card = train.train(MODEL, epochs=8, batch_size=32, lr=1e-2, limit=256, augment=None,
                       data_path=mnist_dir, out=out, progress=False, device="cpu")
    losses = [h["train_loss"] for h in card["history"]]
    assert losses[-1] < 0.7 * losses[0], losses
    assert out.is_file() and train.card_path(out).is_file()
    assert not train.partial_path(out).exists()  # removed once the run completed
    assert card["train_images"] == 256 and 0.0 <= card["test_accuracy"] <= 1.0
    assert card["data_sha256"] == data.load("train", mnist_dir).sha256
    model, loaded_card = train.load_checkpoint(MODEL, out)
    test = data.load("test", mnist_dir)
    assert train.evaluate(model, test.images, test.labels) == card["test_accuracy"]
    assert loaded_card["test_accuracy"] == card["test_accuracy"]


def test_resume_equals_uninterrupted_run(mnist_dir, tmp_path, monkeypatch):
    # 160 steps per epoch: the cut falls while Brevitas still collects activation
    # statistics (300 training forwards) and the resumed epoch finishes collection.
    kw = dict(epochs=2, batch_size=8, limit=1280, augment="default", data_path=mnist_dir,
              progress=False, device="cpu")
    whole = tmp_path / "whole.pt"
    train.train(MODEL, out=whole, **kw)

    cut = tmp_path / "cut.pt"
    save = train._save_partial

    def save_then_crash(path, payload):
        save(path, payload)
        raise KeyboardInterrupt  # a run killed after its first epoch

    monkeypatch.setattr(train, "_save_partial", save_then_crash)
    with pytest.raises(KeyboardInterrupt):
        train.train(MODEL, out=cut, **kw)
    monkeypatch.setattr(train, "_save_partial", save)
    assert train.partial_path(cut).is_file() and not cut.exists()
    with pytest.raises(FlowError, match="other settings"):
        train.train(MODEL, out=cut, resume=True, **dict(kw, batch_size=16))
    train.train(MODEL, out=cut, resume=True, **kw)

    a = torch.load(whole, weights_only=True)["state_dict"]
    b = torch.load(cut, weights_only=True)["state_dict"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_missing_activation_scale_is_refused_even_when_brevitas_ignores_it(tmp_path, monkeypatch):
    import brevitas.config

    monkeypatch.setattr(brevitas.config, "IGNORE_MISSING_KEYS", True)
    state = {k: v for k, v in _qat_steps(2).state_dict().items() if "scaling_impl.value" not in k}
    path = tmp_path / "noscale.pt"
    torch.save({"state_dict": state, "card": dict(CARD)}, path)
    with pytest.raises(FlowError, match="no activation scale"):
        train.load_checkpoint(MODEL, path)


def test_init_from_other_bit_widths_copies_only_the_float_weights():
    """W2A2 started from the shipped W4A4: its conv/linear weights and biases, not its quantizer state."""
    src, _ = train.load_checkpoint("convnet", None, 4, 4, 8)
    w2 = zoo.load("convnet").quant_model(2, 2, 8)
    before = {k: v.clone() for k, v in w2.state_dict().items()}
    assert train.init_from(w2, "convnet", zoo.checkpoint_path("convnet", 4, 4), 2, 2, 8) == "weights"
    after, want = w2.state_dict(), src.state_dict()
    copied = [k for k in after if k.endswith((".weight", ".bias")) and k.split(".")[0] in ("conv1", "conv2", "fc1", "fc2")]
    assert len(copied) == 8 and all(torch.equal(after[k], want[k]) for k in copied)
    assert all(torch.equal(after[k], before[k]) for k in after if k not in copied)  # quantizers untouched
    w4 = zoo.load("convnet").quant_model(4, 4, 8)
    assert train.init_from(w4, "convnet", zoo.checkpoint_path("convnet", 4, 4), 4, 4, 8) == "full"
    assert all(torch.equal(w4.state_dict()[k], v) for k, v in want.items())
