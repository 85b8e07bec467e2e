# Two commands for a fresh machine:
#   make demo   -- set up .venv if needed, then run the main job
#   make test   -- set up .venv if needed, then run the test suite
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# The torch pin (torch==... torchvision==...) lives in jaxfactor/_extras.py, the
# one place the CLI's install hint reads too; installing it first keeps pip from
# choosing a torch build on its own when the project's extras ask for torch.
TORCH_PIN := $(shell $(PYTHON) jaxfactor/_extras.py)

.PHONY: demo test test-all test-portable test-salts bench clean

$(STAMP): pyproject.toml jaxfactor/_extras.py
	@test -n "$(TORCH_PIN)" || { echo "cannot read the torch pin: $(PYTHON) jaxfactor/_extras.py failed" >&2; exit 1; }
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

# The default suite under other machines' numerics (OpenBLAS core types, XLA's
# AVX2 kernels, an AMD-like mix), then on other random data. Not run by CI.
test-portable: $(STAMP)
	$(PY) -m tests.portable

test-salts: $(STAMP)
	$(PY) -m tests.portable --salts 0 1 2 3 4

bench: $(STAMP)
	env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE $(PY) benchmarks/bench_pca.py

clean:
	rm -rf $(VENV) demo_out
