"""The side-by-side cost table: RTL rows read by column name from a bench page, every column labelled with how
its figure was obtained, refusals and not-run models shown as such."""

from __future__ import annotations

import pytest

from fpga_flow import cost_table

pytestmark = pytest.mark.unit

RTL_MD = """# bench

| model | images `==` golden (Verilator) | folding (PE,SIMD per MVU) | cycles/image (sim) | latency cycles (sim) | images/s at 100 MHz | LUT | FF | CARRY | DSP | BRAM18 | fits xc7z020 | ECP5 Fmax MHz (nextpnr) |
|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|
| mlp_tiny | 10,000/10,000 | fit: (2,1) | 831 | 1,344 | 120,337 | 741 | 613 | 146 | 2 | 3 | yes | 127.02 |

Text between tables.

| model | something else |
|---|---|
| convnet | 1 |
"""


def test_rtl_rows_are_read_by_column_name_from_the_first_table(tmp_path):
    p = tmp_path / "rtl.md"
    p.write_text(RTL_MD)
    rows = cost_table.rtl_rows(p)
    assert list(rows) == ["mlp_tiny"]  # the second table is not the measured one
    r = rows["mlp_tiny"]
    assert (r["fps"], r["lut"], r["ff"], r["dsp"], r["bram"], r["fmax"], r["cycles"]) == \
        ("120,337", "741", "613", "2", "3", "127.02", "831")
    assert cost_table.rtl_rows(tmp_path / "missing.md") == {}


def test_a_model_with_several_rtl_rows_is_read_by_its_first_word_first_row_first(tmp_path):
    """rtl.md labels extra design points ("convnet, multi-tap window"); the table takes the model's first row."""
    lines = RTL_MD.splitlines()
    row = next(i for i, line in enumerate(lines) if line.startswith("| mlp_tiny |"))
    other = lines[row].replace("| mlp_tiny |", "| mlp_tiny, another folding |").replace("120,337", "99,999")
    lines[row] = lines[row].replace("| mlp_tiny |", "| mlp_tiny (first design) |")
    p = tmp_path / "rtl.md"
    p.write_text("\n".join(lines[:row + 1] + [other] + lines[row + 1:]) + "\n")
    rows = cost_table.rtl_rows(p)
    assert list(rows) == ["mlp_tiny"] and rows["mlp_tiny"]["fps"] == "120,337"
    other = cost_table.rtl_other_rows(p)  # the later row is listed under the table, not lost
    assert [(label, r["fps"]) for label, r in other] == [("mlp_tiny, another folding", "99,999")]
    md = cost_table.markdown({}, 10, str(p), "today", "a machine", other)
    assert "- mlp_tiny, another folding: 99,999 images/s at 100 MHz (Verilator), 741 LUT (yosys)" in md


def test_table_labels_every_column_and_says_refused_and_not_run(tmp_path):
    p = tmp_path / "rtl.md"
    p.write_text(RTL_MD)
    rtl = cost_table.rtl_rows(p)
    finn = {"target_fps": 120337, "exact": "10/10", "cycles": 512, "fps": 195312.5, "latency_cycles": 900,
            "lut": 1158.0, "bram18k": 3.0, "dsp": 1.0, "utilisation_pct": {"lut": 2.2}, "fits": True, "folding": []}
    hls = {"exact": "10/10", "cycles": 10, "fps": 1e7, "latency_cycles": {"min": 30, "max": 37}, "lut": 60000,
           "ff": 22104, "dsp": 0, "bram18k": 0, "utilisation_pct": {"lut": 112.8}, "fits": False,
           "reuse_factors": {"Dense_MatMul_0": 1, "Dense_MatMul_1": 2}}
    rows = {"mlp_tiny": {"rtl": rtl["mlp_tiny"], "finn": finn, "hls4ml": hls},
            "mlp_bn": {"rtl": None, "finn": {"refused": "BatchNorm is not supported", "target_fps": 10000},
                       "hls4ml": dict(hls, fits=True)}}
    md = cost_table.markdown(rows, 10, "docs/bench/rtl.md", "today", "a machine")
    header = next(line for line in md.splitlines() if line.startswith("| model |"))
    cols = [c.strip() for c in header.strip("|").split("|")][1:]
    # every figure column says how it was obtained: measured by which tool, or whose estimate
    how = ("Verilator", "yosys", "nextpnr", "FINN's estimate", "our estimate", "(PE,SIMD)", "images `==`",
           "csim `==`")
    assert all(any(h in c for h in how) for c in cols), cols
    mlp_tiny = next(line for line in md.splitlines() if line.startswith("| mlp_tiny |"))
    assert "831 / 120,337" in mlp_tiny and "741 / 613 / 2 / 3" in mlp_tiny and "195,312" in mlp_tiny
    assert "**NO**" in mlp_tiny and "RF 1, 2" in mlp_tiny  # hls4ml over the part, said plainly
    mlp_bn = next(line for line in md.splitlines() if line.startswith("| mlp_bn |"))
    assert "not run" in mlp_bn and "refused: BatchNorm is not supported" in mlp_bn
    short = "\n".join(cost_table.short(rows))
    assert "| mlp_tiny | 120,337 / 741 | 195,312 / 1,158 | 10,000,000 / 60,000 (does NOT fit) |" in short
    assert "| mlp_bn | not run | refused |" in short


def test_render_keeps_the_date_and_machine_of_the_builds(tmp_path):
    """--render builds nothing: the table keeps the machine its FINN and hls4ml cells were measured on."""
    doc = tmp_path / "t.md"
    doc.write_text(cost_table.markdown({}, 100, "rtl.md", "2026-11-20", "Box A, 2 cores, Linux x86_64, Python 3.11",
                                       []))
    assert cost_table.kept_header(doc) == ("2026-11-20", "Box A, 2 cores, Linux x86_64, Python 3.11")
    assert cost_table.kept_header(tmp_path / "none.md") is None
