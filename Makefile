# Thin layer over the `fpga-flow` CLI. Every target creates .venv first if it is missing.
MODEL ?= convnet
N ?= 1000
W ?= 4
A ?= 4
BACKEND ?= hls4ml
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
FLOW := $(PY) -m fpga_flow
FUSE ?= 1
BUILD_ARGS := --model $(MODEL) -n $(N) --weight-bits $(W) --act-bits $(A) --backend $(BACKEND) \
	$(if $(filter 0 no false,$(FUSE)),--no-fuse) $(ARGS)

FINN_PLUS ?= finn-plus==1.6.1

.PHONY: help hls csim train test bench synth models clean venv venv-finn fuzz bench-accuracy rtl
help:
	@echo "make hls MODEL=convnet [N=1000|all]  build the HLS project and verify it bit-exact in csim"
	@echo "make hls MODEL=convnet FUSE=0        the same without the fused conv+ReLU kernels (for comparison)"
	@echo "make csim MODEL=convnet N=5000       re-verify the existing project"
	@echo "make train MODEL=convnet             quantization-aware training -> build/checkpoints/"
	@echo "make test                            the test suite (no vendor tools needed)"
	@echo "make fuzz N=500                      random models through the flow: exact or refused, never wrong"
	@echo "make bench MODEL=convnet             step wall times, csim and torch images/s -> docs/bench/"
	@echo "make bench-accuracy                  accuracy of float/W8A8/W4A4/W2A2/KD/pruned recipes -> docs/bench/"
	@echo "make synth MODEL=convnet             vendor synthesis (needs Vitis HLS; ARGS='--vivado --part P --clock-ns T')"
	@echo "make hls MODEL=mlp_tiny BACKEND=rtl   our Verilog (da4ml) == golden in Verilator, yosys counts (= make rtl)"
	@echo "make hls MODEL=mlp BACKEND=finn      FINN: every stage == golden, FINN's estimates (installs the finn extra)"
	@echo "make models | make clean             list models | remove build/"
	@echo "extra CLI flags: ARGS='--io-type io_parallel ...'; see: $(FLOW) hls --help"

venv: $(VENV)/.installed
$(VENV)/.installed: pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[test]'
	@touch $@

# FINN backend (BACKEND=finn): the finn extra first, then finn-plus itself with --no-deps, because its own pins
# (onnx, onnxruntime, protobuf, brevitas) conflict with this project's (docs/finn.md)
venv-finn: $(VENV)/.installed-finn
$(VENV)/.installed-finn: $(VENV)/.installed
	$(PY) -m pip install -q -e '.[test,finn]'
	$(PY) -m pip install -q --no-deps $(FINN_PLUS)
	@touch $@

hls: venv $(if $(filter finn,$(BACKEND)),venv-finn)
	$(FLOW) hls $(BUILD_ARGS)

csim: venv
	$(FLOW) csim $(BUILD_ARGS)

train: venv
	$(FLOW) train --model $(MODEL) --weight-bits $(W) --act-bits $(A) $(ARGS)

test: venv
	$(PY) -m pytest -q $(ARGS)

# random small Brevitas models through the whole flow; N models (e.g. make fuzz N=500), SEED for the generator
fuzz: venv
	$(FLOW) fuzz -n $(N) --seed $(or $(SEED),0) --log build/fuzz-failures.jsonl $(ARGS)

bench: venv
	$(FLOW) bench $(BUILD_ARGS) --doc-dir docs/bench

# MNIST accuracy of every training recipe -> docs/bench/accuracy.md (rows already measured in build/accuracy are kept)
bench-accuracy: venv
	nice -n 10 $(FLOW) bench-accuracy --doc docs/bench/accuracy.md $(ARGS)

synth: venv
	$(FLOW) synth --model $(MODEL) $(ARGS)

# the rtl backend (same as make hls BACKEND=rtl): Verilog, Verilator simulation (==), yosys synth_xilinx counts
rtl: venv
	nice -n 5 $(FLOW) rtl $(filter-out --backend $(BACKEND),$(BUILD_ARGS))

models: venv
	@$(FLOW) models

clean:
	rm -rf build
