"""Bring your own model (#14): a user's model file or module on the CLI, plain state_dicts, QONNX/QCDQ files,
TOML config files; each through the front up to the golden (no compiler needed)."""

from __future__ import annotations

import argparse
import re
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from fpga_flow import BuildConfig, FlowError, api, cli, data, sources, train, zoo

pytestmark = pytest.mark.unit

USER_FILE = textwrap.dedent('''
    """A user's model file outside the checkout: mlp_tiny's quant net, built by a factory and by a class."""
    from fpga_flow import zoo
    INPUT_SHAPE = (49,)
    DATASET = "mnist"
    _mlp = zoo.load("mlp")

    def make():
        return _mlp.QuantMLP(4, 4, 8, 49, (32, 32))

    class Net(_mlp.QuantMLP):
        def __init__(self):
            super().__init__(4, 4, 8, 49, (32, 32))

    NOT_A_MODEL = 3

    def returns_int():
        return 3
''')


@pytest.fixture(scope="module")
def user(tmp_path_factory):
    """A model file, a plain state_dict of the shipped mlp_tiny weights, and their QONNX/QCDQ exports."""
    d = tmp_path_factory.mktemp("user")
    (d / "mynet.py").write_text(USER_FILE)
    shipped, _ = train.load_checkpoint("mlp_tiny", None, 4, 4, 8)
    torch.save(shipped.state_dict(), d / "sd.pt")
    from brevitas.export import export_onnx_qcdq, export_qonnx
    export_qonnx(shipped, torch.zeros(1, 49), export_path=str(d / "tiny.onnx"))
    export_onnx_qcdq(shipped, torch.zeros(1, 49), export_path=str(d / "tiny_qcdq.onnx"), dynamo=False)
    return d, shipped


def _x(n: int = 8) -> np.ndarray:
    return np.random.default_rng(0).random((n, 49), dtype=np.float32)


# ---- --model: names, files, modules ---------------------------------------------------------------------

def test_parse_model_kinds_and_build_names():
    assert sources.parse_model("convnet") == sources.ModelRef("zoo", "convnet")
    f = sources.parse_model("some/dir/my_net.py:make")
    assert (f.kind, f.target, f.attr, f.name) == ("file", "some/dir/my_net.py", "make", "my_net")
    m = sources.parse_model("pkg.sub.nets:TinyNet")
    assert (m.kind, m.target, m.attr, m.name) == ("module", "pkg.sub.nets", "TinyNet", "TinyNet")
    with pytest.raises(FlowError, match="after a colon"):
        sources.parse_model("/path/mynet.py")  # the example: the attribute is required
    with pytest.raises(FlowError, match="not a valid identifier"):
        _ = sources.parse_model("dir/3net.py:make").name  # the build name reaches C++: checked


def test_user_file_errors_are_clear(user, tmp_path):
    d, _ = user
    with pytest.raises(FlowError, match="model file not found: .*nope.py"):
        sources.load_user_model(sources.parse_model(f"{tmp_path}/nope.py:make"))
    with pytest.raises(FlowError, match=r"no attribute 'maek'.*callables there: .*make") as e:
        sources.load_user_model(sources.parse_model(f"{d}/mynet.py:maek"))
    assert "Net" in str(e.value)
    with pytest.raises(FlowError, match="'NOT_A_MODEL' is a int, not an nn.Module"):
        sources.load_user_model(sources.parse_model(f"{d}/mynet.py:NOT_A_MODEL"))
    with pytest.raises(FlowError, match=r"returns_int\(\) returned a int, not a torch nn.Module"):
        sources.load_user_model(sources.parse_model(f"{d}/mynet.py:returns_int"))
    (tmp_path / "noshape.py").write_text("from torch import nn\ndef make():\n    return nn.Identity()\n")
    with pytest.raises(FlowError, match="no input shape: define INPUT_SHAPE .* or pass --input-shape"):
        sources.load_user_model(sources.parse_model(f"{tmp_path}/noshape.py:make"))
    um = sources.load_user_model(sources.parse_model(f"{tmp_path}/noshape.py:make"), sources.parse_shape("1,4,4"))
    assert um.input_shape == (1, 4, 4)


