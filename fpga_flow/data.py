"""MNIST (and any dataset in the same IDX layout) from a local folder.

The folder comes from, in order: the ``path`` argument (CLI ``--data``), the
``FPGA_FLOW_DATA`` environment variable, then ``../shared/data/mnist`` and
``data/mnist`` relative to the repository. Nothing is downloaded.
"""

from __future__ import annotations

import gzip
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import FlowError

ENV_VAR = "FPGA_FLOW_DATA"
REPO = Path(__file__).resolve().parent.parent
DEFAULT_DIRS = (REPO.parent / "shared" / "data" / "mnist", REPO / "data" / "mnist")
FILES = {
    ("train", "images"): "train-images-idx3-ubyte",
    ("train", "labels"): "train-labels-idx1-ubyte",
    ("test", "images"): "t10k-images-idx3-ubyte",
    ("test", "labels"): "t10k-labels-idx1-ubyte",
}
# Seed normalisation of the float model (MNIST training-set mean and std).
MEAN, STD = 0.1307, 0.3081


@dataclass(frozen=True)
class Split:
    images: np.ndarray  # uint8, (N, 28, 28)
    labels: np.ndarray  # int64, (N,)
    source: Path
    sha256: str  # of the uncompressed image file


def candidate_dirs(path: str | os.PathLike | None = None) -> list[Path]:
    """An explicit folder (flag, then env var) is the only place looked: never a silent fallback."""
    if path:
        return [Path(path)]
    if os.environ.get(ENV_VAR):
        return [Path(os.environ[ENV_VAR])]
    return list(DEFAULT_DIRS)


def find_dir(path: str | os.PathLike | None = None) -> Path:
    """The first candidate folder holding all four IDX files (gzipped or not)."""
    tried = candidate_dirs(path)
    for d in tried:
        if all(_find_file(d, f) for f in FILES.values()):
            return d
    lines = "\n".join(f"  - {d}" for d in tried)
    raise FlowError(
        "MNIST data not found. Looked for the four IDX files "
        f"({', '.join(FILES.values())}, optionally .gz) in:\n{lines}\n"
        f"Pass --data DIR or set {ENV_VAR}=DIR.")


def _find_file(d: Path, name: str) -> Path | None:
    for cand in (d / name, d / (name + ".gz")):
        if cand.is_file():
            return cand
    return None


# The largest IDX body read (bytes): MNIST's training images are 47 MB; the limit bounds the memory a
# crafted file (e.g. a gzip bomb) can claim before it is refused. Raise it for larger datasets.
MAX_IDX_BYTES = 1 << 30
IDX_MAGIC = {"images": 0x00000803, "labels": 0x00000801}


def _open(p: Path):
    """A byte stream of the uncompressed file: gzip decompresses lazily, so nothing past what is read is
    ever inflated."""
    return gzip.open(p, "rb") if p.suffix == ".gz" else open(p, "rb")


def _read_exact(f, n: int, p: Path) -> bytes:
    """``n`` bytes, or a FlowError saying the file is truncated or not gzip."""
    try:
        buf = f.read(n)
    except (OSError, EOFError) as e:  # BadGzipFile is an OSError; a cut gzip stream raises EOFError
        kind = "truncated" if isinstance(e, EOFError) else "not a valid gzip file"
        raise FlowError(f"{p}: {kind} ({e})") from e
    return buf


def _read_idx(p: Path, kind: str, limit: int | None = None) -> tuple[bytes, np.ndarray]:
    """(uncompressed bytes, array) of one IDX file with bounded memory: the header is read first, the size
    it declares is checked against ``limit`` (default ``MAX_IDX_BYTES``), then exactly that many bytes are
    read and one more is tried, so data longer than declared is called "too long" without inflating it."""
    limit = MAX_IDX_BYTES if limit is None else limit
    dims = 3 if kind == "images" else 1
    with _open(p) as f:
        head = _read_exact(f, 4 + 4 * dims, p)
        if len(head) < 4 or int.from_bytes(head[:4], "big") != IDX_MAGIC[kind]:
            raise FlowError(f"{p}: not an IDX {kind} file (bad magic number)")
        if len(head) < 4 + 4 * dims:
            raise FlowError(f"{p}: truncated (the header ends after {len(head)} bytes)")
        shape = tuple(int.from_bytes(head[4 + 4 * i:8 + 4 * i], "big") for i in range(dims))
        if 0 in shape:
            names = ("items", "rows", "columns")[:dims]
            raise FlowError(f"{p}: empty IDX {kind} file (header says " +
                            ", ".join(f"{v} {k}" for k, v in zip(names, shape)) + "); every size must be >= 1")
        size = int(np.prod(shape, dtype=object))
        if size > limit:
            raise FlowError(f"{p}: header declares {size} bytes of data ({' x '.join(map(str, shape))}), more "
                            f"than the limit of {limit} bytes (fpga_flow.data.MAX_IDX_BYTES)")
        body = _read_exact(f, size, p)
        if len(body) < size:
            raise FlowError(f"{p}: truncated ({len(body)} bytes of data, header says {size})")
        if _read_exact(f, 1, p):
            raise FlowError(f"{p}: too long (more than the {size} bytes of data its header declares)")
    return head + body, np.frombuffer(body, dtype=np.uint8).reshape(shape)


