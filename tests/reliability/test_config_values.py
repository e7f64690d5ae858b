"""Issue #15 item 11: a clock that is not a finite positive number and an unknown part are refused up front."""

from __future__ import annotations

import json
import math

import pytest

from fpga_flow import BuildConfig, FlowError, parts
from fpga_flow.backends.hls4ml import estimate, synth

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("clock", [math.inf, -math.inf, math.nan, 0.0, -5.0])
def test_clock_must_be_finite_and_positive(clock):
    with pytest.raises(FlowError, match="clock"):
        BuildConfig(clock_ns=clock)
    with pytest.raises(FlowError, match="clock"):
        synth.SynthSettings(clock_ns=clock)


def test_a_finite_clock_still_gives_valid_json():
    cfg = BuildConfig(clock_ns=3.3)
    assert json.loads(json.dumps(cfg.to_json(), allow_nan=False))["clock_ns"] == 3.3


@pytest.mark.parametrize("part", ["garbage", "xc7z020garbage", "xc7z0201clg400-1", "xczu9", "lfe5u-45f"])
def test_unknown_part_is_refused_listing_the_known_ones(part):
    with pytest.raises(FlowError) as e:
        BuildConfig(part=part)
    msg = str(e.value)
    assert repr(part) in msg and "allow_unknown_part" in msg
    assert all(dev in msg for dev in parts.DEVICES)


def test_unknown_part_accepted_when_allowed():
    assert BuildConfig(part="garbage", allow_unknown_part=True).part == "garbage"


@pytest.mark.parametrize("part,device", [("xc7z020clg400-1", "xc7z020"), ("xc7z010clg400-1", "xc7z010"),
                                         ("xc7z045ffg900-2", "xc7z045"), ("xczu3eg-sbva484-1-e", "xczu3eg"),
                                         ("xczu9eg-ffvb1156-2-e", "xczu9eg"), ("xcu250-figd2104-2L-e", "xcu250"),
                                         ("LFE5U-85F-6BG381C", "lfe5u-85f")])
def test_real_part_names_map_to_their_device(part, device):
    assert parts.device_of(part) == device
    assert BuildConfig(part=part).part == part


def test_pynq_z2_and_ecp5_figures():
    assert parts.resources("xc7z020clg400-1") == {"lut": 53_200, "ff": 106_400, "dsp": 220, "bram18k": 280}
    e = parts.lookup("LFE5U-85F-6BG381C")
    assert (e.family, e.lut, e.dsp, e.bram18k) == ("ecp5", 83_640, 156, 208)


def test_estimate_reads_the_one_parts_table():
    """Utilisation is computed for every known part (before, only the xc7z020 had figures)."""
    assert not hasattr(estimate, "PARTS")
    info = {"layers": [], "digest": "0"}
    for part in ("xczu9eg-ffvb1156-2-e", "xc7z020clg400-1"):
        e = estimate.from_plan_info(info, clock_ns=10.0, io_type="io_stream", part=part)
        assert e["utilisation_pct"] == {k: 0.0 for k in parts.resources(part)}
