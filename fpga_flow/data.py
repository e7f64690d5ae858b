"""Datasets from a local folder: a small registry (``DATASETS``) of MNIST, Fashion-MNIST, CIFAR-10 (its
standard binary batches), any IDX folder, and ``.npz`` files.

The folder comes from, in order: the ``path`` argument (CLI ``--data``), the
``FPGA_FLOW_DATA`` environment variable, then the dataset's default folders
(``../shared/data/<name>`` and ``data/<name>`` relative to the repository).
Nothing is downloaded. Every reader bounds what it reads before reading it.
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
class Dataset:
    """One registry entry: how its files are laid out and the float model's normalisation statistics."""

    name: str
    layout: str  # idx | cifar10 | npz
    about: str
    mean: tuple[float, ...] = (MEAN,)  # per channel, of the training images in [0, 1]
    std: tuple[float, ...] = (STD,)
    default_dirs: tuple[Path, ...] = ()


def _defaults(name: str) -> tuple[Path, ...]:
    return (REPO.parent / "shared" / "data" / name, REPO / "data" / name)


DATASETS = {
    "mnist": Dataset("mnist", "idx", "MNIST handwritten digits (IDX files)"),  # folders: DEFAULT_DIRS
    "fashion-mnist": Dataset("fashion-mnist", "idx", "Fashion-MNIST (same IDX layout as MNIST)",
                             (0.2860,), (0.3530,), _defaults("fashion-mnist")),
    "cifar10": Dataset("cifar10", "cifar10", "CIFAR-10 binary batches (data_batch_1..5.bin, test_batch.bin)",
                       (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616),
                       _defaults("cifar10") + _defaults("cifar-10-batches-bin")),
    "idx": Dataset("idx", "idx", "any folder of the four MNIST-named IDX files (--data DIR)", (0.5,), (0.5,)),
    "npz": Dataset("npz", "npz", "train.npz and test.npz, each with uint8 images 'x' (N,H,W or N,C,H,W) and "
                   "integer labels 'y' (--data DIR)", (0.5,), (0.5,)),
}
DEFAULT_DATASET = "mnist"


def get(name: str | None) -> Dataset:
    """The registry entry; an unknown name lists the known ones."""
    name = name or DEFAULT_DATASET
    if name not in DATASETS:
        raise FlowError(f"unknown dataset {name!r}; known datasets: {', '.join(DATASETS)}")
    return DATASETS[name]


@dataclass(frozen=True)
class Split:
    images: np.ndarray  # uint8, (N, 28, 28)
    labels: np.ndarray  # int64, (N,)
    source: Path
    sha256: str  # of the uncompressed image file


def candidate_dirs(path: str | os.PathLike | None = None, dataset: str | None = None) -> list[Path]:
    """An explicit folder (flag, then env var) is the only place looked: never a silent fallback."""
    if path:
        return [Path(path)]
    if os.environ.get(ENV_VAR):
        return [Path(os.environ[ENV_VAR])]
    ds = get(dataset)
    return list(DEFAULT_DIRS if ds.name == DEFAULT_DATASET else ds.default_dirs)  # MNIST's: read at call time


