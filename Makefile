# prx-nb: `make speedrun` trains and judges a Shapes model on this machine; `make test` runs every test.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
OUT ?= runs/shapes-cpu
PRESET ?= shapes-cpu
# pytest: TEST_WORKERS processes at once (0: one, without xdist), TEST_THREADS torch threads each
TEST_WORKERS ?= 2
TEST_THREADS ?= 1

.PHONY: venv speedrun test nbtest pytest export clean-nbs check-sync

$(BIN)/prx-nb: pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $@

venv: $(BIN)/prx-nb ## make .venv with pip and install prx-nb with its extras

speedrun: venv ## train, save, judge and report a Shapes model in $(OUT)
	$(BIN)/prx-nb speedrun --preset $(PRESET) --out $(OUT) --overwrite

nbtest: venv ## run every notebook (cells flagged slow/gpu/multigpu are skipped)
	$(BIN)/nbdev-test --n-workers 1 --timing

pytest: venv ## CLI, packaging and artifact tests: TEST_WORKERS at once, a test file to a worker, a thread each
	OMP_NUM_THREADS=$(TEST_THREADS) $(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile --durations=15 tests

check-sync: venv ## notebooks and package agree, notebooks are clean
	$(BIN)/nbdev-export && git diff --exit-code -- prx_nb
	$(BIN)/nbdev-clean && git diff --exit-code -- nbs

test: nbtest pytest ## everything CI runs

export: venv
	$(BIN)/nbdev-export

clean-nbs: venv
	$(BIN)/nbdev-clean
