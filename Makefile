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

.PHONY: help venv run test test-unit test-notebooks lab bench student clean-venv

help:
	@echo "make run    - execute all notebooks in order (full mode) and print a results summary"
	@echo "make test   - pytest + nbval in quick mode (CAE_QUICK=1)"
	@echo "make lab    - open JupyterLab on notebooks/"
	@echo "make bench  - benchmarks: race the 2018 recipe; rate-distortion against PNG/JPEG/WebP/AVIF (JSON in benchmarks/results/)"
	@echo "make student - student copies of the notebooks in student/ (no outputs, no solutions)"

venv: $(STAMP)

# The venv is made once and refreshed only when requirements.txt changes.
$(STAMP): requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
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
	$(PY) benchmarks/race_original.py

student: $(STAMP)
	$(PY) scripts/make_student.py

clean-venv:
	rm -rf $(VENV)
