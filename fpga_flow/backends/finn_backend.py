"""The ``finn`` entry of the backend registry.

FINN does not fit the hls4ml backend's contract (``make_plan`` -> an HLS project written by us, checked by
g++ C simulation): it runs its own ordered steps (``fpga_flow/finn_flow.py``), verifies FINN's Python
execution at every stage and ends with FINN's estimates. ``api.build`` routes ``backend="finn"`` here.
"""

from __future__ import annotations

from ..errors import FlowError


def build(*args, **kwargs) -> dict:
    """See :func:`fpga_flow.finn_flow.build`."""
    from ..finn_flow import build as _build
    return _build(*args, **kwargs)


def make_plan(model, cfg):
    raise FlowError("the finn backend runs its own flow (fpga_flow.finn_flow), not the hls4ml steps: build with "
                    "`fpga-flow hls --backend finn` or fpga_flow.build(..., config=BuildConfig(backend='finn'))")