def test_user_file_class_and_factory_load_and_write_nothing(user):
    d, _ = user
    before = sorted(p.name for p in d.iterdir())
    tool_before = sorted(p.name for p in zoo.MODELS_DIR.iterdir())
    for spec in (f"{d}/mynet.py:make", f"{d}/mynet.py:Net"):
        um = sources.load_user_model(sources.parse_model(spec))
        assert (um.name, um.input_shape, um.dataset) == ("mynet", (49,), "mnist")
        assert isinstance(um.module, torch.nn.Module)
    assert sorted(p.name for p in d.iterdir()) == before  # no __pycache__ beside the user's file
    assert sorted(p.name for p in zoo.MODELS_DIR.iterdir()) == tool_before


def test_a_random_init_user_model_is_the_same_on_every_load(user):
    """No --checkpoint: the factory's random initialisation is seeded, so `--config <build>/config.toml`
    rebuilds the same project; the caller's RNG is left as it was."""
    d, _ = user
    ref = sources.parse_model(f"{d}/mynet.py:make")
    torch.manual_seed(123)
    want_next = torch.rand(3)
    torch.manual_seed(123)
    a = sources.load_user_model(ref).module.state_dict()
    assert torch.equal(torch.rand(3), want_next)  # the caller's stream is not consumed
    torch.manual_seed(999)
    b = sources.load_user_model(ref).module.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_package_module_attr(user, tmp_path, monkeypatch):
    pkg = tmp_path / "usernets"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "tiny.py").write_text(USER_FILE)
    monkeypatch.syspath_prepend(str(tmp_path))
    um = sources.load_user_model(sources.parse_model("usernets.tiny:Net"))
    assert (um.name, um.input_shape) == ("Net", (49,))
    with pytest.raises(FlowError, match="module 'usernets.nothere' not found"):
        sources.load_user_model(sources.parse_model("usernets.nothere:Net"))


# ---- --checkpoint: a plain state_dict -------------------------------------------------------------------

def test_plain_state_dict_loads_into_a_user_model_and_a_zoo_model(user):
    d, shipped = user
    x = torch.from_numpy(_x())
    with torch.no_grad():
        want = shipped(x)
    module, shape, ckpt, dataset = api.user_module(BuildConfig(model="mynet", source=f"{d}/mynet.py:make",
                                                      checkpoint=str(d / "sd.pt")))
    with torch.no_grad():
        assert torch.equal(module.eval()(x), want)
    assert shape == (49,) and ckpt["card"] is None and dataset == "mnist" and ckpt["path"].endswith("sd.pt")
    zoo_model, card = train.load_checkpoint("mlp_tiny", d / "sd.pt", 4, 4, 8)
    with torch.no_grad():
        assert torch.equal(zoo_model(x), want)
    assert card is None


def test_state_dict_that_does_not_fit_lists_keys(user, tmp_path):
    d, shipped = user
    sd = dict(shipped.state_dict())
    sd["extra.weight"] = torch.zeros(2)
    del sd[next(k for k in sd if k.endswith("weight"))]
    torch.save(sd, tmp_path / "bad.pt")
    with pytest.raises(FlowError, match=r"does not fit .*mynet.py:make: missing keys: .*weight; unexpected keys: "
                                        r"extra.weight"):
        api.user_module(BuildConfig(model="mynet", source=f"{d}/mynet.py:make", checkpoint=str(tmp_path / "bad.pt")))


def test_a_pickled_module_is_never_unpickled(tmp_path):
    torch.save(torch.nn.Linear(2, 2), tmp_path / "whole.pt")  # a pickled nn.Module: loading it would run code
    with pytest.raises(FlowError, match="cannot read checkpoint .*whole.pt"):
        train.read_checkpoint(tmp_path / "whole.pt")


def test_user_model_through_the_front_to_the_golden(user, tmp_path):
    d, _ = user
    cfg = BuildConfig(model="mynet", source=f"{d}/mynet.py:make", checkpoint=str(d / "sd.pt"), n_images=8)
    api.build_config(cfg, out_dir=tmp_path, stop_step="golden", progress=False)
    with np.load(tmp_path / "mynet.partial" / "golden.npz") as z:
        assert z["torch_cpu"].shape == (8, 10) and np.array_equal(z["torch_cpu"], z["qonnx"])


