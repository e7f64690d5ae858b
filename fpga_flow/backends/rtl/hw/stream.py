"""The one stream shape every block speaks: ``amaranth.lib.stream`` with a flat payload of ``lanes``
integer lanes of ``bits`` each, lane ``i`` at payload bits ``[i*bits, (i+1)*bits)``, two's complement when
signed. A flat unsigned payload keeps the generated Verilog ports plain vectors."""

from __future__ import annotations

from amaranth import Value, signed, unsigned
from amaranth.lib import stream


def signature(lanes: int, bits: int) -> stream.Signature:
    return stream.Signature(unsigned(lanes * bits))


def lane(payload: Value, i: int, bits: int, is_signed: bool) -> Value:
    """Lane ``i`` of a flat payload as a signed or unsigned value."""
    v = payload[i * bits:(i + 1) * bits]
    return v.as_signed() if is_signed else v.as_unsigned()


def pack(values, bits: int) -> int:
    """Python ints -> one flat payload integer (for testbenches)."""
    word, mask = 0, (1 << bits) - 1
    for i, v in enumerate(values):
        word |= (int(v) & mask) << (i * bits)
    return word


def unpack(word: int, lanes: int, bits: int, is_signed: bool) -> list[int]:
    """One flat payload integer -> Python ints (for testbenches)."""
    out, mask = [], (1 << bits) - 1
    for i in range(lanes):
        v = (int(word) >> (i * bits)) & mask
        if is_signed and v >> (bits - 1):
            v -= 1 << bits
        out.append(v)
    return out


__all__ = ["signature", "lane", "pack", "unpack", "signed", "unsigned"]
