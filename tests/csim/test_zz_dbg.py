import difflib
import numpy as np
from fpga_flow import BuildConfig, api, data
from fpga_flow.codegen import BuildPlan

def test_dbg(calibrated_convnet, mnist_test, tmp_path):
    x = data.to_unit(mnist_test.images[:8])
    cfg = BuildConfig(model="calib", stock_check_images=0)
    for d in "ab":
        api.build(calibrated_convnet, (1, 28, 28), name="calib", out_dir=tmp_path / d, config=cfg, images=x, stop_step="write", progress=False)
    a = BuildPlan.from_dir(tmp_path / "a" / "calib.partial" / "hls"); b = BuildPlan.from_dir(tmp_path / "b" / "calib.partial" / "hls")
    for k in sorted(set(a) | set(b)):
        if a.get(k) != b.get(k):
            print("DIFF", k)
            print("".join(list(difflib.unified_diff(a.get(k, b"").decode(errors="replace").splitlines(True), b.get(k, b"").decode(errors="replace").splitlines(True)))[:30]))
    assert a == b
