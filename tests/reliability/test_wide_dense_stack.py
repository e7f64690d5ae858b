"""Issue #15 item 4, the default-run cover of tests/reliability/test_wide_dense_csim.py (which builds and runs a
784-3000-2 MLP, minutes of g++: it is in `make test-all`, see docs/testing.md). What makes the wide layer run:
the simulation thread's stack is sized from the project's own layer shapes and handed to the compiler."""

from __future__ import annotations

import pytest

from fpga_flow.backends.hls4ml import csim
from tests.conftest import needs_gxx

pytestmark = pytest.mark.unit

PARAMETERS_H = """
struct config2_mult : nnet::dense_config {
    static const unsigned n_in = 784;
    static const unsigned n_out = 4096;
    static const unsigned reuse_factor = 1;
};

struct config4 : nnet::dense_config {
    static const unsigned n_in = 4096;
    static const unsigned n_out = 2;
};
"""


def _project(tmp_path, text: str):
    fw = tmp_path / "hls" / "firmware"
    fw.mkdir(parents=True)
    (fw / "parameters.h").write_text(text)
    (fw / "wide.cpp").write_text("// the design\n")
    return tmp_path / "hls"


def test_the_stack_holds_every_layers_products(tmp_path):
    """784x4096 + 4096x2 products at 32 bytes each above the floor: far past the 8 MB that overflowed."""
    got = csim.stack_bytes(_project(tmp_path, PARAMETERS_H))
    assert got == csim.STACK_FLOOR + csim.STACK_BYTES_PER_PRODUCT * (784 * 4096 + 4096 * 2)
    assert got > 8 * 784 * 4096  # two 4-byte accumulators per product, the overflow of the report


def test_a_project_without_wide_layers_gets_the_floor(tmp_path):
    assert csim.stack_bytes(_project(tmp_path, "struct config2 : nnet::dense_config {\n};\n")) == csim.STACK_FLOOR


@needs_gxx
def test_the_compiler_is_given_that_stack(tmp_path):
    project = _project(tmp_path, PARAMETERS_H)
    cmd = csim.compile_command(project, tmp_path / "tb_batch", "stock")
    assert f"-DFPGA_FLOW_TB_STACK_BYTES={csim.stack_bytes(project)}UL" in cmd
