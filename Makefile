# Everything a fresh machine needs: `make test` and `make demo` create .venv and install into it.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed
OUT ?= demo_output
# Pin torch with '===' so pip takes the registry build that matches torchvision, never a local
# '+cpu' wheel that a machine's find-links folder may offer (torchvision's compiled ops fail with it).
TORCH_PAIR := "torch===2.13.0" "torchvision==0.28.0"

.PHONY: install test demo lint bench clean

install: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet $(TORCH_PAIR)
	$(PIP) install --quiet -e ".[dev]" $(TORCH_PAIR)
	$(PY) -c "import torch, torchvision, open_clip; torch.ops.torchvision.nms; print('torch', torch.__version__, 'torchvision', torchvision.__version__, 'open_clip', open_clip.__version__)"
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q

demo: $(STAMP)
	$(VENV)/bin/fmclip demo --out $(OUT)

lint: $(STAMP)
	$(VENV)/bin/ruff check .

bench: $(STAMP)
	$(PY) benchmarks/synth_speed.py

clean:
	rm -rf $(VENV) $(OUT) .pytest_cache