def _checksums(d: Path) -> dict[str, str]:
    f = d / "SHA256SUMS.uncompressed"
    if not f.is_file():
        return {}
    out = {}
    for line in f.read_text().splitlines():
        parts = line.split()
        if len(parts) == 2:
            out[parts[1]] = parts[0]
    return out


def load(split: str = "test", path: str | os.PathLike | None = None) -> Split:
    """Load one split; verify against SHA256SUMS.uncompressed when the folder has one."""
    if split not in ("train", "test"):
        raise FlowError(f"unknown split {split!r}: use 'train' or 'test'")
    d = find_dir(path)
    sums = _checksums(d)
    arrays, digest = {}, ""
    for kind in ("images", "labels"):
        name = FILES[(split, kind)]
        p = _find_file(d, name)
        raw, arr = _read_idx(p, kind)
        h = hashlib.sha256(raw).hexdigest()
        if name in sums and sums[name] != h:
            raise FlowError(f"{p}: checksum mismatch (sha256 {h}, expected {sums[name]})")
        if kind == "images":
            digest = h
        arrays[kind] = arr
    if len(arrays["images"]) != len(arrays["labels"]):
        raise FlowError(f"{d}: {len(arrays['images'])} images but {len(arrays['labels'])} labels")
    return Split(arrays["images"], arrays["labels"].astype(np.int64), d, digest)


def to_unit(images: np.ndarray) -> np.ndarray:
    """uint8 (N,H,W) -> float32 (N,1,H,W) in [0,1], the input of the quantized models."""
    return (images.astype(np.float32) / 255.0)[:, None]


def as_input(x, input_shape: tuple[int, ...]):
    """Images (N, 1, H, W) (numpy or torch) reshaped to a model's ``INPUT_SHAPE`` with the same number of
    elements per sample, e.g. (784,) for a fully connected MNIST model; unchanged when the shapes agree.
    A model taking a square grid k times smaller (e.g. (49,) or (1, 7, 7) for 28x28 images) gets the images
    average-pooled k x k (``avg_pool``, see ``pool_factor``)."""
    shape = tuple(int(s) for s in input_shape)
    if tuple(x.shape[1:]) == shape:
        return x
    if int(np.prod(x.shape[1:])) != int(np.prod(shape)):
        k = pool_factor(tuple(x.shape[1:]), shape)
        if k is None:
            raise FlowError(f"images of shape {tuple(x.shape[1:])} cannot feed a model taking {shape}")
        x = avg_pool(x, k)
    return x.reshape(x.shape[0], *shape)


def pool_factor(image_shape: tuple[int, ...], input_shape: tuple[int, ...]) -> int | None:
    """k > 1 when ``input_shape`` is a (1, H, W) image average-pooled k x k: (1, H/k, W/k) or (H/k * W/k,),
    square images only (so a flat size names one grid); else None."""
    if len(image_shape) != 3 or image_shape[0] != 1 or image_shape[1] != image_shape[2]:
        return None
    n = int(np.prod(input_shape))
    side = int(round(n ** 0.5))
    if side * side != n or side < 1 or image_shape[1] % side or side == image_shape[1]:
        return None
    if tuple(input_shape) not in ((n,), (1, side, side)):
        return None
    return image_shape[1] // side


def avg_pool(x, k: int):
    """k x k average pooling of (N, C, H, W) images (numpy or torch), the same float32 values either way: the
    k*k values are summed in float64 (exact for float32 inputs in [0, 1]), divided by k*k and rounded once."""
    n, c, h, w = x.shape
    if hasattr(x, "numpy"):  # torch
        import torch
        s = x.to(torch.float64).reshape(n, c, h // k, k, w // k, k).sum(dim=(3, 5))
        return (s / (k * k)).to(x.dtype)
    s = np.asarray(x, dtype=np.float64).reshape(n, c, h // k, k, w // k, k).sum(axis=(3, 5))
    return (s / (k * k)).astype(np.asarray(x).dtype)


