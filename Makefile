# Thin layer over the `fpga-flow` CLI. Every target creates .venv first if it is missing.
MODEL ?= convnet
N ?= 1000
W ?= 4
A ?= 4
BACKEND ?= hls4ml
PYTHON ?= python3
VENV ?= .venv
FUSE ?= 1
FINN_PLUS ?= finn-plus==1.6.1
SPACE ?= default

# Every variable reaches the shell through the environment and is expanded there inside quotes, never pasted
# into the command line: `make hls 'MODEL=a; touch X #'` runs nothing and exits with the CLI's own error.
# ARGS (extra flags) is split into words by Python's shlex (shell quoting rules, nothing executed or globbed).
export MODEL N W A BACKEND PYTHON VENV ARGS SEED FINN_PLUS SPACE
PY := "$$VENV/bin/python"
# $(PYRUN) MODULE ARG...: python -m MODULE ARG... followed by the words of $ARGS
PYRUN := $(PY) -c 'import os, runpy, shlex, sys; sys.argv[2:] += shlex.split(os.environ.get("ARGS", "")); \
	runpy.run_module(sys.argv.pop(1), run_name="__main__", alter_sys=True)'
FLOW := $(PYRUN) fpga_flow
MODEL_ARGS := --model "$$MODEL" -n "$$N" --weight-bits "$$W" --act-bits "$$A" $(if $(filter 0 no false,$(FUSE)),--no-fuse)
BUILD_ARGS := $(MODEL_ARGS) --backend "$$BACKEND"

# make exits with the CLI's own exit code (0 ok, 1 usage/input, 2 missing tool, 3 not bit-exact), not make's
# usual 2 for every failure: the command runs in `.run-<target>`, which records its code, and `<target>` then
# ends make with it through `$(exit-with CODE)`, a 5-line GNU make plugin built here on first use (`load`,
# GNU make >= 4.0 with gnumake.h). Without the plugin make still fails, with its own code 2.
.DEFAULT_GOAL := help
MAKE_STATE := build/.make
EXIT_FILE = $(MAKE_STATE)/$(1).$(MAKE_PID).exit
MAKE_PID := $(shell echo $$PPID)
define EXIT_WITH_C
#include <gnumake.h>
#include <stdlib.h>
int plugin_is_GPL_compatible;
static char *exit_with(const char *name, unsigned int argc, char **argv) { exit(atoi(argv[0])); }
int exit_with_gmk_setup(const gmk_floc *floc) { gmk_add_function("exit-with", exit_with, 1, 1, 0); return 1; }
endef
-load $(MAKE_STATE)/exit_with.so
$(MAKE_STATE)/exit_with.so:
	@$(shell mkdir -p $(MAKE_STATE))$(file >$(MAKE_STATE)/exit_with.c,$(EXIT_WITH_C))$(CC) -shared -fPIC \
		-o $@ $(MAKE_STATE)/exit_with.c 2>/dev/null || true
# $(call run,TARGET,COMMAND): the recipe line of .run-TARGET
run = @mkdir -p $(MAKE_STATE); $(2); echo $$? > $(call EXIT_FILE,$(1))
CLI_TARGETS := hls csim train test test-all fuzz bench bench-accuracy synth rtl sweep models
$(CLI_TARGETS): %: .run-%
	@$(eval code := $(or $(file <$(call EXIT_FILE,$*)),1))$(shell rm -f $(call EXIT_FILE,$*))$(if \
		$(filter-out 0,$(code)),$(exit-with $(code)))exit $(code)

