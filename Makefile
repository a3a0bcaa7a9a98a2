# Two entry points: `make lab` (open the course) and `make test` (run every test). Both create the
# virtual environment on first use and are fast no-ops for it afterwards.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# JupyterLab settings for the course (no update check, no news pop-ups): the environment's own
# overrides.json, so they apply to this environment's JupyterLab only. Binder gets the same file as
# user settings (binder/postBuild).
LAB_SETTINGS := $(VENV)/share/jupyter/lab/settings/overrides.json

.PHONY: lab test test-quick env lock data clean-env

# Jupyter refuses to run as root unless told; containers (see README, macOS/Windows) often are root.
ROOT_FLAG := $(if $(filter 0,$(shell id -u)),--allow-root,)

lab: $(STAMP) $(LAB_SETTINGS)
	$(BIN)/jupyter lab $(ROOT_FLAG) notebooks/

test: $(STAMP) $(LAB_SETTINGS)
	$(BIN)/python -m pytest

# A quick iteration target: the unit tests without the slow ones (the Binder and Colab simulations,
# marked `slow`) and without executing the notebooks (nbval's, and those marked `notebooks`).
test-quick: $(STAMP) $(LAB_SETTINGS)
	$(BIN)/python -m pytest -m 'not slow and not notebooks' tests

env: $(STAMP) $(LAB_SETTINGS)

# Installs the lock without resolving: TFF's own pin on jaxlib cannot be met (see requirements.in).
# Then installs `helpers` editable from pyproject.toml, also without resolving, and without build
# isolation: setuptools and wheel come from the lock, so nothing is downloaded. (Older versions of
# this Makefile wrote a fl_course.pth instead; it is removed.)
$(STAMP): requirements.txt pyproject.toml
	@command -v $(PYTHON) >/dev/null 2>&1 || { \
	  echo "$(PYTHON) not found. TensorFlow Federated 0.87 needs CPython 3.9-3.11 on Linux x86-64;"; \
	  echo "install python3.11 (or run 'make PYTHON=python3.10 ...') - see Supported platforms in README.md."; \
	  exit 1; }
	@$(PYTHON) -c 'import sys; sys.exit(not (3, 9) <= sys.version_info[:2] <= (3, 11))' || { \
	  echo "$(PYTHON) is not CPython 3.9-3.11, which TensorFlow Federated 0.87 needs."; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --no-deps --require-hashes -r requirements.txt
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	rm -f $(VENV)/lib/python*/site-packages/fl_course.pth
	touch $@

# Regenerates requirements.txt from requirements.in (needs uv: `pip install uv`).
lock:
	uv pip compile requirements.in --override overrides.txt --python-version 3.11 \
	  --python-platform x86_64-manylinux_2_31 --generate-hashes --no-header -o requirements.txt

# Rebuilds helpers/_data/federated_digits.npz byte for byte (see data/README.md).
data: $(STAMP)
	$(BIN)/python data/build_dataset.py

$(LAB_SETTINGS): binder/jupyterlab-overrides.json $(STAMP)
	mkdir -p $(dir $@)
	cp $< $@

clean-env:
	rm -rf $(VENV)
