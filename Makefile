# The README's quick start: `make demo` runs the main job on its local default (the whole stack on this machine,
# in the runtime that fits it, smoke-tested), `make test` runs the tests. Each sets up first, idempotently:
# the demo only what it needs (scripts/setup.sh demo), the tests everything (scripts/setup.sh test).
DEMO_STACK ?= local
VENV := .venv
PYTHON := $(VENV)/bin/python
# The virtualenv's bin first: the tests and the demo run `python3`, `llmdeploy` and pip from it.
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

.PHONY: setup setup-demo demo test unit snapshots docs readme

setup-demo:
	bash scripts/setup.sh demo

setup:
	bash scripts/setup.sh test

demo: setup-demo
	$(VENV)/bin/llmdeploy local up --stack $(DEMO_STACK)

test: setup
	$(PYTHON) -m pytest -q

# The unit tier: pure Python, no server or program (tests/unit/conftest.py enforces it); scripts/bench_unit_tier.py times it.
unit:
	$(PYTHON) -m pytest -q tests/unit

snapshots:
	UPDATE_SNAPSHOTS=1 $(PYTHON) -m pytest -q tests/unit/test_render.py tests/unit/test_ray_render.py

# The generated tables of docs/ (configuration reference, route table).
docs readme:
	$(VENV)/bin/llmdeploy config-table --update-docs
	$(VENV)/bin/llmdeploy route-table --update-docs
