"""Untrusted files and names: no code execution from data, no shell strings, clear errors, nothing touched."""

from __future__ import annotations

import os
import re

import pytest
import torch

from fpga_flow import BuildConfig, FlowError, api, fuzz
from tests.conftest import REPO

pytestmark = pytest.mark.unit

PACKAGE = REPO / "fpga_flow"
FORBIDDEN = {
    r"(?<![\w.])eval\(": "eval()",
    r"(?<![\w.])exec\(": "exec()",
    r"shell\s*=\s*True": "subprocess with shell=True",
    r"os\.system\(": "os.system()",
    r"os\.popen\(": "os.popen()",
    r"pickle\.loads?\(": "pickle.load()",
    r"yaml\.load\(": "yaml.load() (use safe_load)",
}


def _sources():
    return sorted(PACKAGE.rglob("*.py"))


def test_package_source_has_no_code_execution_from_data():
    hits = []
    for path in _sources():
        for n, line in enumerate(path.read_text().splitlines(), 1):
            code = line.split("#", 1)[0]
            for pat, what in FORBIDDEN.items():
                if re.search(pat, code):
                    hits.append(f"{path.relative_to(REPO)}:{n}: {what}: {line.strip()}")
    assert not hits, "\n".join(hits)


def test_every_torch_load_is_weights_only():
    calls = []
    for path in _sources():
        text = path.read_text()
        for m in re.finditer(r"torch\.load\(", text):
            depth, i = 1, m.end()
            while depth and i < len(text):  # the call's whole argument list, across lines
                depth += {"(": 1, ")": -1}.get(text[i], 0)
                i += 1
            calls.append((path.name, text[m.start():i]))
    assert calls, "expected the checkpoint loader to use torch.load"
    bad = [f"{name}: {call}" for name, call in calls if "weights_only=True" not in call]
    assert not bad, "\n".join(bad)


def test_checkpoint_with_code_is_refused_not_run(tmp_path):
    """A pickle that would run code on load is refused by weights_only=True (the payload never runs)."""
    from fpga_flow import train
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    path = tmp_path / "evil.pt"
    torch.save({"state_dict": Evil()}, path)
    with pytest.raises(FlowError) as e:
        train.load_checkpoint("convnet", path)
    assert str(path) in str(e.value)
    assert not marker.exists()


@pytest.mark.parametrize("name", ["my model", "a'b", 'a"b', "x$(id)", "a;rm -rf x", "br[0]", "名前", "../up"])
def test_bad_build_names_touch_nothing(name, tmp_path):
    spec = fuzz.ModelSpec("dense", (4,), 4, False, (fuzz.LayerSpec(2, 4, 4, "Int32Bias", "none"),), "linear")
    x, _ = fuzz.inputs(spec, 4)
    with pytest.raises(FlowError, match="not a valid identifier"):
        api.build(fuzz.make_module(spec, x), (4,), name=name, out_dir=tmp_path / "out", images=x, progress=False)
    assert not (tmp_path / "out").exists()


def test_build_artifact_that_is_not_an_onnx_model(tmp_path):
    """Resuming from a later step over a corrupt artifact: a FlowError naming the file, the build kept."""
    spec = fuzz.ModelSpec("dense", (4,), 4, False, (fuzz.LayerSpec(2, 4, 4, "Int32Bias", "none"),), "linear")
    x, _ = fuzz.inputs(spec, 4)
    module = fuzz.make_module(spec, x)
    cfg = BuildConfig(model="m", n_images=4, stock_check_images=0)
    api.build(module, (4,), name="m", out_dir=tmp_path, config=cfg, images=x, stop_step="clean", progress=False)
    assert not (tmp_path / "m").exists()  # a partial run never becomes the build (#15 item 2)
    onnx = tmp_path / "m.partial" / "00_export.onnx"
    onnx.write_bytes(b"this is not a protobuf \x00\xff" * 10)
    before = sorted(p.name for p in (tmp_path / "m.partial").iterdir())
    with pytest.raises(FlowError, match="00_export.onnx .* is not a readable ONNX model"):
        api.build(module, (4,), name="m", out_dir=tmp_path, config=cfg, images=x, start_step="clean",
                  stop_step="check", progress=False)
    assert sorted(p.name for p in (tmp_path / "m.partial").iterdir()) == before
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name]


def test_layer_names_with_odd_characters_never_reach_the_project(tmp_path):
    """Module names with spaces, quotes, $, ;, brackets, non-ASCII: exported node names are generated."""
    from collections import OrderedDict

    from torch import nn
    spec = fuzz.ModelSpec("dense", (4,), 4, False, (fuzz.LayerSpec(2, 4, 4, "Int32Bias", "none"),), "linear")
    x, _ = fuzz.inputs(spec, 4)
    inner = fuzz.make_module(spec, x)
    odd = ["in put", "q'uote\"", "$(id);", "br[0]", "été"]
    net = nn.Sequential(OrderedDict(zip(odd, inner)))
    cfg = BuildConfig(model="odd", n_images=4, stock_check_images=0)
    api.build(net, (4,), name="odd", out_dir=tmp_path, config=cfg, images=x, stop_step="clean", progress=False)
    from qonnx.core.modelwrapper import ModelWrapper
    g = ModelWrapper(str(tmp_path / "odd.partial" / "10_clean.onnx")).graph
    names = [n.name for n in g.node] + [t for n in g.node for t in list(n.input) + list(n.output)]
    assert all(re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", s) for s in names if s), names


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root ignores directory permissions")
def test_read_only_output_directory(tmp_path):
    spec = fuzz.ModelSpec("dense", (4,), 4, False, (fuzz.LayerSpec(2, 4, 4, "Int32Bias", "none"),), "linear")
    x, _ = fuzz.inputs(spec, 4)
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        with pytest.raises(FlowError, match="cannot write the build directory"):
            api.build(fuzz.make_module(spec, x), (4,), name="m", out_dir=ro, images=x, progress=False)
        assert list(ro.iterdir()) == []
    finally:
        ro.chmod(0o700)
