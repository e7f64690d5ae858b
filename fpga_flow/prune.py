"""Magnitude pruning of every Conv/Linear layer, made permanent, and shrinking of pruned channels.

Two methods, each applied with ``torch.nn.utils.prune`` so that fine-tuning keeps
the pruned weights at zero (a forward pre-hook multiplies ``weight_orig`` by a
fixed ``weight_mask``):

``unstructured``  L1 magnitude, per layer (every Conv/Linear loses ``amount`` of
                  its weights) or ``scope='global'`` (``amount`` of all their
                  weights, smallest first, wherever they are).
``structured``    L2 norm of whole output channels (rows of a Linear), per layer,
                  for every layer except the last (its outputs are the classes).
                  The bias of a pruned channel is masked too, so the channel's
                  output is exactly 0 and :func:`shrink` can delete it (and the
                  matching inputs of the next layer) without changing any output.

The seed's ``prune.l1_unstructured(model, 'weight', amount=0.2)`` names the
whole model, which has no ``weight``: a module must be named, hence the loop.

Why zeros survive quantization: the weight quantizers here are signed, with
zero-point 0 and a per-tensor scale computed from the *masked* weight Brevitas
is given (``StatsFromParameterScaling`` on the forward input), so a 0 weight
is the integer 0, and dropping all-zero channels leaves the scale unchanged.
"""

from __future__ import annotations

import copy
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import prune as tprune

from .errors import FlowError

METHODS = ("unstructured", "structured")
SCOPES = ("layer", "global")


def prunable_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Every Conv and Linear layer (Brevitas ones subclass them), in registration order."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Linear))]


def check_args(method: str | None, amount: float, scope: str = "layer") -> None:
    if method is None:
        return
    if method not in METHODS:
        raise FlowError(f"unknown pruning method {method!r}; valid: {', '.join(METHODS)}")
    if scope not in SCOPES:
        raise FlowError(f"unknown pruning scope {scope!r}; valid: {', '.join(SCOPES)}")
    if method == "structured" and scope == "global":
        raise FlowError("structured pruning is per layer only (scope='layer')")
    if not 0.0 < amount < 1.0:
        raise FlowError(f"pruning amount must be a fraction in (0, 1), got {amount}")


def apply(model: nn.Module, method: str, amount: float, scope: str = "layer") -> list[str]:
    """Attach pruning masks to ``model`` in place; returns the pruned layer names."""
    check_args(method, amount, scope)
    layers = prunable_layers(model)
    if not layers:
        raise FlowError(f"{type(model).__name__} has no Conv or Linear layer to prune")
    if method == "unstructured":
        if scope == "global":
            tprune.global_unstructured([(m, "weight") for _, m in layers],
                                       pruning_method=tprune.L1Unstructured, amount=amount)
        else:
            for _, m in layers:
                tprune.l1_unstructured(m, "weight", amount=amount)
        return [n for n, _ in layers]
    if len(layers) < 2:
        raise FlowError("structured pruning removes output channels of all but the last layer: "
                        f"{type(model).__name__} has only one Conv/Linear layer")
    for _, m in layers[:-1]:
        tprune.ln_structured(m, "weight", amount=amount, n=2, dim=0)
        if m.bias is not None:
            alive = m.weight_mask.flatten(1).amax(dim=1)
            tprune.custom_from_mask(m, "bias", mask=alive)
    return [n for n, _ in layers[:-1]]


def is_pruned(model: nn.Module) -> bool:
    return any(tprune.is_pruned(m) for _, m in prunable_layers(model))


def make_permanent(model: nn.Module) -> nn.Module:
    """``prune.remove`` every mask: the zeros are baked into plain ``weight``/``bias`` Parameters."""
    for _, m in prunable_layers(model):
        for name in ("weight", "bias"):
            if hasattr(m, name + "_mask"):
                tprune.remove(m, name)
    return model


def _int_weight(m: nn.Module) -> torch.Tensor | None:
    """The integer codes of a Brevitas layer's quantized weight (None for a float layer)."""
    if not hasattr(m, "quant_weight"):
        return None
    with torch.no_grad():
        qw = m.quant_weight()
    return (qw.value / qw.scale + qw.zero_point).round().to(torch.int64)


def sparsity(model: nn.Module) -> dict[str, dict]:
    """Per layer: weights, float zeros, integer-code zeros (quantized), and the layer's shape."""
    out = {}
    for n, m in prunable_layers(model):
        w = m.weight.detach()
        q = _int_weight(m)
        out[n] = {"shape": list(w.shape), "weights": w.numel(), "zero_weights": int((w == 0).sum()),
                  "zero_int_weights": None if q is None else int((q == 0).sum())}
    total = sum(v["weights"] for v in out.values())
    out["_total"] = {"weights": total, "zero_weights": sum(v["zero_weights"] for v in out.values()),
                     "zero_int_weights": sum(v["zero_int_weights"] or 0 for v in out.values())}
    return out


# -- shrinking: structured pruning that really removes channels ------------------------------------


