"""Shared fixtures: a small calibrated quant ConvNet, MNIST subsets, and tool detection."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


@pytest.fixture(scope="session")
def mnist_test():
    from fpga_flow import data
    return data.load("test")


@pytest.fixture(scope="session")
def mnist_dir():
    """The folder holding the MNIST IDX files (training tests, commands run outside the checkout)."""
    from fpga_flow import data
    from fpga_flow.errors import FlowError
    try:
        return data.find_dir()
    except FlowError as e:
        pytest.skip(f"MNIST not available: {e}")


@pytest.fixture(scope="session")
def calibrated_convnet(mnist_test):
    """An untrained QuantConvNet whose activation scales were initialised from real images (fast, deterministic)."""
    from fpga_flow import data, zoo
    torch.manual_seed(0)
    m = zoo.load("convnet").quant_model(4, 4, 8)
    m.train()
    x = torch.from_numpy(data.to_unit(mnist_test.images[:320]))
    with torch.no_grad():
        for i in range(0, 320, 8):
            m(x[i:i + 8])
    return m.eval()


def has_gxx() -> bool:
    return shutil.which("g++") is not None


needs_gxx = pytest.mark.skipif(not has_gxx(), reason="g++ not on PATH")


@pytest.fixture
def tiny_images(mnist_test):
    from fpga_flow import data
    return data.to_unit(mnist_test.images[:64]), mnist_test.labels[:64]


def as_np(t) -> np.ndarray:
    return getattr(t, "value", t).detach().numpy()


def single_torch_thread():
    """Training tests run on one thread: deterministic sums, and no oversubscription beside g++ jobs."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def pytest_collection_modifyitems(config, items):
    """Mark the tests listed in tests/slow.py ``slow``: `make test` leaves them out, `make test-all` runs them
    (docs/testing.md). Marks only: the tests' own files are not edited."""
    from tests.slow import SLOW
    for item in items:
        if item.nodeid in SLOW or item.nodeid.split("[")[0] in SLOW:
            item.add_marker(pytest.mark.slow)
