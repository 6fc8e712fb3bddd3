# tinyc: `make demo` (set-up, then examples/demo.py: inference, and the deployed learner on the
# emulated 256 KB board) and `make test` (set-up + tests).
# Set-up installs Debian packages when they are missing (apt-get, --no-install-recommends) and a
# virtual environment in .venv with the package (editable) and its test dependencies.
VENV   ?= .venv
PYTHON ?= python3
PY      = $(VENV)/bin/python
APT_PACKAGES = gcc libc6-dev gcc-arm-none-eabi libnewlib-arm-none-eabi qemu-system-arm
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: setup system-packages demo test bench clean

setup: system-packages $(VENV)/.installed

system-packages:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $$missing; \
	fi

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $@

demo: setup
	$(PY) examples/demo.py

test: setup
	$(PY) -m pytest -q -n auto --dist loadscope --durations=20

bench: setup
	@dpkg -s dataset-fashion-mnist >/dev/null 2>&1 || { $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends dataset-fashion-mnist; }
	$(PY) bench/inference_memory.py
	$(PY) bench/quant_quality.py
	$(PY) bench/firmware.py

clean:
	rm -rf out build .pytest_cache
