# Two commands from a fresh clone: `make demo` and `make test`. Each sets up .venv itself.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
TORCH := torch==2.13.0
DEMO_DIR := demo-output

.PHONY: demo test venv test-deps benchmark web browser clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# Pinned CPU-sized torch first, so nothing below pulls a newer (CUDA) build.
	$(PY) -m pip install --quiet "$(TORCH)"
	$(PY) -m pip install --quiet -e . "$(TORCH)"
	touch $@

$(VENV)/.test-installed: $(VENV)/.installed
	$(PY) -m pip install --quiet -e ".[test]" "$(TORCH)"
	touch $@

venv: $(VENV)/.installed

test-deps: $(VENV)/.test-installed

demo: $(VENV)/.installed
	$(PY) -m liverseg sample --dest $(DEMO_DIR)/sample
	$(PY) -m liverseg segment $(DEMO_DIR)/sample/lits117_image.nii.gz -o $(DEMO_DIR)/lits117_liverseg.nii.gz --overwrite
	$(PY) -m liverseg overlay $(DEMO_DIR)/sample/lits117_image.nii.gz $(DEMO_DIR)/lits117_liverseg.nii.gz \
		$(DEMO_DIR)/lits117_overlay.png --reference $(DEMO_DIR)/sample/lits117_label.nii.gz --overwrite
	$(PY) -m liverseg evaluate $(DEMO_DIR)/lits117_liverseg.nii.gz $(DEMO_DIR)/sample/lits117_label.nii.gz \
		--json-out $(DEMO_DIR)/lits117_metrics.json --overwrite
	@echo "Labelmap: $(DEMO_DIR)/lits117_liverseg.nii.gz  Overlay: $(DEMO_DIR)/lits117_overlay.png"

$(VENV)/.web-installed: $(VENV)/.installed
	$(PY) -m pip install --quiet -e ".[web]" "$(TORCH)"
	touch $@

# The browser app: each browser that opens http://127.0.0.1:8080/ gets its own session. ARGS="--help" for options.
web: $(VENV)/.web-installed
	$(PY) -m liverseg_web $(ARGS)

# Debian's chromium and its driver for the browser test (Testing/web), installed where apt-get can (as root);
# elsewhere that test is skipped and says why.
browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
	{ [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; } || \
	echo "chromium/chromedriver not installed (needs root and apt-get): the browser test will be skipped"

test: $(VENV)/.test-installed browser
	$(PY) -m pytest -q Testing

benchmark: $(VENV)/.installed
	$(PY) -m liverseg benchmark --shape 512x512x200

clean:
	rm -rf $(DEMO_DIR) .pytest_cache
