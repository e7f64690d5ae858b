"""Brevitas' own example networks (``brevitas_examples.bnn_pynq``), built offline for the tests.

Random init (``pretrained=False``), then BatchNorm calibrated on a few seeded batches in train mode (the
running statistics are what eval mode uses; with the default mean 0 / var 1 most thresholds sit outside the
reachable accumulator range and the test would prove little), then eval. Inputs in [0, 1), as the bnn_pynq
training scripts feed them (``ToTensor``)."""

from __future__ import annotations

import torch

MNIST_NETS = ("TFC_2W2A", "TFC_1W1A", "SFC_1W2A", "LFC_1W1A")
CIFAR_NETS = ("CNV_1W1A", "CNV_2W2A")


def input_shape(name: str) -> tuple[int, ...]:
    return (3, 32, 32) if name.upper().startswith("CNV") else (1, 28, 28)


def make(name: str, seed: int = 0, batches: int = 4, batch: int = 64) -> torch.nn.Module:
    """``model_with_cfg(name, pretrained=False)`` with calibrated BatchNorm and TensorNorm, in eval mode."""
    from brevitas_examples.bnn_pynq.models import model_with_cfg

    torch.manual_seed(seed)
    model, _ = model_with_cfg(name, pretrained=False)
    g = torch.Generator().manual_seed(seed + 1)
    model.train()
    with torch.no_grad():
        for _ in range(batches):
            model(torch.rand((batch, *input_shape(name)), generator=g))
    return model.eval()
