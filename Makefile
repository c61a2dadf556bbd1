# Two commands do everything on a fresh machine:
#   make run    execute every notebook in order (full mode), write figures, print results
#   make test   pytest for cae_utils + nbval on the notebooks, in quick mode
# Also: make lab (JupyterLab for a class), make clean-venv.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-requirements

# TensorFlow's C++ logging would otherwise fill the notebooks' outputs.
export TF_CPP_MIN_LOG_LEVEL ?= 2
# Keep the Jupyter kernel and pytest on the CPUs we have without oversubscribing.
export PYTHONDONTWRITEBYTECODE := 1

.PHONY: help venv run test test-unit test-notebooks lab bench student clean-venv app test-browser chromium

help:
	@echo "make run    - execute all notebooks in order (full mode) and print a results summary"
	@echo "make test   - pytest + nbval in quick mode (CAE_QUICK=1)"
	@echo "make lab    - open JupyterLab on notebooks/"
	@echo "make bench  - benchmarks: race the 2018 recipe; rate-distortion against PNG/JPEG/WebP/AVIF on digits and on photos (JSON in benchmarks/results/)"
	@echo "make student - student copies of the notebooks in student/ (no outputs, no solutions)"
	@echo "make app    - the codec app (notebooks/app_codec.ipynb) as a web page with Voila; prints its URL"
	@echo "make test-browser - the widgets in headless Chromium (Playwright): notebook 03's training panel"
	@echo "             in JupyterLab, the codec app in Voila; installs Debian's chromium if missing"

venv: $(STAMP)

# The venv is made once and refreshed only when requirements.txt changes.
$(STAMP): requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps -e .
	$(PY) -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (cae-course)" >/dev/null
	touch $(STAMP)

run: $(STAMP)
	$(PY) scripts/run_notebooks.py

test: $(STAMP)
	CAE_QUICK=1 $(PY) -m pytest

test-unit: $(STAMP)
	CAE_QUICK=1 $(PY) -m pytest tests

test-notebooks: $(STAMP)
	CAE_QUICK=1 $(PY) -m pytest --nbval-lax notebooks

lab: $(STAMP)
	$(VENV)/bin/jupyter lab --notebook-dir=notebooks

bench: $(STAMP)
	$(PY) benchmarks/rate_distortion.py
	$(PY) benchmarks/photo_rate_distortion.py
	$(PY) benchmarks/race_original.py
	$(PY) benchmarks/lossless.py

student: $(STAMP)
	$(PY) scripts/make_student.py

clean-venv:
	rm -rf $(VENV)

# The classroom codec app, served by Voila (code hidden). APP_IP=0.0.0.0 lets a class on the
# same network open it; the same notebook also runs as a dashboard in `make lab`.
APP_PORT ?= 8866
APP_IP   ?= 127.0.0.1
app: $(STAMP)
	@echo "Codec app: open http://$(APP_IP):$(APP_PORT)/ in a browser (Ctrl-C stops it)."
	$(VENV)/bin/voila notebooks/app_codec.ipynb --no-browser --port=$(APP_PORT) --Voila.ip=$(APP_IP)

# Browser tests (not part of `make test`): Playwright drives Debian's chromium, headless,
# against JupyterLab and Voila started on localhost in quick mode. The whole run is capped
# at 10 minutes, so a hang fails instead of blocking CI. Screenshots: figures/browser_*.png.
CHROMIUM ?= /usr/bin/chromium
test-browser: $(STAMP)
	@test -x $(CHROMIUM) || $(MAKE) --no-print-directory chromium
	CAE_QUICK=1 CAE_CHROMIUM=$(CHROMIUM) timeout 600 $(PY) -m pytest tests/browser

# Debian's chromium (Playwright's own browser download is not used).
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
chromium:
	@echo "Installing Debian's chromium for the browser tests..."
	$(SUDO) apt-get update -qq
	$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
	@test -x $(CHROMIUM) && $(CHROMIUM) --version
