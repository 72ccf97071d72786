# The two set-up commands of the README: `make demo` (main job) and `make test`.
# Both create the virtual environment on first use: CPU PyTorch pinned first (a looser pin may pull a
# multi-GB CUDA build), then the package with its dev extras.
VENV ?= .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin
TORCH ?= torch==2.13.0
OUT ?= runs/demo
REPORT ?= report/demo

.PHONY: install data demo test lint clean

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet "$(TORCH)"
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

install: $(VENV)/.installed

data: install
	$(BIN)/activeseg data fetch nuclei

demo: data
	$(BIN)/activeseg simulate --config configs/demo.toml --seeds 2 --workers 2 --out $(OUT) --resume --report $(REPORT)

# The server's PostgreSQL store is tested against a local server (.ci/postgres starts it and prints its URL).
test: install
	ACTIVESEG_TEST_PG_URL="$${ACTIVESEG_TEST_PG_URL:-$$(.ci/postgres)}" $(PY) -m pytest -q

lint: install
	$(BIN)/ruff check activeseg tests

clean:
	rm -rf $(OUT) $(REPORT)
