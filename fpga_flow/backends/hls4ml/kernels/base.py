"""What every kernel of ours shares: its registration in hls4ml (IR layer, templates, header)."""

from __future__ import annotations

from pathlib import Path

BACKENDS = ("Vitis",)  # hls4ml backends our kernels have templates for


def register_kernel(name: str, layer_cls, templates, header: Path) -> None:
    """One kernel of ours in hls4ml: the IR layer class, its templates on our backends, and its header
    (copied into every project's nnet_utils/ by hls4ml's writer). """
    from hls4ml.backends import get_backend
    from hls4ml.model.layers import register_layer
    register_layer(name, layer_cls)
    for backend_name in BACKENDS:
        backend = get_backend(backend_name)
        for template in templates:
            backend.register_template(template)
        backend.register_source(Path(header))
