# moat_nb — set-up is part of every target: on a fresh machine each one is the only command needed.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
DATA   ?= out/data
N      ?= 500

.PHONY: install test demo bench clean browser-deps lab

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

# Browser tests (pytest -m browser) drive JupyterLab in Debian's chromium; Playwright cannot
# download a browser here. Installed when missing and we are root; otherwise those tests skip.
CHROMIUM := /usr/bin/chromium

browser-deps:
	@if [ ! -x $(CHROMIUM) ] && [ "$$(id -u)" = "0" ] && command -v apt-get >/dev/null; then \
		echo "installing Debian's chromium for the browser tests"; \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
			|| echo "could not install chromium: browser tests will be skipped"; \
	fi

test: $(STAMP) browser-deps
	$(PY) -m pytest

# The sandbox, the compliance proof (prod exchange on staging, modified payload, expectations) and
# the what-if notebook; reports under out/, paths and verdict printed; exit 1 unless the proof holds.
demo: $(STAMP)
	rm -rf $(DATA)
	$(VENV)/bin/moat-nb demo --data $(DATA) --per-env $(N) --out out

# The sandbox (history kept in $(LAB_DATA) between sessions) and JupyterLab on notebooks/, with
# MOAT_URL / MOAT_USER / MOAT_PASSWORD set for the kernels; Ctrl-C stops both.
LAB_DATA ?= out/lab-data
lab: $(STAMP)
	$(PY) -m moat_nb.demo lab --data $(LAB_DATA) --per-env $(N)

bench: $(STAMP)
	$(PY) -m bench

clean:
	rm -rf out .pytest_cache bench/results.json
