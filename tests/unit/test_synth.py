"""`fpga-flow synth` without vendor tools: the tcl we generate, report parsing, the missing-tool path,
and the whole command against a fake `vitis_hls` / `vivado` that write hand-written reports."""

from __future__ import annotations

import contextlib
import io
import json
import re
import shutil
import sys
from pathlib import Path

import pytest

from fpga_flow import FlowError, cli
from fpga_flow.backends.hls4ml import synth
from fpga_flow.codegen import BuildPlan

pytestmark = pytest.mark.unit

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "vitis_hls"
XML = FIXTURES / "mynet_csynth.xml"
RPT = FIXTURES / "vivado_synth.rpt"


# ---------------------------------------------------------------- the generated tcl

@pytest.mark.parametrize("part,clock,name", [("xc7z020clg400-1", 10.0, "myproject"),
                                             ("xcku115-flvb2104-2-i", 3.3, "jet_tagger")])
def test_tcl_carries_the_config(part, clock, name):
    s = synth.SynthSettings(project_name=name, top=name, part=part, clock_ns=clock)
    plan = synth.render_tcl(s)
    tcl = plan[synth.TCL].decode()
    lines = [ln.strip() for ln in tcl.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    assert f"set_part {part}" in lines
    assert f"create_clock -period {clock:g} -name default" in lines
    assert f"set_top {name}" in lines
    assert f"open_project -reset {name}_prj" in lines
    assert any(ln.startswith(f"add_files ../hls/firmware/{name}.cpp ") for ln in lines)
    assert "set_clock_uncertainty 27% default" in lines
    assert "csynth_design" in lines and lines[-1] == "exit"
    assert lines.index("set_part " + part) < lines.index("csynth_design")
    viv = plan[synth.VIVADO_TCL].decode()
    assert f"synth_design -top {name} -part {part}" in viv
    assert f"add_files {name}_prj/solution1/syn/verilog" in viv
    assert f"report_utilization -file {synth.VIVADO_UTIL}" in viv


def test_settings_refuse_what_cannot_go_into_tcl():
    for bad in ({"part": "xc7z020; exec rm"}, {"project_name": "a b"}, {"top": "1x"}, {"clock_ns": 0},
                {"clock_uncertainty": "[exec x]"}, {"hls_dir": "../h ls"}):
        with pytest.raises(FlowError):
            synth.SynthSettings(**bad)


def test_command_forms():
    assert synth.hls_command(Path("/opt/x/bin/vitis-run"), "a.tcl")[1:] == ["--mode", "hls", "--tcl", "a.tcl"]
    assert synth.hls_command(Path("/opt/x/bin/vitis_hls"), "a.tcl")[1:] == ["-f", "a.tcl"]
    assert synth.vivado_command(Path("vivado"), "v.tcl")[-2:] == ["-source", "v.tcl"]


# ---------------------------------------------------------------- report parsing

def test_parse_csynth_xml_fixture():
    r = synth.parse_csynth_xml(XML)
    assert r["top"] == "mynet" and r["version"] == "2023.2"
    assert r["target_clock_ns"] == 5.0 and r["estimated_clock_ns"] == 4.0 and r["fmax_mhz"] == 250.0
    assert r["latency_cycles"] == {"min": 1200, "max": 1300}
    assert r["latency_ns"] == {"min": 6000.0, "max": 6500.0}  # "6.000 us", "6.500 us"
    assert r["interval_cycles"] == {"min": 800, "max": 1000}
    assert r["throughput_per_s"] == pytest.approx(1e9 / (1000 * 5.0))
    assert r["resources"] == {"bram18k": 10, "dsp": 9, "ff": 4160, "lut": 10400, "uram": 0}
    assert r["available"]["lut"] == 20800 and r["available"]["bram18k"] == 100
    assert r["utilisation_pct"] == {"bram18k": 10.0, "dsp": 10.0, "ff": 10.0, "lut": 50.0}  # URAM: none available


def test_parse_csynth_without_real_time_and_undef_latency(tmp_path):
    text = XML.read_text()
    text = re.sub(r"\s*<(Best|Average|Worst)-caseRealTimeLatency>.*?</\1-caseRealTimeLatency>", "", text)
    text = text.replace("<Worst-caseLatency>1300<", "<Worst-caseLatency>undef<")
    p = tmp_path / "x_csynth.xml"
    p.write_text(text)
    r = synth.parse_csynth_xml(p)
    assert r["latency_ns"] == {"min": 1200 * 5.0, "max": None}
    assert r["latency_cycles"]["max"] is None


def test_parse_errors_name_the_file(tmp_path):
    bad = tmp_path / "bad_csynth.xml"
    bad.write_text("<profile><UserAssignments/></profile>")
    with pytest.raises(FlowError, match="bad_csynth.xml"):
        synth.parse_csynth_xml(bad)
    bad.write_text("not xml")
    with pytest.raises(FlowError, match="bad_csynth.xml"):
        synth.parse_csynth_xml(bad)
    (tmp_path / "u.rpt").write_text("no table here\n")
    with pytest.raises(FlowError, match="utilisation table"):
        synth.parse_vivado_utilisation(tmp_path / "u.rpt")


def test_parse_vivado_utilisation_fixture():
    r = synth.parse_vivado_utilisation(RPT)
    assert r["resources"]["lut"] == 5200 and r["available"]["lut"] == 20800
    assert r["resources"]["ff"] == 4160 and r["resources"]["dsp"] == 9
    assert r["resources"]["bram_tiles"] == 2.5 and r["resources"]["bram18k"] == 5  # a 36 Kb tile = 2 RAMB18
    assert r["utilisation_pct"]["lut"] == 25.0 and r["utilisation_pct"]["dsp"] == 10.0


def test_our_parsers_agree_with_hls4ml_on_the_fixtures(tmp_path, capsys):
    """The fixtures are in the layout hls4ml's own parser expects, and both parsers read the same figures."""
    from hls4ml.report import parse_vivado_report
    (tmp_path / "project.tcl").write_text('set project_name "mynet"\nset backend "vitis"\n')
    prj = tmp_path / "mynet_prj"
    (prj / "solution1" / "syn" / "report").mkdir(parents=True)
    (prj / "hls.app").write_text('<project xmlns="x"><solutions><solution name="solution1"/></solutions></project>')
    shutil.copy(XML, prj / "solution1" / "syn" / "report" / "mynet_csynth.xml")
    shutil.copy(RPT, tmp_path / "vivado_synth.rpt")
    theirs = parse_vivado_report(str(tmp_path))
    ours, viv = synth.parse_csynth_xml(XML), synth.parse_vivado_utilisation(RPT)
    c = theirs["CSynthesisReport"]
    assert int(c["BestLatency"]) == ours["latency_cycles"]["min"]
    assert int(c["WorstLatency"]) == ours["latency_cycles"]["max"]
    assert int(c["IntervalMin"]) == ours["interval_cycles"]["min"]
    assert int(c["IntervalMax"]) == ours["interval_cycles"]["max"]
    assert float(c["EstimatedClockPeriod"]) == ours["estimated_clock_ns"]
    for tag, key in (("LUT", "lut"), ("FF", "ff"), ("DSP", "dsp"), ("BRAM_18K", "bram18k")):
        assert int(c[tag]) == ours["resources"][key]
        assert int(c["Available" + tag]) == ours["available"][key]
    v = theirs["VivadoSynthReport"]
    assert int(v["LUT"]) == viv["resources"]["lut"] and int(v["FF"]) == viv["resources"]["ff"]
    assert int(v["DSP48E"]) == viv["resources"]["dsp"]


# ---------------------------------------------------------------- the command

def _project(root: Path, model: str = "tiny", name: str = "mynet", part: str = "xc7a35tcpg236-1",
             clock: float = 5.0, report: bool = True) -> Path:
    """A generated-looking build: hls/ with hls4ml's project.tcl, plan_info with its digest, report.json."""
    build = root / model
    fw = build / "hls" / "firmware"
    fw.mkdir(parents=True)
    (fw / f"{name}.cpp").write_text(f"void {name}() {{}}\n")
    (build / "hls" / "project.tcl").write_text(
        f'variable project_name\nset project_name "{name}"\nvariable backend\nset backend "vitis"\n'
        f'variable part\nset part "{part}"\nvariable clock_period\nset clock_period {clock}\n'
        'variable clock_uncertainty\nset clock_uncertainty 12.5%\nvariable maximum_size\nset maximum_size 2048\n')
    digest = BuildPlan.from_dir(build / "hls").digest()
    (build / "plan_info.json").write_text(json.dumps({"digest": digest, "layers": []}))
    if report:
        (build / "report.json").write_text(json.dumps({"model": model, "digest": digest,
                                                       "hw": {"part": part, "estimate": {"kind": "estimate"}}}))
    return build


FAKE_VITIS = r'''#!{python}
"""Stands in for vitis_hls / vitis-run: checks the tcl it is given and writes a fixture report."""
import json, os, re, shutil, sys
args = sys.argv[1:]
tcl = args[args.index("-f") + 1] if "-f" in args else args[args.index("--tcl") + 1]
text = open(tcl).read()
json.dump({{"argv0": os.path.basename(sys.argv[0]), "args": args, "cwd": os.getcwd()}}, open("fake_call.json", "w"))
src = re.search(r"^add_files (\S+)", text, re.M).group(1)
if not os.path.isfile(src):
    print(f"ERROR: [HLS 200-70] Cannot find the source file {{src}}"); sys.exit(1)
prj = re.search(r"^open_project -reset (\w+)", text, re.M).group(1)
sol = re.search(r'^open_solution -reset "(\w+)"', text, re.M).group(1)
top = re.search(r"^set_top (\w+)", text, re.M).group(1)
print("INFO: [HLS 200-10] Running fake vitis_hls")
print("***** C SYNTHESIS: fake *****")
if os.environ.get("FAKE_EXIT"):
    print("ERROR: [HLS 214-124] fake synthesis failure"); sys.exit(int(os.environ["FAKE_EXIT"]))
out = os.path.join(prj, sol, "syn", "report")
os.makedirs(out)
shutil.copy(os.environ["FAKE_CSYNTH_XML"], os.path.join(out, top + "_csynth.xml"))
os.makedirs(os.path.join(prj, sol, "syn", "verilog"))
'''

FAKE_VIVADO = r'''#!{python}
import os, re, shutil, sys
args = sys.argv[1:]
text = open(args[args.index("-source") + 1]).read()
rtl = re.search(r"^add_files (\S+)", text, re.M).group(1)
if not os.path.isdir(rtl):
    print("ERROR: [Vivado 12-172] no such directory " + rtl); sys.exit(1)
shutil.copy(os.environ["FAKE_VIVADO_RPT"], re.search(r"report_utilization -file (\S+)", text).group(1))
print("***** VIVADO SYNTHESIS DONE *****")
'''


@pytest.fixture
def fake_tools(tmp_path, monkeypatch):
    bindir = tmp_path / "bin"
    bindir.mkdir()

    def install(name: str, body: str) -> Path:
        p = bindir / name
        p.write_text(body.format(python=sys.executable))
        p.chmod(0o755)
        return p

    monkeypatch.setenv("PATH", str(bindir))
    monkeypatch.delenv("VITIS_HLS", raising=False)
    monkeypatch.delenv("VIVADO", raising=False)
    monkeypatch.setenv("FAKE_CSYNTH_XML", str(XML))
    monkeypatch.setenv("FAKE_VIVADO_RPT", str(RPT))
    return install


def _cli(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = cli.main(argv)
    return rc, out.getvalue(), err.getvalue()


def _tree(root: Path) -> dict:
    return {p.relative_to(root).as_posix(): p.stat().st_mtime_ns for p in sorted(root.rglob("*"))}


@pytest.mark.parametrize("vivado", [False, True])
def test_missing_tools_exit_2_and_run_nothing(tmp_path, monkeypatch, fake_tools, vivado):
    build_root = tmp_path / "build"
    _project(build_root)
    if vivado:  # Vitis HLS present, Vivado asked for but absent: still nothing may run
        fake_tools("vitis_hls", FAKE_VITIS)
    before = _tree(tmp_path)
    rc, out, err = _cli(["synth", "--model", "tiny", "--build-dir", str(build_root), "-q"]
                        + (["--vivado"] if vivado else []))
    assert rc == 2
    assert "nothing was run" in err
    missing = err.split("nothing was run")[0]
    assert missing.startswith("fpga-flow: error: " + ("Vivado" if vivado else "Vitis HLS") + " not found")
    assert ("Vitis HLS" in missing) is not vivado  # only what is really missing is named
    assert ("VIVADO" if vivado else "VITIS_HLS") in err and "settings64.sh" in err
    assert _tree(tmp_path) == before  # no synth/ directory, no log, no report change
    assert not (tmp_path / "bin" / "fake_call.json").exists()


def test_missing_tool_also_says_when_there_is_no_project(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("VITIS_HLS", raising=False)
    rc, _, err = _cli(["synth", "--model", "nothing_here", "--build-dir", str(tmp_path / "build")])
    assert rc == 2 and "make hls MODEL=nothing_here" in err
    assert not (tmp_path / "build").exists()


def test_vitis_hls_override_that_is_not_executable(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setenv("VITIS_HLS", str(tmp_path / "no_such_vitis_hls"))
    rc, _, err = _cli(["synth", "--model", "tiny", "--build-dir", str(tmp_path / "build")])
    assert rc == 2 and "nothing was run" in err


@pytest.mark.parametrize("tool", ["vitis_hls", "vitis-run"])
def test_synth_end_to_end_with_a_fake_tool(tmp_path, fake_tools, tool):
    build = _project(tmp_path / "build")
    fake_tools(tool, FAKE_VITIS)
    rc, out, err = _cli(["synth", "--model", "tiny", "--build-dir", str(tmp_path / "build")])
    assert rc == 0, err
    work = build / "synth"
    call = json.loads((work / "fake_call.json").read_text())
    assert Path(call["cwd"]).resolve() == work.resolve()
    assert call["args"] == (["-f", synth.TCL] if tool == "vitis_hls" else ["--mode", "hls", "--tcl", synth.TCL])
    tcl = (work / synth.TCL).read_text()  # defaults came from the project's project.tcl
    assert "set_part xc7a35tcpg236-1" in tcl and "create_clock -period 5 -name default" in tcl
    assert "set_clock_uncertainty 12.5% default" in tcl and "-maximum_size 2048" in tcl
    assert "C synthesis with " + tool in err and "***** C SYNTHESIS: fake *****" in err  # progress
    assert "Running fake vitis_hls" in (work / synth.HLS_LOG).read_text()  # the tool's log is kept
    rep = json.loads((build / "report.json").read_text())
    v = rep["hw"]["vendor"]
    assert rep["hw"]["estimate"] == {"kind": "estimate"} and rep["model"] == "tiny"  # the rest is kept
    assert v["tool"] == tool and v["part"] == "xc7a35tcpg236-1" and v["clock_ns"] == 5.0
    c = v["csynth"]
    assert c["latency_cycles"] == {"min": 1200, "max": 1300} and c["interval_cycles"] == {"min": 800, "max": 1000}
    assert c["resources"]["lut"] == 10400 and c["utilisation_pct"]["lut"] == 50.0
    assert c["report"] == "synth/mynet_prj/solution1/syn/report/mynet_csynth.xml"
    assert v["vivado"] is None
    assert json.loads((work / "vendor.json").read_text()) == v
    assert "latency 1200-1300 cycles" in out and "LUT 10400 (50.0%)" in out
    assert not (build / "hls" / "mynet_prj").exists()  # the verified project is only read


def test_synth_flags_override_the_project(tmp_path, fake_tools):
    build = _project(tmp_path / "build")
    fake_tools("vitis_hls", FAKE_VITIS)
    rc, _, err = _cli(["synth", "--model", "tiny", "--build-dir", str(tmp_path / "build"), "-q",
                       "--part", "xc7z020clg400-1", "--clock-ns", "4"])
    assert rc == 0, err
    tcl = (build / "synth" / synth.TCL).read_text()
    assert "set_part xc7z020clg400-1" in tcl and "create_clock -period 4 -name default" in tcl
    assert json.loads((build / "report.json").read_text())["hw"]["vendor"]["clock_ns"] == 4.0


def test_synth_with_vivado(tmp_path, fake_tools):
    build = _project(tmp_path / "build")
    fake_tools("vitis_hls", FAKE_VITIS)
    fake_tools("vivado", FAKE_VIVADO)
    rc, out, err = _cli(["synth", "--model", "tiny", "--build-dir", str(tmp_path / "build"), "-q", "--vivado"])
    assert rc == 0, err
    v = json.loads((build / "report.json").read_text())["hw"]["vendor"]
    assert v["vivado"]["resources"]["lut"] == 5200 and v["vivado"]["resources"]["bram18k"] == 5
    assert v["logs"] == ["synth/vitis_hls.log", "synth/vivado.log"]
    assert "Vivado synthesis: LUT 5200" in out
    md = synth.markdown(json.loads((build / "report.json").read_text())["hw"])
    assert any(ln.startswith("| Vivado synthesis | 5200 (25.0%) | 4160 (10.0%) | 9 (10.0%) | 5") for ln in md)


def test_tool_failure_is_exit_1_pointing_at_the_log(tmp_path, fake_tools, monkeypatch):
    build = _project(tmp_path / "build")
    fake_tools("vitis_hls", FAKE_VITIS)
    monkeypatch.setenv("FAKE_EXIT", "3")
    before = (build / "report.json").read_text()
    rc, _, err = _cli(["synth", "--model", "tiny", "--build-dir", str(tmp_path / "build"), "-q"])
    assert rc == 1
    assert "exit status 3" in err and str(build / "synth" / synth.HLS_LOG) in err
    assert "fake synthesis failure" in err  # the tool's ERROR line is quoted
    assert (build / "report.json").read_text() == before


def test_modified_project_is_refused(tmp_path, fake_tools):
    build = _project(tmp_path / "build")
    fake_tools("vitis_hls", FAKE_VITIS)
    (build / "hls" / "firmware" / "mynet.cpp").write_text("// edited by hand\n")
    rc, _, err = _cli(["synth", "--model", "tiny", "--build-dir", str(tmp_path / "build"), "-q"])
    assert rc == 1 and "modified after it was generated" in err
    assert not (build / "synth").exists()


def test_no_project_with_tool_present(tmp_path, fake_tools):
    fake_tools("vitis_hls", FAKE_VITIS)
    rc, _, err = _cli(["synth", "--model", "tiny", "--build-dir", str(tmp_path / "build"), "-q"])
    assert rc == 1 and "make hls MODEL=tiny" in err


def test_markdown_of_vendor_section():
    hw = {"vendor": {"tool": "vitis_hls", "part": "p", "clock_ns": 5.0, "logs": ["synth/vitis_hls.log"],
                     "csynth": synth.parse_csynth_xml(XML), "vivado": None}}
    md = "\n".join(synth.markdown(hw))
    assert "| Vitis HLS C synthesis | 10400 (50.0%) | 4160 (10.0%) | 9 (10.0%) | 10 (10.0%) |" in md
    assert synth.markdown({}) == []


def test_vendor_results_survive_a_rewritten_report_only_for_the_same_project(tmp_path, fake_tools):
    build = _project(tmp_path / "build")
    fake_tools("vitis_hls", FAKE_VITIS)
    assert _cli(["synth", "--model", "tiny", "--build-dir", str(tmp_path / "build"), "-q"])[0] == 0
    digest = json.loads((build / "plan_info.json").read_text())["digest"]
    v = synth.load_vendor(build, digest)
    assert v is not None and v["csynth"]["resources"]["lut"] == 10400
    assert synth.load_vendor(build, "0" * 64) is None  # another project: its synthesis does not apply
    assert synth.load_vendor(tmp_path, digest) is None
