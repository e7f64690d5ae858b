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
BUILD_ARGS := --model $(MODEL) -n $(N) --weight-bits $(W) --act-bits $(A) --backend $(BACKEND) $(ARGS)

.PHONY: help hls csim train test bench synth models clean venv
help:
	@echo "make hls MODEL=convnet [N=1000|all]  build the HLS project and verify it bit-exact in csim"
	@echo "make csim MODEL=convnet N=5000       re-verify the existing project"
	@echo "make train MODEL=convnet             quantization-aware training -> models/checkpoints/"
	@echo "make test                            the test suite (no vendor tools needed)"
	@echo "make bench MODEL=convnet             step wall times, csim and torch images/s -> docs/bench/"
	@echo "make synth MODEL=convnet             vendor synthesis (needs Vitis HLS)"
	@echo "make models | make clean             list models | remove build/"
	@echo "extra CLI flags: ARGS='--io-type io_parallel ...'; see: $(FLOW) hls --help"

venv: $(VENV)/.installed
$(VENV)/.installed: pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[test]'
	@touch $@

hls: venv
	$(FLOW) hls $(BUILD_ARGS)

csim: venv
	$(FLOW) csim $(BUILD_ARGS)

train: venv
	$(FLOW) train --model $(MODEL) --weight-bits $(W) --act-bits $(A) $(ARGS)

test: venv
	$(PY) -m pytest -q $(ARGS)

bench: venv
	$(FLOW) bench $(BUILD_ARGS)

synth: venv
	$(FLOW) synth --model $(MODEL)

models: venv
	@$(FLOW) models

clean:
	rm -rf build
