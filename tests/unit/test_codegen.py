import os

import pytest

from fpga_flow import FlowError
from fpga_flow.codegen import BuildPlan, render

pytestmark = pytest.mark.unit


def test_digest_is_order_independent_and_content_sensitive():
    a = BuildPlan({"x": b"1", "y/z": b"2"})
    b = BuildPlan()
    b.add("y/z", "2")
    b.add("x", "1")
    assert a.digest() == b.digest()
    b.add("x", "1 ")
    assert a.digest() != b.digest()


def test_paths_must_stay_inside():
    p = BuildPlan()
    for bad in ("/etc/passwd", "../up", "a/../../b"):
        with pytest.raises(FlowError):
            p.add(bad, "x")


def test_write_replaces_and_failure_keeps_previous(tmp_path, monkeypatch):
    target = tmp_path / "proj"
    BuildPlan({"a.txt": b"old"}).write(target)
    assert (target / "a.txt").read_bytes() == b"old"

    class Boom(Exception):
        pass

    real = os.replace

    def failing_replace(src, dst):
        if str(dst) == str(target) and ".tmp-" in str(src):  # the swap of the new build fails
            raise Boom()
        return real(src, dst)

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(Boom):
        BuildPlan({"a.txt": b"new", "b.txt": b"x"}).write(target)
    monkeypatch.setattr(os, "replace", real)
    assert (target / "a.txt").read_bytes() == b"old" and not (target / "b.txt").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["proj"]  # no staging left behind
    BuildPlan({"a.txt": b"new"}).write(target)
    assert (target / "a.txt").read_bytes() == b"new"


def test_unwritable_target_is_a_clear_error(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")  # a file where a directory must go: fails for root too
    with pytest.raises(FlowError, match="cannot write"):
        BuildPlan({"a": b"1"}).write(blocker / "proj")


def test_templates_are_strict():
    import jinja2
    with pytest.raises(jinja2.UndefinedError):
        render("hls4ml/tb_batch.cpp.j2", project="p", n_in=4)  # n_out, io_type missing
    text = render("hls4ml/tb_batch.cpp.j2", project="p", n_in=4, n_out=2, io_type="io_parallel")
    assert "p(x_ap, y_ap);" in text and "hls::stream" not in text
