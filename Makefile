# Two entry points, each doing all set-up on a fresh machine:
#   make train   trains the main job (configs/char_rnn_shakespeare.gin)
#   make test    runs the test suite
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
INSTALLED := $(VENV)/.installed
OUTPUT_DIR ?= runs/char_rnn_shakespeare

# Use the prepared datasets beside this checkout when the user names none.
ifeq ($(TFDS_DATA_DIR),)
  ifneq ($(wildcard ../shared/tensorflow_datasets),)
    export TFDS_DATA_DIR := $(abspath ../shared/tensorflow_datasets)
  endif
endif

.PHONY: train test install

install: $(INSTALLED)

$(INSTALLED): setup.cfg constraints.txt pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e '.[test]'
	touch $@

train: $(INSTALLED)
	$(PY) train.py --gin_file configs/char_rnn_shakespeare.gin --output_dir $(OUTPUT_DIR)

# Two pytest workers (pytest-xdist), each running whole files, so a file's
# module fixtures are made once: on 2 cores about half the serial time.
PYTEST_WORKERS ?= -n 2 --dist loadfile

test: $(INSTALLED)
	$(PY) -m pytest -q $(PYTEST_WORKERS) tests
