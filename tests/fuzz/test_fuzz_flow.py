"""Random small Brevitas models through the whole flow: each verifies with == or is refused up front.

The same generator drives ``make fuzz`` (fpga_flow/fuzz.py); here hypothesis draws a fixed-seed set
(derandomized, so `make test` is reproducible) and shrinks any counterexample.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fpga_flow import BuildConfig, FlowError, VerificationError, api, fuzz
from tests.conftest import needs_gxx

L = fuzz.LayerSpec
FAST = settings(derandomize=True, database=None, deadline=None, print_blob=True,
                suppress_health_check=list(HealthCheck))


@st.composite
def specs(draw, rare: bool = True) -> fuzz.ModelSpec:
    return fuzz.random_spec(lambda label, options: draw(st.sampled_from(list(options)), label=label), rare=rare)


def _up_to_golden(spec: fuzz.ModelSpec, tmp_path, n: int = 8):
    x, y = fuzz.inputs(spec, n)
    module = fuzz.make_module(spec, x)
    cfg = BuildConfig(model="fz", n_images=len(x), stock_check_images=0, io_type=spec.io_type, device="cpu")
    return api.build(module, spec.input_shape, name="fz", out_dir=tmp_path, config=cfg, images=x, labels=y,
                     stop_step="golden", progress=False)


@pytest.mark.unit
@settings(FAST, max_examples=12)
@given(spec=specs())
def test_random_models_are_supported_or_refused_by_name(spec, tmp_path_factory):
    """No compiler: export, check, channels-last and Brevitas == QONNX (both layouts), or a named refusal."""
    tmp = tmp_path_factory.mktemp("fz")
    want = spec.expected_refusal()
    try:
        _up_to_golden(spec, tmp)
    except VerificationError:
        raise  # the references disagree: a defect, never a refusal
    except FlowError as e:
        step = fuzz._failing_step(e)
        assert step in fuzz.REFUSE_STEPS, f"refused late, in step {step}: {e}"
        assert "node '" in str(e) or "input" in str(e), str(e)  # names the piece
        assert want is not None, f"unexpected refusal: {e}"
        if want is not None:
            assert want in str(e), f"expected a refusal naming {want!r}, got: {e}"
        assert not [p for p in tmp.iterdir() if ".tmp-" in p.name]
        return
    assert want is None, f"should have been refused ({want})"


@pytest.mark.csim
@needs_gxx
@settings(FAST, max_examples=4)
@given(spec=specs(rare=False))
def test_random_supported_models_are_bit_exact(spec, tmp_path_factory, monkeypatch):
    """The whole flow (g++ csim included) on models without refused features: exact, and our own Brevitas
    forward equals the csim outputs the build kept (the 'silently wrong' check)."""
    tmp = tmp_path_factory.mktemp("fz")
    monkeypatch.setenv("FPGA_FLOW_CSIM_CACHE", str(tmp / "cache"))
    o = fuzz.run_one(spec, tmp, "fz", n_images=12, stock_check=3)
    # (an activation that was all zero while calibrating gets a Brevitas scale like 1e-10, not a power of two:
    # such a model goes through LowerFloatScales and must verify too)
    assert o.status == "exact", f"{o.status}: {o.reason}\n{o.message[-2000:]}"


@pytest.mark.csim
@needs_gxx
def test_fuzz_runner_fixed_seed(capsys):
    """`fpga-flow fuzz` on a few seeded models: counts add up, nothing silently wrong or crashed."""
    outcomes, summary = fuzz.fuzz(3, seed=7, n_images=8, stock_check=2, progress=False)
    assert len(outcomes) == 3 and "models tried: 3" in summary and "silently wrong: 0" in summary
    assert {o.status for o in outcomes} <= {"exact", "refused"}, summary


# ------------------------------------------------------------------ shrunk counterexamples, now regression tests

def _dense(**kw) -> fuzz.ModelSpec:
    layers = kw.pop("layers", (L(3, 4, 4, "Int32Bias", "relu"), L(2, 4, 4, "Int32Bias", "none")))
    return fuzz.ModelSpec(**{**dict(kind="dense", input_shape=(9,), input_bits=4, input_signed=False,
                                    layers=layers, head="linear", seed=1), **kw})


@pytest.mark.unit
@pytest.mark.parametrize("spec,message", [
    # a 1x28x28 input flattened after the input quantizer: Transpose before the Quant, crash in convert
    (_dense(input_shape=(1, 28, 28), mnist=True), "flattens the 1x28x28 image input"),
])
def test_shrunk_counterexamples_are_refused_up_front(spec, message, tmp_path):
    with pytest.raises(FlowError, match=message) as e:
        _up_to_golden(spec, tmp_path)
    assert fuzz._failing_step(e.value) == "check"
    assert [p.name for p in tmp_path.iterdir() if p.suffix != ".lock"] == []  # nothing but the build's lock file
    assert all(p.is_file() and p.stat().st_size == 0 for p in tmp_path.glob(".*.lock"))


@pytest.mark.csim
@needs_gxx
@pytest.mark.parametrize("kernel", [1, 2])
def test_io_parallel_conv_relu_ties(kernel, tmp_path, monkeypatch):
    """Found by `make fuzz` (seed 1, before b06d4aa): io_parallel conv -> QuantReLU rounded ties (x.5 LSB) down
    where Brevitas rounds half to even; 16/32 images differed. Kernel 1 becomes hls4ml's PointwiseConv2D."""
    monkeypatch.setenv("FPGA_FLOW_CSIM_CACHE", str(tmp_path / "cache"))
    spec = fuzz.ModelSpec("conv", (1, 5, 8), 2, True, (L(1, 8, 5, None, "relu", kernel=kernel),
                                                       L(2, 7, 5, "Int16Bias", "relu")), "linear", "io_parallel",
                          seed=251)
    x, _ = fuzz.inputs(spec, 32)
    cfg = BuildConfig(model="par", n_images=32, stock_check_images=0, io_type="io_parallel", device="cpu")
    rep = api.build(fuzz.make_module(spec, x), spec.input_shape, name="par", out_dir=tmp_path, config=cfg,
                    images=x, progress=False)
    assert rep["exact_matches"] == rep["n_images"] == 32