.PHONY: help clean venv venv-finn $(CLI_TARGETS) $(addprefix .run-,$(CLI_TARGETS))
help:
	@echo "make hls MODEL=convnet [N=1000|all]  build the HLS project and verify it bit-exact in csim"
	@echo "make hls MODEL=convnet FUSE=0        the same without the fused conv+ReLU kernels (for comparison)"
	@echo "make csim MODEL=convnet N=5000       re-verify the existing project"
	@echo "make train MODEL=convnet             quantization-aware training -> build/checkpoints/ (shipped ones untouched)"
	@echo "make test                            the test suite (no vendor tools needed; the slow tests left out)"
	@echo "make test-all                        every test, the slow ones too (nightly; docs/testing.md)"
	@echo "make fuzz [N=500] [SEED=0]           random models through the flow (default 50): exact or refused, never wrong (resumable)"
	@echo "make bench MODEL=convnet             step wall times, csim and torch images/s -> docs/bench/"
	@echo "make bench-accuracy                  accuracy of float/W8A8/W4A4/W2A2/KD/pruned recipes -> docs/bench/"
	@echo "make synth MODEL=convnet             vendor synthesis (needs Vitis HLS; ARGS='--vivado --part P --clock-ns T')"
	@echo "make hls MODEL=convnet BACKEND=rtl    our folded streaming Verilog == golden in Verilator, yosys counts, nextpnr Fmax"
	@echo "make hls MODEL=mlp BACKEND=finn      FINN: every stage == golden, FINN's estimates (installs the finn extra)"
	@echo "make sweep MODEL=convnet [SPACE=default|convnet_bench|FILE.toml]  Ray Tune search: train, build, verify ==, cost"
	@echo "                                     -> build/sweep/<model>/report.md, results.csv, pareto.png (RAY_ADDRESS: a cluster)"
	@echo "make models | make clean             list models | remove build/"
	@echo "extra CLI flags: ARGS='--io-type io_parallel ...'; see: $(VENV)/bin/python -m fpga_flow hls --help"
	@echo "make exits with the CLI's code: 0 ok, 1 usage/input, 2 missing tool, 3 not bit-exact"

venv: $(VENV)/.installed
$(VENV)/.installed: pyproject.toml
	@test -x $(PY) || "$$PYTHON" -m venv "$$VENV"
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[test,sweep]'  # sweep (Ray Tune): make sweep, and its test in make test
	@touch $@

# FINN backend (BACKEND=finn): the finn extra first, then finn-plus itself with --no-deps, because its own pins
# (onnx, onnxruntime, protobuf, brevitas) conflict with this project's (docs/finn.md)
venv-finn: $(VENV)/.installed-finn
$(VENV)/.installed-finn: $(VENV)/.installed
	$(PY) -m pip install -q -e '.[test,finn]'
	$(PY) -m pip install -q --no-deps "$$FINN_PLUS"
	@touch $@

.run-hls: venv $(if $(filter finn,$(BACKEND)),venv-finn)
	$(call run,hls,$(FLOW) hls $(BUILD_ARGS))

.run-csim: venv
	$(call run,csim,$(FLOW) csim $(BUILD_ARGS))

.run-train: venv
	$(call run,train,$(FLOW) train --model "$$MODEL" --weight-bits "$$W" --act-bits "$$A")

# the tests marked slow (tests/slow.py) run in `make test-all` (nightly); each has a smaller default-run cover
.run-test: venv
	$(call run,test,$(PYRUN) pytest -q -m "not slow")

.run-test-all: venv
	$(call run,test-all,$(PYRUN) pytest -q)

# random small Brevitas models through the whole flow; N models when given (e.g. make fuzz N=500; else the
# CLI's default, not the image count N of the other targets), SEED for the generator. The journal makes a
# long run resumable: run the same command again and the models it holds are not rebuilt (delete it to redo).
.run-fuzz: venv
	$(call run,fuzz,$(FLOW) fuzz $(if $(filter command line environment,$(origin N)),-n "$$N") --seed "$${SEED:-0}" --log build/fuzz-failures.jsonl --journal "build/fuzz/journal-seed$${SEED:-0}.jsonl")

.run-bench: venv
	$(call run,bench,$(FLOW) bench $(MODEL_ARGS) --doc-dir docs/bench)

# MNIST accuracy of every training recipe -> docs/bench/accuracy.md (rows already measured in build/accuracy are kept)
.run-bench-accuracy: venv
	$(call run,bench-accuracy,nice -n 10 $(FLOW) bench-accuracy --doc docs/bench/accuracy.md)

.run-synth: venv
	$(call run,synth,$(FLOW) synth --model "$$MODEL")

# the rtl backend (the same as make hls BACKEND=rtl, plus its own flags): Verilator ==, yosys counts
.run-rtl: venv
	$(call run,rtl,nice -n 5 $(FLOW) rtl $(MODEL_ARGS))

# design-space search on Ray Tune (local, or the cluster in RAY_ADDRESS); N (images verified per trial) only when given
.run-sweep: venv
	$(call run,sweep,nice -n 10 $(FLOW) sweep --model "$$MODEL" --space "$$SPACE" $(if $(filter command line environment,$(origin N)),-n "$$N"))

.run-models: venv
	$(call run,models,$(FLOW) models)

clean:
	rm -rf build
