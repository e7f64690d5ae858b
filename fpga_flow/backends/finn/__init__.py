"""The FINN backend: FINN's own transformations (streamline, hardware layers, folding for a target fps),
FINN's Python execution ``==`` the golden after every stage, FINN's analytic estimates (docs/finn.md)."""

from .. import Backend
from . import compat, flow
from . import report as finn_report

BACKEND = Backend(
    name="finn", about="FINN (finn-plus): every stage's Python execution == golden, FINN's estimates",
    suffix="_finn", steps=tuple(flow.STEPS), new_state=flow.new_state, require=compat.require_finn,
    restore=None, reverify=None, markdown_section=flow.markdown_section, summary=finn_report.summary)
