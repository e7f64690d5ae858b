"""The hls4ml backend: QONNX -> hls4ml (Vitis) HLS project with exact types and our kernels, verified by
g++ C simulation (``==`` the golden), costed by our estimate, synthesized by Vitis HLS where installed."""

from .. import Backend
from . import report, steps


def _new_state(cfg) -> steps.Hls4mlState:
    return steps.Hls4mlState()


BACKEND = Backend(
    name="hls4ml", about="hls4ml (Vitis HLS) project, g++ C simulation == golden, resource estimate",
    suffix="", steps=tuple(steps.STEPS), new_state=_new_state, restore=steps.restore,
    reverify=tuple(steps.REVERIFY), summary=report.summary)
