"""The finn backend's entry points that need no FINN: registry, clear errors, the missing-package message.

These run with or without the finn extra (they monkeypatch what they need).
"""

from __future__ import annotations

import pytest
from torch import nn

from fpga_flow import BuildConfig, FlowError, api, backends

pytestmark = pytest.mark.finn


def test_registry_has_finn_and_lists_it():
    b = backends.get("finn")
    assert b.name == "finn" and b.suffix == "_finn" and callable(b.require)
    assert [s.__name__ for s in b.steps][:2] == ["step_export", "step_clean"]  # the shared front steps
    assert b.steps[-1].__name__ == "step_finn_report" and b.reverify is None and b.restore is None
    with pytest.raises(FlowError, match="available: hls4ml, finn, rtl"):
        backends.get("vivado")


def test_missing_finn_says_how_to_install(monkeypatch):
    import importlib.metadata as md

    from fpga_flow.backends.finn import compat as finn_compat

    def missing(dist):
        raise md.PackageNotFoundError(dist)
    monkeypatch.setattr(md, "version", missing)
    with pytest.raises(FlowError, match=r"finn-plus 1\.6\.1.*not installed.*--no-deps finn-plus==1\.6\.1") as e:
        finn_compat.require_finn()
    assert e.value.exit_code == 2


def test_a_wrong_finn_version_is_refused(monkeypatch):
    import importlib.metadata as md

    from fpga_flow.backends.finn import compat as finn_compat
    monkeypatch.setattr(md, "version", lambda dist: "1.5.0")
    monkeypatch.setattr(finn_compat.importlib, "import_module", lambda name: None)
    with pytest.raises(FlowError, match="verified against finn-plus 1.6.1, found 1.5.0"):
        finn_compat.require_finn()


@pytest.mark.parametrize("kw,match", [(dict(reverify=True), "does not apply to the finn backend"),
                                      (dict(start_step="clean"), "not supported by the finn backend")])
def test_finn_refuses_what_it_has_not(kw, match, tmp_path):
    cfg = BuildConfig(model="m", backend="finn", n_images=2)
    with pytest.raises(FlowError, match=match):
        api.build(nn.Identity(), (4,), name="m", out_dir=tmp_path, config=cfg, progress=False, **kw)
    assert not any(tmp_path.iterdir())


def test_the_hls4ml_report_shows_finn_estimates_of_the_same_graph_only(tmp_path):
    """report.json of an hls4ml build carries hw.finn only from a FINN build of the byte-identical graph."""
    import json

    from onnx import TensorProto, helper, save

    from types import SimpleNamespace

    from fpga_flow import BuildConfig, report

    def graph(path, op):
        g = helper.make_graph([helper.make_node(op, ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])])
        save(helper.make_model(g), str(path))

    finn = {"finn": "finn-plus 1.6.1", "options": {"target_fps": 10000, "clock_ns": 10.0, "part": "xc7z020clg400-1"},
            "estimate": {"max_cycles": 100, "throughput_fps": 1e6, "critical_path_cycles": 300,
                         "total": {"LUT": 1234.0, "BRAM_18K": 5.0, "DSP": 2.0}}}
    (tmp_path / "m_finn").mkdir()
    (tmp_path / "m_finn" / "report.json").write_text(json.dumps({"hw": {"finn": finn}}))
    graph(tmp_path / "m_finn" / "10_clean.onnx", "Relu")
    graph(tmp_path / "same.onnx", "Relu")
    graph(tmp_path / "other.onnx", "Sigmoid")
    def siblings(name: str, clean: str) -> dict:  # an hls4ml build <name> whose cleaned graph is <clean>
        work = tmp_path / f"work_{name}_{clean}"
        work.mkdir()
        (work / "10_clean.onnx").write_bytes((tmp_path / clean).read_bytes())
        state = SimpleNamespace(name=name, cfg=BuildConfig(model="m"), out_dir=tmp_path / name,
                                path=lambda rel: work / rel)
        return report.siblings(state)

    assert siblings("m", "same.onnx") == {"finn": finn}
    assert siblings("m", "other.onnx") == {}
    assert siblings("absent", "same.onnx") == {}
    from fpga_flow.backends.finn import flow as finn_flow
    md = "\n".join(finn_flow.markdown_section(finn, "m"))
    assert "1,234" in md and "1,000,000 frames/s" in md and "make hls MODEL=m BACKEND=finn" in md
    assert finn_flow.markdown_section(None, "m") == []
