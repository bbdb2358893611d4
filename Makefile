# moat_nb — set-up is part of every target: on a fresh machine each one is the only command needed.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
DATA   ?= out/data
N      ?= 500

.PHONY: install test demo bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest

demo: $(STAMP)
	rm -rf $(DATA)
	$(VENV)/bin/moat-nb demo --data $(DATA) --per-env $(N)

bench: $(STAMP)
	$(PY) -m bench

clean:
	rm -rf out .pytest_cache bench/results.json