# ---- --onnx: a QONNX / QCDQ file, no torch module -------------------------------------------------------

def test_onnx_file_through_the_front_without_a_module(user, tmp_path):
    d, shipped = user
    cfg = BuildConfig(model="tiny", onnx=str(d / "tiny.onnx"), n_images=8)
    api.build_config(cfg, out_dir=tmp_path, stop_step="golden", progress=False)
    with np.load(tmp_path / "tiny.partial" / "golden.npz") as z:
        assert not [k for k in z.files if k.startswith("torch_")]  # no torch module, no torch reference
        qonnx = z["qonnx"]
    with torch.no_grad():  # the file's QONNX execution is what the exported module computed
        x = torch.from_numpy(api._inputs((49,), 8, None, None, None)[0])
        assert np.array_equal(qonnx, shipped(x).numpy())


def test_qcdq_file_is_converted_and_checked(user, tmp_path):
    d, shipped = user
    m, converted = sources.read_onnx(d / "tiny_qcdq.onnx")
    assert converted and "Quant" in {n.op_type for n in m.graph.node}
    assert not {n.op_type for n in m.graph.node} & {"QuantizeLinear", "DequantizeLinear"}
    assert sources.onnx_input_shape(m) == (49,)
    api.build_config(BuildConfig(model="tiny_qcdq", onnx=str(d / "tiny_qcdq.onnx"), n_images=8), out_dir=tmp_path,
                     stop_step="golden", progress=False)
    with np.load(tmp_path / "tiny_qcdq.partial" / "golden.npz") as z, torch.no_grad():
        x = torch.from_numpy(api._inputs((49,), 8, None, None, None)[0])
        assert np.array_equal(z["qonnx"], shipped(x).numpy())  # the converted graph computes what Brevitas did


def test_onnx_errors(tmp_path):
    with pytest.raises(FlowError, match="ONNX file not found"):
        sources.read_onnx(tmp_path / "none.onnx")
    (tmp_path / "junk.onnx").write_bytes(b"\x00not a model" * 10)
    with pytest.raises(FlowError, match="is not a readable ONNX model"):
        sources.read_onnx(tmp_path / "junk.onnx")
    with pytest.raises(FlowError, match="not a valid identifier"):
        sources.onnx_name("dir/my-net.onnx")


def test_onnx_refused_by_a_backend_that_runs_torch(user, tmp_path):
    d, _ = user
    with pytest.raises(FlowError, match="not finn"):
        api.build(None, (49,), name="tiny", out_dir=tmp_path, progress=False,
                  config=BuildConfig(model="tiny", onnx=str(d / "tiny.onnx"), backend="finn"))


# ---- config files ---------------------------------------------------------------------------------------

def test_config_toml_round_trip(tmp_path):
    for cfg in (BuildConfig(),
                BuildConfig(model="mynet", source="some/mynet.py:make", input_shape=(1, 7, 7), clock_ns=4.5,
                            reuse_factor=2, fuse=False, n_images=0, checkpoint="x.pt", dataset="mnist",
                            layers={"fc1": {"reuse_factor": 4, "strategy": "Resource"}},
                            extra={"target_fps": 100, "note": 'quote " and \\ back'})):
        p = tmp_path / "config.toml"
        p.write_text(cfg.to_toml())
        assert BuildConfig.from_toml(p) == cfg


@pytest.mark.parametrize("text,words", [
    ('io_type = "io_serial"', ["io_type", "io_stream", "io_parallel"]),
    ("reuse_factr = 2", ["reuse_factr", "known keys", "reuse_factor"]),
    ('weight_bits = "4"', ["weight_bits", "must be int"]),
    ("[layers.fc1]\nstrategy = \"Fast\"", ["layers.fc1.strategy", "'Latency' or 'Resource'"]),
    ("[layers.fc1]\nparallel = 2", ["layers.fc1.parallel", "reuse_factor, strategy"]),
    ("model = [", ["not valid TOML"]),
])
def test_config_errors_name_the_key_and_what_is_allowed(tmp_path, text, words):
    p = tmp_path / "build.toml"
    p.write_text(text + "\n")
    with pytest.raises(FlowError) as e:
        BuildConfig.from_toml(p)
    assert all(w in str(e.value) for w in words), str(e.value)


