# Two entry points: `make lab` (open the course) and `make test` (run every test). Both create the
# virtual environment on first use and are fast no-ops for it afterwards.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: lab test env lock data clean-env

# Jupyter refuses to run as root unless told; containers (see README, macOS/Windows) often are root.
ROOT_FLAG := $(if $(filter 0,$(shell id -u)),--allow-root,)

lab: $(STAMP)
	$(BIN)/jupyter lab $(ROOT_FLAG) notebooks/

test: $(STAMP)
	$(BIN)/python -m pytest

env: $(STAMP)

# Installs the lock without resolving: TFF's own pin on jaxlib cannot be met (see requirements.in).
$(STAMP): requirements.txt
	@command -v $(PYTHON) >/dev/null 2>&1 || { \
	  echo "$(PYTHON) not found. TensorFlow Federated 0.87 needs CPython 3.9-3.11 on Linux x86-64;"; \
	  echo "install python3.11 (or run 'make PYTHON=python3.10 ...') - see Supported platforms in README.md."; \
	  exit 1; }
	@$(PYTHON) -c 'import sys; sys.exit(not (3, 9) <= sys.version_info[:2] <= (3, 11))' || { \
	  echo "$(PYTHON) is not CPython 3.9-3.11, which TensorFlow Federated 0.87 needs."; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --no-deps --require-hashes -r requirements.txt
	$(BIN)/python -c 'import site, pathlib; pathlib.Path(site.getsitepackages()[0], "fl_course.pth").write_text("$(CURDIR)\n")'
	touch $@

# Regenerates requirements.txt from requirements.in (needs uv: `pip install uv`).
lock:
	uv pip compile requirements.in --override overrides.txt --python-version 3.11 \
	  --python-platform x86_64-manylinux_2_31 --generate-hashes --no-header -o requirements.txt

# Rebuilds data/federated_digits.npz byte for byte.
data: $(STAMP)
	$(BIN)/python data/build_dataset.py

clean-env:
	rm -rf $(VENV)
