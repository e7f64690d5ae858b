"""Parameters and multiply-accumulates of a model, measured on the model itself.

Parameters: ``numel`` of every parameter. MACs: forward hooks on every ``nn.Conv2d`` and
``nn.Linear`` (Brevitas ``QuantConv2d``/``QuantLinear`` are subclasses) over one input sample;
a conv does output elements x (in_channels / groups) x kh x kw, a linear in x out.

``python -m fpga_flow.cost MODEL`` prints both for a zoo model's float model, its quantized
model, and its ``standard_twin()`` when the model file defines one (``dwsep``).
"""

from __future__ import annotations

import argparse
import sys

import torch
from torch import nn


@torch.no_grad()
def measure(model: nn.Module, x: torch.Tensor) -> dict:
    """``{'params', 'weights', 'macs', 'layers': {name: macs}}`` of ``model`` for one sample ``x`` (batch 1).

    ``params`` counts every parameter (a Brevitas model's quantizer scales included);
    ``weights`` only the weights and biases of its conv and linear layers.
    """
    if x.shape[0] != 1:
        raise ValueError(f"measure() counts MACs for one sample; got a batch of {x.shape[0]}")
    macs: dict[str, int] = {}
    weights = 0
    hooks = []

    def conv_hook(name: str):
        def hook(mod: nn.Conv2d, inp, out) -> None:
            kh, kw = mod.kernel_size
            macs[name] = int(out.numel()) * (mod.in_channels // mod.groups) * kh * kw
        return hook

    def linear_hook(name: str):
        def hook(mod: nn.Linear, inp, out) -> None:
            macs[name] = mod.in_features * mod.out_features
        return hook

    for name, m in model.named_modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            hooks.append(m.register_forward_hook(conv_hook(name) if isinstance(m, nn.Conv2d) else linear_hook(name)))
            weights += m.weight.numel() + (m.bias.numel() if m.bias is not None else 0)
    was = model.training
    try:
        model.eval()(x)
    finally:
        model.train(was)
        for h in hooks:
            h.remove()
    return {"params": sum(p.numel() for p in model.parameters()), "weights": weights,
            "macs": sum(macs.values()), "layers": macs}


def zoo_costs(name: str, data_path: str | None = None) -> dict[str, dict]:
    """Costs of a zoo model's float and W4A4 models (and standard twin) on the first MNIST test image."""
    from . import data, zoo
    mod = zoo.load(name)
    x = torch.from_numpy(data.as_input(data.to_unit(data.load("test", data_path).images[:1]), mod.INPUT_SHAPE))
    torch.manual_seed(0)
    out = {"float": measure(mod.float_model(), x), "quant": measure(mod.quant_model(4, 4, 8), x)}
    if hasattr(mod, "standard_twin"):
        out["standard_twin"] = measure(mod.standard_twin(), x)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m fpga_flow.cost", description=__doc__.splitlines()[0])
    p.add_argument("model")
    p.add_argument("--data", default=None, help="folder with the MNIST IDX files")
    a = p.parse_args(argv)
    for kind, c in zoo_costs(a.model, a.data).items():
        print(f"{a.model} {kind}: params {c['params']:,} (conv/linear weights+biases {c['weights']:,}), "
              f"MACs {c['macs']:,}")
        for layer, m in c["layers"].items():
            print(f"    {layer:24s} {m:>10,}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
