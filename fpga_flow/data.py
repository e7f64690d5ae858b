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


def _read_idx(p: Path) -> bytes:
    raw = p.read_bytes()
    if p.suffix == ".gz":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as e:
            raise FlowError(f"{p}: not a valid gzip file ({e})") from e
    return raw


def _parse_idx(raw: bytes, p: Path, kind: str) -> np.ndarray:
    magic = {"images": 0x00000803, "labels": 0x00000801}[kind]
    if len(raw) < 8 or int.from_bytes(raw[:4], "big") != magic:
        raise FlowError(f"{p}: not an IDX {kind} file (bad magic number)")
    n = int.from_bytes(raw[4:8], "big")
    if kind == "images":
        rows, cols = int.from_bytes(raw[8:12], "big"), int.from_bytes(raw[12:16], "big")
        body, shape = raw[16:], (n, rows, cols)
    else:
        body, shape = raw[8:], (n,)
    if len(body) != int(np.prod(shape)):
        raise FlowError(f"{p}: truncated ({len(body)} bytes of data, header says {np.prod(shape)})")
    return np.frombuffer(body, dtype=np.uint8).reshape(shape)


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
        raw = _read_idx(p)
        h = hashlib.sha256(raw).hexdigest()
        if name in sums and sums[name] != h:
            raise FlowError(f"{p}: checksum mismatch (sha256 {h}, expected {sums[name]})")
        if kind == "images":
            digest = h
        arrays[kind] = _parse_idx(raw, p, kind)
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


def to_normalized(images: np.ndarray) -> np.ndarray:
    """The seed's input for the float model: (x/255 - mean) / std."""
    return (to_unit(images) - MEAN) / STD