def find_dir(path: str | os.PathLike | None = None, dataset: str | None = None) -> Path:
    """The first candidate folder holding all four IDX files (gzipped or not)."""
    tried = candidate_dirs(path, dataset)
    for d in tried:
        if all(_find_file(d, f) for f in FILES.values()):
            return d
    lines = "\n".join(f"  - {d}" for d in tried) or "  (no default folder for this dataset)"
    raise FlowError(
        f"{get(dataset).name} data not found. Looked for the four IDX files "
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


def load(split: str = "test", path: str | os.PathLike | None = None, dataset: str | None = None) -> Split:
    """Load one split of ``dataset`` (default MNIST); IDX folders are verified against
    SHA256SUMS.uncompressed when they have one."""
    if split not in ("train", "test"):
        raise FlowError(f"unknown split {split!r}: use 'train' or 'test'")
    layout = get(dataset).layout
    if layout == "cifar10":
        return _load_cifar10(split, path)
    if layout == "npz":
        return _load_npz(split, path)
    d = find_dir(path, dataset)
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


def _explicit_dir(path, what: str) -> Path:
    tried = candidate_dirs(path, what)
    for d in tried:
        if d.is_dir():
            return d
    lines = "\n".join(f"  - {d}" for d in tried) or "  (no default folder)"
    raise FlowError(f"{what} data not found; looked in:\n{lines}\nPass --data DIR or set {ENV_VAR}=DIR.")


CIFAR_RECORD = 1 + 3 * 32 * 32  # one label byte, then 3x32x32 pixels (R, G, B planes)
CIFAR_FILES = {"train": tuple(f"data_batch_{i}.bin" for i in range(1, 6)), "test": ("test_batch.bin",)}


def _load_cifar10(split: str, path) -> Split:
    """CIFAR-10's binary version (no pickle): fixed-size records, each file's size checked before reading."""
    d = _explicit_dir(path, "cifar10")
    if not (d / CIFAR_FILES[split][0]).is_file() and (d / "cifar-10-batches-bin").is_dir():
        d = d / "cifar-10-batches-bin"
    raw, h = [], hashlib.sha256()
    for name in CIFAR_FILES[split]:
        p = d / name
        if not p.is_file():
            raise FlowError(f"CIFAR-10 file {p} not found (the binary version: {', '.join(CIFAR_FILES[split])})")
        size = p.stat().st_size
        if size == 0 or size % CIFAR_RECORD or size > MAX_IDX_BYTES:
            raise FlowError(f"{p}: {size} bytes is not a whole number of {CIFAR_RECORD}-byte CIFAR-10 records "
                            f"(at most {MAX_IDX_BYTES} bytes)")
        with open(p, "rb") as f:
            body = f.read(size)
        h.update(body)
        raw.append(np.frombuffer(body, dtype=np.uint8).reshape(-1, CIFAR_RECORD))
    rec = np.concatenate(raw)
    if rec[:, 0].max() > 9:
        raise FlowError(f"{d}: a CIFAR-10 label is {int(rec[:, 0].max())}; labels are 0..9")
    return Split(rec[:, 1:].reshape(-1, 3, 32, 32).copy(), rec[:, 0].astype(np.int64), d, h.hexdigest())


def _load_npz(split: str, path) -> Split:
    """``<split>.npz`` with ``x`` (uint8 images) and ``y`` (labels); never unpickles (allow_pickle=False)."""
    d = _explicit_dir(path, "npz")
    p = d / f"{split}.npz"
    if not p.is_file():
        raise FlowError(f"{p} not found: an npz dataset folder holds train.npz and test.npz (arrays x, y)")
    if p.stat().st_size > MAX_IDX_BYTES:
        raise FlowError(f"{p}: larger than the limit of {MAX_IDX_BYTES} bytes (fpga_flow.data.MAX_IDX_BYTES)")
    try:
        with np.load(p, allow_pickle=False) as z:
            if not {"x", "y"} <= set(z.files):
                raise FlowError(f"{p}: needs arrays 'x' and 'y', has {', '.join(z.files) or 'none'}")
            x, y = z["x"], z["y"]
    except (ValueError, OSError) as e:
        raise FlowError(f"{p}: not a readable npz file without pickled objects ({e})") from e
    if x.dtype != np.uint8 or x.ndim not in (3, 4):
        raise FlowError(f"{p}: 'x' must be uint8 images (N,H,W) or (N,C,H,W), got {x.dtype} {x.shape}")
    if y.ndim != 1 or len(y) != len(x) or not np.issubdtype(y.dtype, np.integer) or (len(y) and y.min() < 0):
        raise FlowError(f"{p}: 'y' must be {len(x)} non-negative integer labels, got {y.dtype} {y.shape}")
    return Split(x, y.astype(np.int64), d, hashlib.sha256(np.ascontiguousarray(x).tobytes()).hexdigest())


def to_unit(images: np.ndarray) -> np.ndarray:
    """uint8 (N,H,W) -> float32 (N,1,H,W) in [0,1] (or (N,C,H,W) kept), the input of the quantized models."""
    x = images.astype(np.float32) / 255.0
    return x[:, None] if x.ndim == 3 else x


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


