# Two commands for a fresh machine:
#   make demo   -- set up .venv if needed, then run the main job
#   make test   -- set up .venv if needed, then run the test suite
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# torch 2.14.1 with torchvision 0.29.1 is the pair whose torchvision imports
# (pytorch-fid needs it); installing the pin first keeps pip from choosing a
# torch build on its own when the project's extras ask for torch.
TORCH_PIN := torch==2.14.1 torchvision==0.29.1

.PHONY: demo test test-all bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet $(TORCH_PIN)
	$(PY) -m pip install --quiet -e '.[torch,demo,dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m jaxfactor demo --out demo_out

test: $(STAMP)
	$(PY) -m pytest -q

test-all: $(STAMP)
	$(PY) -m pytest -q -m ''

bench: $(STAMP)
	env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE $(PY) benchmarks/bench_pca.py

clean:
	rm -rf $(VENV) demo_out