def _args(*argv: str) -> argparse.Namespace:
    return cli.parser().parse_args(["hls", *argv])


def test_explicit_flags_override_the_config_file(tmp_path):
    p = tmp_path / "build.toml"
    p.write_text('model = "mlp_tiny"\nreuse_factor = 4\nclock_ns = 5.0\nfuse = false\n[layers.fc1]\nreuse_factor = 2\n')
    cfg = cli._config(_args("--config", str(p)))
    assert (cfg.model, cfg.reuse_factor, cfg.clock_ns, cfg.fuse) == ("mlp_tiny", 4, 5.0, False)
    assert cfg.layers == {"fc1": {"reuse_factor": 2}}
    # a flag given explicitly wins, even when it equals BuildConfig's default
    cfg = cli._config(_args("--config", str(p), "--reuse-factor", "1", "--model", "convnet"))
    assert (cfg.model, cfg.reuse_factor, cfg.clock_ns) == ("convnet", 1, 5.0)
    assert cli._config(_args()) == BuildConfig()  # no file, no flag: the defaults


def test_model_flag_forms_set_name_and_source(user):
    d, _ = user
    cfg = cli._config(_args("--model", f"{d}/mynet.py:make", "--input-shape", "49"))
    assert (cfg.model, cfg.source, cfg.onnx, cfg.input_shape) == ("mynet", f"{d}/mynet.py:make", None, (49,))
    cfg = cli._config(_args("--onnx", f"{d}/tiny.onnx"))
    assert (cfg.model, cfg.source, cfg.onnx) == ("tiny", None, f"{d}/tiny.onnx")
    with pytest.raises(FlowError, match="exclude each other"):
        cli._config(_args("--onnx", f"{d}/tiny.onnx", "--model", "convnet"))


def test_csim_reads_the_builds_recorded_config(tmp_path):
    build = tmp_path / "mynet"
    build.mkdir()
    rec = BuildConfig(model="mynet", source="x/mynet.py:make", checkpoint="mine.pt", reuse_factor=3, n_images=50)
    (build / api.CONFIG_FILE).write_text(rec.to_toml())
    got = cli._config(_args("--model", "x/mynet.py:make", "-n", "8"), recorded=cli.recorded_config(build))
    assert got == rec.replace(n_images=8)  # the build's checkpoint and settings; -n given explicitly wins
    assert cli.recorded_config(tmp_path / "nothing") is None


def test_per_layer_reuse_factor_reaches_the_hls_project(tmp_path):
    cfg = BuildConfig(model="mlp_tiny", n_images=8, layers={"MatMul_1": {"reuse_factor": 4}})
    api.build_zoo(cfg, out_dir=tmp_path, stop_step="write", progress=False)
    text = (tmp_path / "mlp_tiny.partial" / "hls" / "firmware" / "parameters.h").read_text()
    rfs = [int(v) for v in re.findall(r"reuse_factor = (\d+)", text)]
    assert sorted(rfs)[-1] == 4 and rfs.count(4) == 1  # that one layer, the others keep the global 1
    with pytest.raises(FlowError, match=r"\[layers.fc9\] names no layer of this model; its layers: .*MatMul_0"):
        api.build_zoo(cfg.replace(layers={"fc9": {"reuse_factor": 2}}), out_dir=tmp_path, stop_step="write",
                      progress=False)


# ---- datasets -------------------------------------------------------------------------------------------

def _idx(path: Path, magic: int, arr: np.ndarray) -> None:
    path.write_bytes(magic.to_bytes(4, "big") + b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
                     + arr.astype(np.uint8).tobytes())


def _idx_folder(d: Path, seed: int) -> Path:
    """A tiny dataset in MNIST's IDX layout (what Fashion-MNIST or any IDX folder looks like)."""
    rng = np.random.default_rng(seed)
    d.mkdir()
    for split, n in (("train", 12), ("t10k", 10)):
        _idx(d / f"{split}-images-idx3-ubyte", 0x803, rng.integers(0, 256, (n, 28, 28)))
        _idx(d / f"{split}-labels-idx1-ubyte", 0x801, rng.integers(0, 10, n))
    return d