def _forward_with_flatten_width(base: type) -> type:
    """The zoo ConvNet reshapes to a fixed 320 features (20 channels x 4 x 4); a shrunk
    twin must reshape to what its conv2 leaves. Same attribute names, so same state_dict keys."""
    need = ("inp", "conv1", "relu1", "conv2", "conv2_drop", "relu2", "fc1", "relu3", "drop", "fc2")

    class Shrunk(base):  # type: ignore[misc, valid-type]
        def logits(self, x: torch.Tensor) -> torch.Tensor:
            x = self.inp(x)
            x = self.relu1(F.max_pool2d(self.conv1(x), 2))
            x = self.relu2(F.max_pool2d(self.conv2_drop(self.conv2(x)), 2))
            x = x.reshape(x.shape[0], self.fc1.in_features)
            x = self.relu3(self.fc1(x))
            x = self.drop(x)
            return self.fc2(x)

    if not hasattr(base, "logits"):  # a base whose forward ends at fc2; otherwise its forward follows logits
        Shrunk.forward = Shrunk.logits

    Shrunk.__name__ = Shrunk.__qualname__ = "Shrunk" + base.__name__
    Shrunk._needs = need
    return Shrunk


_SHRUNK_CLASSES: dict[type, type] = {}


def _shrunk_class(model: nn.Module) -> type:
    base = type(model)
    if getattr(base, "_needs", None):  # already shrunk
        return base
    missing = [a for a in _forward_with_flatten_width(base)._needs if not hasattr(model, a)]
    if missing:
        raise FlowError(f"shrinking supports the zoo ConvNet topology only; {base.__name__} lacks "
                        f"{', '.join(missing)}. Use structured pruning without shrinking (zeroed channels).")
    if base not in _SHRUNK_CLASSES:
        _SHRUNK_CLASSES[base] = _forward_with_flatten_width(base)
    return _SHRUNK_CLASSES[base]


def _slice_inputs(m: nn.Module, prev: nn.Module, prev_out: int, keep: torch.Tensor) -> torch.Tensor:
    """Columns of ``m.weight`` that read the kept outputs of ``prev`` (``prev_out`` of them before
    slicing; conv->linear: channel-major flatten, so each channel owns a block of columns)."""
    w = m.weight.data
    if isinstance(m, nn.Linear) and not isinstance(prev, nn.Linear):
        per = m.in_features // prev_out
        if per * prev_out != m.in_features:
            raise FlowError(f"cannot map {m.in_features} inputs onto {prev_out} channels")
        idx = (keep[:, None] * per + torch.arange(per)[None, :]).flatten()
        return w[:, idx]
    return w[:, keep]


def _set_width(m: nn.Module, out: int | None = None, inp: int | None = None) -> None:
    if isinstance(m, nn.Linear):
        if out is not None:
            m.out_features = out
        if inp is not None:
            m.in_features = inp
    else:
        if out is not None:
            m.out_channels = out
        if inp is not None:
            m.in_channels = inp


def _narrowed(model: nn.Module, keep: dict[str, torch.Tensor]) -> nn.Module:
    """A copy of ``model`` keeping, for each named layer, the output channels in ``keep[name]``."""
    if is_pruned(model):
        raise FlowError("make the pruning permanent (make_permanent) before shrinking")
    new = copy.deepcopy(model)
    new.__class__ = _shrunk_class(model)
    layers = prunable_layers(new)
    prev = None
    for name, m in layers:
        w = m.weight.data
        b = None if m.bias is None else m.bias.data
        out_before = int(w.shape[0])
        if prev is not None and prev[0] in keep:
            w = _slice_inputs(m, prev[1], prev[2], keep[prev[0]])
            _set_width(m, inp=int(w.shape[1]) if isinstance(m, nn.Linear) else len(keep[prev[0]]))
        if name in keep:
            w = w[keep[name]]
            b = None if b is None else b[keep[name]]
            _set_width(m, out=len(keep[name]))
        m.weight = nn.Parameter(w.clone().contiguous())
        if b is not None:
            m.bias = nn.Parameter(b.clone().contiguous())
        prev = (name, m, out_before)
    return new


def widths(model: nn.Module) -> dict[str, int]:
    """Output width of every layer but the last (what :func:`narrow` needs to rebuild the shape)."""
    layers = prunable_layers(model)
    return {n: int(m.weight.shape[0]) for n, m in layers[:-1]}


def narrow(model: nn.Module, widths_: dict[str, int]) -> nn.Module:
    """The *shape* of a shrunk model (first channels kept): for loading a shrunk checkpoint."""
    return _narrowed(model, {n: torch.arange(int(k)) for n, k in widths_.items()})


def shrink(model: nn.Module, probe: torch.Tensor | None = None) -> nn.Module:
    """Delete every output channel whose weights and bias are all zero (all but the last layer).

    The result is checked to compute exactly (``torch.equal``) what ``model`` computes on
    ``probe`` (default: seeded random inputs in [0, 1) shaped like the first layer's input).
    """
    layers = prunable_layers(model)
    keep = {}
    for name, m in layers[:-1]:
        alive = m.weight.detach().flatten(1).ne(0).any(dim=1)
        if m.bias is not None:
            alive |= m.bias.detach().ne(0)
        if not alive.any():
            raise FlowError(f"layer {name} has no channel left after pruning")
        keep[name] = alive.nonzero().flatten()
    new = _narrowed(model, keep)
    if probe is None:
        first = layers[0][1]
        ch = first.in_channels if hasattr(first, "in_channels") else first.in_features
        shape = (8, ch, 28, 28) if not isinstance(first, nn.Linear) else (8, ch)
        probe = torch.rand(shape, generator=torch.Generator().manual_seed(0))
    was = model.training
    model.eval()
    new.eval()
    with torch.no_grad():
        same = torch.equal(model(probe), new(probe))
    model.train(was)
    if not same:
        raise FlowError("the shrunk model does not compute what the pruned one does; please report this")
    return new

