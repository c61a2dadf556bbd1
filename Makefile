# Two commands do everything on a fresh machine:
#   make run    execute every notebook in order (full mode), write figures, print results
#   make test   pytest for cae_utils + nbval on the notebooks, in quick mode
# Also: make lab (JupyterLab for a class), make clean-venv.
# GPU=1 (Linux x86_64 with an NVIDIA GPU): TensorFlow with CUDA instead of the CPU-only wheel,
# e.g. `make run GPU=1` (requirements-gpu.txt; back to the CPU wheel: make clean-venv venv).
# Without make (Windows): README.md, "Without make".

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
REQUIREMENTS := $(if $(filter 1,$(GPU)),requirements-gpu.txt,requirements.txt)
STAMP  := $(VENV)/.installed-$(basename $(REQUIREMENTS))

# TensorFlow's C++ logging would otherwise fill the notebooks' outputs.
export TF_CPP_MIN_LOG_LEVEL ?= 2
# Keep the Jupyter kernel and pytest on the CPUs we have without oversubscribing.
export PYTHONDONTWRITEBYTECODE := 1

.PHONY: help venv run test test-unit test-notebooks lab bench student clean-venv app test-browser chromium
.PHONY: sync test-anywhere test-compat

help:
	@echo "make run    - execute all notebooks in order (full mode) and print a results summary"
	@echo "make test   - pytest + nbval in quick mode (CAE_QUICK=1)"
	@echo "make lab    - open JupyterLab on notebooks/"
	@echo "make bench  - benchmarks: race the 2018 recipe; rate-distortion against PNG/JPEG/WebP/AVIF on digits and on photos (JSON in benchmarks/results/)"
	@echo "make student - student copies of the notebooks in student/ (no outputs, no solutions)"
	@echo "make app    - the codec app (notebooks/app_codec.ipynb) as a web page with Voila; prints its URL"
	@echo "make test-browser - the widgets in headless Chromium (Playwright): notebook 03's training panel"
	@echo "             in JupyterLab, the codec app in Voila; installs Debian's chromium if missing"
	@echo "make sync   - the one setup cell and the Colab/Kaggle/Binder badges into every notebook and the README"
	@echo "make test-anywhere - every notebook opened alone in a fresh venv on another Python; GPU resolution"
	@echo "make test-compat - the lowest supported versions (requirements-compat.txt) on Python 3.12"
	@echo "GPU=1       - with venv/run/test/...: TensorFlow with CUDA (requirements-gpu.txt)"

venv: $(STAMP)

# The venv is made once and refreshed only when requirements.txt changes.
$(STAMP): $(REQUIREMENTS) pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
ifeq ($(GPU),1)
	$(PY) -m pip uninstall --quiet --yes tensorflow-cpu
endif
	$(PY) -m pip install --quiet -r $(REQUIREMENTS)
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

# The setup cell of every notebook and the Colab / Kaggle / Binder badges (notebooks and README),
# from the repository URL in pyproject.toml. Run it after adding or merging a notebook.
sync: $(STAMP)
	$(PY) scripts/sync_notebooks.py

# Every notebook opened alone, as on Colab or Kaggle: a fresh venv on another Python with the core
# stack at versions unlike our pins (tests/anywhere_stack.txt), the notebook alone in an empty
# folder, the course fetched from a git repository made of this working tree; offline failures;
# and the GPU switch's requirement resolution (pip --dry-run). Needs PyPI; about 20 minutes.
ANYWHERE_PYTHON ?= $(firstword $(wildcard $(HOME)/.pyenv/versions/3.13*/bin/python) python3.13)
test-anywhere: $(STAMP)
	CAE_TEST_ANYWHERE=1 CAE_ANYWHERE_PYTHON=$(ANYWHERE_PYTHON) $(PY) -m pytest \
		tests/test_setup_anywhere.py tests/test_gpu_switch.py

# The lowest versions the package declares (requirements-compat.txt) in a second venv on
# another Python: the unit tests and notebook 05 in quick mode.
COMPAT_PYTHON ?= $(firstword $(wildcard $(HOME)/.pyenv/versions/3.12*/bin/python) python3.12)
COMPAT_VENV   := .venv-compat
COMPAT_PY     := $(COMPAT_VENV)/bin/python
$(COMPAT_VENV)/.installed-requirements-compat: requirements-compat.txt pyproject.toml
	test -x $(COMPAT_PY) || $(COMPAT_PYTHON) -m venv $(COMPAT_VENV)
	$(COMPAT_PY) -m pip install --quiet --upgrade pip
	$(COMPAT_PY) -m pip install --quiet -r requirements-compat.txt
	$(COMPAT_PY) -m pip install --quiet --no-deps -e .
	touch $@
test-compat: $(COMPAT_VENV)/.installed-requirements-compat
	$(COMPAT_PY) -c "import sys, keras, numpy, tensorflow as tf; print('compat:', sys.version.split()[0], 'TF', tf.__version__, 'Keras', keras.__version__, 'numpy', numpy.__version__)"
	CAE_QUICK=1 $(COMPAT_PY) -m pytest tests -m "not slow"
	CAE_QUICK=1 $(COMPAT_PY) -m pytest notebooks/05_rate_distortion.ipynb
