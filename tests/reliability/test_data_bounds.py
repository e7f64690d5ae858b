"""Issue #15 items 9 and 10 (IDX part): crafted IDX files are refused with bounded memory and the right words."""

from __future__ import annotations

import gzip
import shutil
import tracemalloc

import pytest

from fpga_flow import FlowError, data

pytestmark = pytest.mark.unit

LABELS = "t10k-labels-idx1-ubyte"
IMAGES = "t10k-images-idx3-ubyte"


@pytest.fixture
def mnist_copy(tmp_path):
    src = data.find_dir()
    dst = tmp_path / "m"
    dst.mkdir()
    for f in src.iterdir():
        if f.name.startswith("t10k"):
            shutil.copy(f, dst / f.name)
    for name in (LABELS, IMAGES):  # load("test") never reads the train files, but find_dir wants all four
        (dst / (name.replace("t10k", "train") + ".gz")).write_bytes(b"")
    return dst


def _header(kind: str, *dims: int) -> bytes:
    return {"images": 0x803, "labels": 0x801}[kind].to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in dims)


def test_gzip_bomb_is_called_too_long_and_never_inflated(mnist_copy):
    """A label file with the right header and 64 MB of extra zeros (64 kB compressed): before, the whole
    stream was inflated in memory and the refusal said "truncated"."""
    f = mnist_copy / (LABELS + ".gz")
    raw = gzip.decompress(f.read_bytes())
    f.write_bytes(gzip.compress(raw + bytes(64 << 20), compresslevel=1))
    tracemalloc.start()
    try:
        with pytest.raises(FlowError) as e:
            data.load("test", mnist_copy)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert "too long" in str(e.value) and "truncated" not in str(e.value) and LABELS in str(e.value)
    assert peak < 16 << 20  # the images (7.8 MB) are read; the 64 MB tail never is


def test_a_huge_declared_size_is_refused_before_reading(mnist_copy):
    f = mnist_copy / (IMAGES + ".gz")
    f.write_bytes(gzip.compress(_header("images", 60000, 60000, 60000) + bytes(100)))
    with pytest.raises(FlowError) as e:
        data.load("test", mnist_copy)
    assert "limit" in str(e.value) and "60000 x 60000 x 60000" in str(e.value)


def test_truncated_body_is_still_called_truncated(mnist_copy):
    f = mnist_copy / (LABELS + ".gz")
    raw = gzip.decompress(f.read_bytes())
    f.write_bytes(gzip.compress(raw[:-1]))
    with pytest.raises(FlowError, match="truncated"):
        data.load("test", mnist_copy)
    f.write_bytes(gzip.compress(raw)[:-20])  # the compressed stream itself cut short
    with pytest.raises(FlowError, match="truncated"):
        data.load("test", mnist_copy)


@pytest.mark.parametrize("dims", [(10000, 0, 28), (10000, 28, 0), (0, 28, 28)])
def test_idx_with_zero_rows_or_columns_is_a_clear_error(mnist_copy, dims):
    (mnist_copy / (IMAGES + ".gz")).write_bytes(gzip.compress(_header("images", *dims)))
    with pytest.raises(FlowError) as e:
        data.load("test", mnist_copy)
    assert "empty IDX images file" in str(e.value) and IMAGES in str(e.value)