def test_dataset_registry_and_its_readers(tmp_path):
    with pytest.raises(FlowError, match="unknown dataset 'svhn'; known datasets: mnist, fashion-mnist, cifar10"):
        data.get("svhn")
    with pytest.raises(FlowError, match="known datasets"):
        BuildConfig(dataset="svhn")
    fm = data.load("test", _idx_folder(tmp_path / "fm", 1), "fashion-mnist")
    assert fm.images.shape == (10, 28, 28) and data.to_unit(fm.images).shape == (10, 1, 28, 28)
    rng = np.random.default_rng(2)  # CIFAR-10's binary layout: label byte + 3072 pixel bytes per record
    rec = np.concatenate([rng.integers(0, 10, (5, 1)), rng.integers(0, 256, (5, 3072))], axis=1).astype(np.uint8)
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "test_batch.bin").write_bytes(rec.tobytes())
    c = data.load("test", tmp_path / "c", "cifar10")
    assert c.images.shape == (5, 3, 32, 32) and np.array_equal(c.labels, rec[:, 0])
    assert np.array_equal(c.images[3, 1].ravel(), rec[3, 1 + 1024:1 + 2048])  # the G plane of record 3
    (tmp_path / "c" / "test_batch.bin").write_bytes(rec.tobytes()[:-1])
    with pytest.raises(FlowError, match="not a whole number of 3073-byte CIFAR-10 records"):
        data.load("test", tmp_path / "c", "cifar10")
    (tmp_path / "n").mkdir()
    np.savez(tmp_path / "n" / "test.npz", x=rng.integers(0, 256, (4, 7, 7)).astype(np.uint8), y=np.arange(4))
    n = data.load("test", tmp_path / "n", "npz")
    assert n.images.shape == (4, 7, 7) and list(n.labels) == [0, 1, 2, 3]
    np.savez(tmp_path / "n" / "test.npz", x=np.zeros((4, 7, 7), np.float32), y=np.arange(4))
    with pytest.raises(FlowError, match="'x' must be uint8 images"):
        data.load("test", tmp_path / "n", "npz")


def test_build_names_its_dataset_and_warns_when_the_card_differs(tmp_path, capsys):
    fm = _idx_folder(tmp_path / "fm", 3)
    cfg = BuildConfig(model="mlp_tiny", n_images=8, dataset="fashion-mnist", data_path=str(fm))
    api.build_zoo(cfg, out_dir=tmp_path / "out", stop_step="golden", progress=False)
    assert "trained on mnist (its card) but this build verifies on fashion-mnist" in capsys.readouterr().err
    x, y, used = api._dataset_inputs((49,), 8, str(fm), None, None, "fashion-mnist")
    split = data.load("test", fm, "fashion-mnist")
    assert used == {"name": "fashion-mnist", "split": "test", "sha256": split.sha256, "images": 8}
    assert np.array_equal(y, split.labels[:8])
    assert api._dataset_warning({"card": {"dataset": "fashion-mnist"}}, used) is None
    assert api._dataset_warning({"card": {}}, used) is not None  # a card without "dataset" is MNIST's
    with pytest.raises(FlowError, match="dataset cifar10 has images of shape \\(3, 32, 32\\); the model takes"):
        api._dataset_inputs((49,), 8, None, None, None, "cifar10")


def test_training_on_another_dataset_names_it_and_keeps_the_mnist_path(tmp_path, monkeypatch):
    fm = _idx_folder(tmp_path / "fm", 4)
    monkeypatch.chdir(tmp_path)
    card = train.train("mlp_tiny", epochs=1, batch_size=4, data_path=fm, dataset="fashion-mnist", augment=None,
                       progress=False)
    split = data.load("train", fm, "fashion-mnist")
    assert card["dataset"] == "fashion-mnist" and card["data_sha256"] == split.sha256
    written = sorted(p.name for p in (tmp_path / "build" / "checkpoints").glob("*.pt"))
    assert written == ["mlp_tiny_w4a4_fashion_mnist.pt"]  # not the MNIST name, never the shipped file
    _, loaded = train.load_checkpoint("mlp_tiny", tmp_path / "build" / "checkpoints" / written[0])
    assert loaded["dataset"] == "fashion-mnist"
