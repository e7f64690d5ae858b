"""The FPGA parts we know: one table of device resources, read by config validation and the estimates.

A part name is the device plus package and speed grade (``xc7z020clg400-1``,
``xczu9eg-ffvb1156-2-e``, ``LFE5U-85F-6BG381C``); the table is keyed by the
device. A name that matches no device is refused up front (issue #15: a typo
such as ``--part garbage`` used to build for part "garbage"), unless the
caller explicitly allows unknown parts.

Resource keys are the same for every family so utilisation is computed one
way; what a unit is differs by family and is stated in ``UNITS``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .errors import FlowError


@dataclass(frozen=True)
class Device:
    family: str
    lut: int
    ff: int
    dsp: int
    bram18k: int

    def resources(self) -> dict[str, int]:
        return {"lut": self.lut, "ff": self.ff, "dsp": self.dsp, "bram18k": self.bram18k}


# Figures per device, full device (not what a board's shell leaves free). Sources:
# - Zynq-7000: AMD "Zynq 7000 SoC Product Selection Guide" (XMP098) and data sheet DS190, Table "Zynq 7000
#   SoC Family": Z-7010 17,600 LUT / 35,200 FF / 80 DSP / 60 x 36Kb BRAM; Z-7020 53,200 / 106,400 / 220 / 140;
#   Z-7045 218,600 / 437,200 / 900 / 545. One 36Kb block = two 18Kb (BRAM18K) blocks.
# - Zynq UltraScale+: AMD "Zynq UltraScale+ MPSoC Product Selection Guide" and DS891: ZU3EG 70,560 CLB LUT /
#   141,120 CLB FF / 360 DSP / 216 x 36Kb; ZU9EG (ZCU102) 274,080 / 548,160 / 2,520 / 912.
# - Alveo U250 (xcu250, a Virtex UltraScale+ VU13P-class die): DS923 (Virtex UltraScale+ data sheet) VU13P
#   1,728,000 CLB LUT / 3,456,000 CLB FF / 12,288 DSP / 2,688 x 36Kb; the card's shell (DS962) takes a share.
# - Lattice ECP5 LFE5U-85F: Lattice "ECP5 and ECP5-5G Family Data Sheet" (FPGA-DS-02012) Table 1.1: 84K LUTs
#   (41,820 slices x 2 LUT4 = 83,640, as nextpnr-ecp5 reports them), one FF per LUT4, 156 18x18 multipliers
#   (MULT18X18D), 208 sysMEM EBR blocks (DP16KD, 18 Kb each).
DEVICES: dict[str, Device] = {
    "xc7z010": Device("zynq7000", lut=17_600, ff=35_200, dsp=80, bram18k=120),
    "xc7z020": Device("zynq7000", lut=53_200, ff=106_400, dsp=220, bram18k=280),
    "xc7z045": Device("zynq7000", lut=218_600, ff=437_200, dsp=900, bram18k=1_090),
    "xczu3eg": Device("zynquplus", lut=70_560, ff=141_120, dsp=360, bram18k=432),
    "xczu9eg": Device("zynquplus", lut=274_080, ff=548_160, dsp=2_520, bram18k=1_824),
    "xcu250": Device("virtexuplus", lut=1_728_000, ff=3_456_000, dsp=12_288, bram18k=5_376),
    "lfe5u-85f": Device("ecp5", lut=83_640, ff=83_640, dsp=156, bram18k=208),
}

UNITS = {
    "zynq7000": {"lut": "LUT6", "ff": "FF", "dsp": "DSP48E1", "bram18k": "RAMB18"},
    "zynquplus": {"lut": "LUT6", "ff": "FF", "dsp": "DSP48E2", "bram18k": "RAMB18"},
    "virtexuplus": {"lut": "LUT6", "ff": "FF", "dsp": "DSP48E2", "bram18k": "RAMB18"},
    "ecp5": {"lut": "LUT4", "ff": "FF", "dsp": "MULT18X18D", "bram18k": "DP16KD"},
}

# after the device: an optional package (clg400, ffvb1156, figd2104), then dash-separated speed grade,
# temperature or package fields (-1, -2-e, -2l-e, -6bg381c)
_SUFFIX = re.compile(r"(-?[a-z]{2,5}\d{2,4}[a-z]?)?(-[0-9a-z]{1,8})*\Z")


def device_of(part: str | None) -> str | None:
    """The device key of ``part`` (case-insensitive), or None when it names no device in ``DEVICES``."""
    p = (part or "").lower()
    for dev in sorted(DEVICES, key=len, reverse=True):
        if p.startswith(dev) and _SUFFIX.match(p[len(dev):]):
            return dev
    return None


def lookup(part: str | None) -> Device | None:
    dev = device_of(part)
    return DEVICES[dev] if dev else None


def resources(part: str | None) -> dict[str, int] | None:
    """{lut, ff, dsp, bram18k} of a known part (utilisation denominators), else None."""
    d = lookup(part)
    return d.resources() if d else None


def check(part: str, allow_unknown: bool = False) -> str:
    """``part`` when it names a known device (or ``allow_unknown``); else a FlowError listing the known ones."""
    if allow_unknown or device_of(part):
        return part
    known = ", ".join(f"{dev} ({d.family})" for dev, d in DEVICES.items())
    raise FlowError(f"FPGA part {part!r} is not a part we know: known devices are {known} (a full part name adds "
                    "package and speed grade, e.g. xc7z020clg400-1); to build for another part anyway set "
                    "allow_unknown_part=True")
