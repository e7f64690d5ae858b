"""Knowledge distillation (fpga_flow.distill): the KD loss on hand-checked cases, and a short KD run."""

from __future__ import annotations

import math

import pytest
import torch

from fpga_flow import data, distill, train, zoo
from fpga_flow.errors import FlowError

from tests.conftest import single_torch_thread  # noqa: E402

pytestmark = pytest.mark.unit


one_thread = pytest.fixture(autouse=True, scope="module")(single_torch_thread)


def test_kd_loss_hand_checked():
    # Student uniform over 2 classes; teacher logits (ln 3, 0): p_teacher = (3/4, 1/4) at T = 1.
    s = torch.tensor([[0.0, 0.0]])
    t = torch.tensor([[math.log(3.0), 0.0]])
    y = torch.tensor([0])
    # T = 1: KL(p_t || p_s) = 3/4 ln(3/4 / 1/2) + 1/4 ln(1/4 / 1/2) = 0.130812...; alpha = 1: soft only.
    kl1 = 0.75 * math.log(1.5) + 0.25 * math.log(0.5)
    assert abs(kl1 - 0.1308120) < 1e-6
    assert distill.kd_loss(s, t, y, temperature=1.0, alpha=1.0).item() == pytest.approx(kl1, rel=1e-6)
    # alpha = 0: the hard loss only, NLL of a uniform guess = ln 2.
    assert distill.kd_loss(s, t, y, temperature=1.0, alpha=0.0).item() == pytest.approx(math.log(2), rel=1e-6)
    # T = 2: p_t = softmax(ln3/2, 0) = (sqrt3, 1) / (1 + sqrt3); the soft term is scaled by T^2 = 4.
    p = math.sqrt(3) / (1 + math.sqrt(3))
    kl2 = p * math.log(p / 0.5) + (1 - p) * math.log((1 - p) / 0.5)
    assert abs(4 * kl2 - 0.1453631) < 1e-6
    want = 0.5 * 4 * kl2 + 0.5 * math.log(2)  # = 0.419255
    assert distill.kd_loss(s, t, y, temperature=2.0, alpha=0.5).item() == pytest.approx(want, rel=1e-6)
    # batch mean: a second, identical-logits row adds 0 soft loss and ln 2 hard loss
    s2, t2, y2 = torch.zeros(2, 2), torch.stack([t[0], torch.zeros(2)]), torch.tensor([0, 1])
    assert distill.kd_loss(s2, t2, y2, 2.0, 0.5).item() == pytest.approx(
        (0.5 * 4 * kl2 + 0.5 * 2 * math.log(2)) / 2, rel=1e-6)


def test_kd_loss_gradient_flows_to_student_only():
    s = torch.tensor([[1.0, -1.0, 0.5]], requires_grad=True)
    t = torch.tensor([[0.2, 0.1, 3.0]], requires_grad=True)
    distill.kd_loss(s, t, torch.tensor([2]), 4.0, 0.9).backward()
    assert s.grad is not None and s.grad.abs().sum() > 0
    assert t.grad is None
    # the student matching the teacher exactly has zero soft loss
    assert distill.kd_loss(t.detach(), t.detach(), torch.tensor([2]), 3.0, 1.0).item() == pytest.approx(0, abs=1e-7)


def test_kd_arguments_are_checked():
    with pytest.raises(FlowError, match="kd_temperature"):
        distill.kd_loss(torch.zeros(1, 2), torch.zeros(1, 2), torch.tensor([0]), temperature=0.0)
    with pytest.raises(FlowError, match="kd_alpha"):
        distill.kd_loss(torch.zeros(1, 2), torch.zeros(1, 2), torch.tensor([0]), alpha=1.5)


def test_normalized_teacher_applies_seed_normalisation():
    net = zoo.load("convnet").float_model().eval()
    x = torch.rand(4, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(distill.Normalized(net)(x), net((x - data.MEAN) / data.STD))


def test_short_kd_run_records_teacher(tmp_path):
    try:
        data.find_dir()
    except FlowError as e:
        pytest.skip(f"MNIST not available: {e}")
    torch.manual_seed(0)
    teacher = distill.Normalized(zoo.load("convnet").float_model())
    card = train.train("convnet", weight_bits=2, act_bits=2, epochs=1, batch_size=32, limit=128, augment=None,
                       teacher=teacher, kd_temperature=3.0, kd_alpha=0.5, out=tmp_path / "kd.pt",
                       progress=False, device="cpu")
    assert card["kd_temperature"] == 3.0 and card["kd_alpha"] == 0.5
    assert 0.0 <= card["teacher_accuracy"] <= 1.0
    model, _ = train.load_checkpoint("convnet", tmp_path / "kd.pt", 2, 2)
    assert model.fc2.weight.shape == (10, 50)


def test_float_model_normalises_with_its_datasets_statistics(tmp_path, monkeypatch):
    """#14: the float model (teacher) is trained on inputs normalised with its dataset's mean/std, not MNIST's
    on every dataset; the card records them and load_teacher applies them again."""
    from tests.unit.test_byom import _idx_folder
    fm = _idx_folder(tmp_path / "fm", 5)
    ds = data.get("fashion-mnist")
    assert (ds.mean, ds.std) != ((data.MEAN,), (data.STD,))  # otherwise this test could not tell them apart
    monkeypatch.chdir(tmp_path)
    card = train.train_float("mlp_tiny", epochs=1, batch_size=4, data_path=fm, dataset="fashion-mnist",
                             augment=None, progress=False, device="cpu")
    assert card["dataset"] == "fashion-mnist"
    assert (tuple(card["norm_mean"]), tuple(card["norm_std"])) == (ds.mean, ds.std)
    written = sorted(p.name for p in (tmp_path / "build" / "checkpoints").glob("*.pt"))
    assert written == ["mlp_tiny_float_fashion_mnist.pt"]  # an MNIST teacher (mlp_tiny_float.pt) is kept
    teacher = distill.load_teacher("mlp_tiny", tmp_path / "build" / "checkpoints" / written[0])
    x = torch.rand(3, 49, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.equal(teacher(x), teacher.model((x - ds.mean[0]) / ds.std[0]))
        assert not torch.equal(teacher(x), teacher.model((x - data.MEAN) / data.STD))
    assert distill.normalisation({}) == ((data.MEAN,), (data.STD,))  # a card from before #14: MNIST's
    c = data.get("cifar10")
    assert distill.normalisation({"dataset": "cifar10"}) == (c.mean, c.std)  # a card naming only its dataset


def test_normalized_is_per_channel_for_colour_datasets():
    c = data.get("cifar10")
    x = torch.rand(2, 3, 4, 4, generator=torch.Generator().manual_seed(2))
    n = distill.Normalized(torch.nn.Identity(), c.mean, c.std)
    want = torch.stack([(x[:, i] - c.mean[i]) / c.std[i] for i in range(3)], dim=1)
    assert torch.equal(n(x), want)
    with pytest.raises(FlowError, match="normalisation has 3 channels"):
        n(torch.rand(2, 1, 4, 4))