@pytest.mark.csim
@needs_gxx
@pytest.mark.parametrize("layers,io_type", [
    ((L(2, 5, 5, "Int16Bias", "signed"),), "io_parallel"),
    ((L(4, 5, 5, "Int16Bias", "signed"), L(3, 4, 4, "Int32Bias", "signed"), L(2, 4, 4, "Int32Bias", "none")),
     "io_stream"),
])
def test_signed_quantizer_right_after_a_layer(layers, io_type, tmp_path, monkeypatch):
    """Found by `make fuzz` (seed 636): a signed QuantIdentity right after a layer, which hls4ml fuses into the
    layer's result type, was overwritten by the exact accumulator type: 0/16 exact (deeper: a bias off its
    grid in convert). Refused for a while; now the fused result type is kept and the accumulator stays exact."""
    monkeypatch.setenv("FPGA_FLOW_CSIM_CACHE", str(tmp_path / "cache"))
    spec = _dense(layers=layers, input_shape=(9,), input_bits=3, input_signed=True, io_type=io_type, seed=636)
    x, _ = fuzz.inputs(spec, 32)
    cfg = BuildConfig(model="sq", n_images=32, stock_check_images=32, io_type=io_type, device="cpu")
    rep = api.build(fuzz.make_module(spec, x), spec.input_shape, name="sq", out_dir=tmp_path / "out", config=cfg,
                    images=x, progress=False)
    assert rep["exact_matches"] == rep["n_images"] == 32
    assert all(c["exact_matches"] == c["n"] for c in rep["comparisons"])
