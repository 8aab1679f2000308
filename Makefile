# Two commands do all the set-up: `make run` starts the editor, `make test` runs the tests.
VENV   ?= .venv
PYTHON ?= python3
PY     := $(VENV)/bin/python
ARGS   ?=

.PHONY: run test browser bench clean

run: $(VENV)/.installed-app
	$(PY) app.py $(ARGS)

test: $(VENV)/.installed-dev browser
	$(PY) -m pytest

# The browser test drives Debian's Chromium (Playwright cannot download its own browser here).
browser:
	@if [ ! -x /usr/bin/chromium ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null); \
	  else echo "note: /usr/bin/chromium is missing (apt-get install chromium); the browser test will be skipped"; fi; \
	fi

bench: $(VENV)/.installed-dev
	$(PY) -m editor bench $(ARGS)

$(VENV)/.installed-app: requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps -e .
	touch $@

$(VENV)/.installed-dev: requirements.txt requirements-dev.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements-dev.txt
	$(PY) -m pip install -q --no-deps -e .
	touch $@ $(VENV)/.installed-app

clean:
	rm -rf $(VENV) .pytest_cache test-artifacts *.egg-info
