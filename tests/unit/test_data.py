import gzip
import shutil

import numpy as np
import pytest

from fpga_flow import FlowError, data

pytestmark = pytest.mark.unit


def test_real_mnist_loads_and_matches_readme_figures(mnist_test):
    assert mnist_test.images.shape == (10000, 28, 28) and mnist_test.images.dtype == np.uint8
    assert np.bincount(mnist_test.labels).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def test_missing_data_names_every_place_it_looked(tmp_path, monkeypatch):
    monkeypatch.delenv(data.ENV_VAR, raising=False)
    monkeypatch.setattr(data, "DEFAULT_DIRS", (tmp_path / "default1", tmp_path / "default2"))
    with pytest.raises(FlowError) as e:
        data.load("test")
    msg = str(e.value)
    assert str(tmp_path / "default1") in msg and str(tmp_path / "default2") in msg
    assert "--data" in msg and data.ENV_VAR in msg


def test_an_explicit_folder_never_falls_back(tmp_path, monkeypatch):
    monkeypatch.setenv(data.ENV_VAR, str(tmp_path / "from_env"))
    with pytest.raises(FlowError, match="from_env"):
        data.load("test")
    with pytest.raises(FlowError) as e:
        data.load("test", tmp_path / "from_flag")
    assert str(tmp_path / "from_flag") in str(e.value) and "from_env" not in str(e.value)


def _copy_mnist(dst):
    src = data.find_dir()
    dst.mkdir()
    for f in src.iterdir():
        shutil.copy(f, dst / f.name)
    return dst


def test_env_var_is_used(tmp_path, monkeypatch):
    d = _copy_mnist(tmp_path / "m")
    monkeypatch.setenv(data.ENV_VAR, str(d))
    assert data.load("test").source == d


def test_truncated_and_corrupt_files_are_refused(tmp_path):
    d = _copy_mnist(tmp_path / "m")
    f = d / "t10k-labels-idx1-ubyte.gz"
    raw = gzip.decompress(f.read_bytes())
    f.write_bytes(gzip.compress(raw[:-10]))
    with pytest.raises(FlowError, match="truncated"):
        data.load("test", d)
    f.write_bytes(b"not gzip at all")
    with pytest.raises(FlowError, match="not a valid gzip"):
        data.load("test", d)


def test_checksum_mismatch_is_refused(tmp_path):
    d = _copy_mnist(tmp_path / "m")
    f = d / "t10k-labels-idx1-ubyte.gz"
    raw = bytearray(gzip.decompress(f.read_bytes()))
    raw[100] = (raw[100] + 1) % 10  # a wrong label, same length
    f.write_bytes(gzip.compress(bytes(raw)))
    with pytest.raises(FlowError, match="checksum mismatch"):
        data.load("test", d)
