# The README's quick start: `make demo` runs the main job on its local default (the whole stack in a local
# QEMU VM, smoke-tested), `make test` runs the tests. Both set up first (scripts/setup.sh is idempotent).
DEMO_STACK ?= local

.PHONY: setup demo test unit snapshots readme

setup:
	bash scripts/setup.sh

demo: setup
	llmdeploy local up --stack $(DEMO_STACK)

test: setup
	python3 -m pytest -q

# The unit tier: pure Python, no server or program (tests/unit/conftest.py enforces it); scripts/bench_unit_tier.py times it.
unit:
	python3 -m pytest -q tests/unit

snapshots:
	UPDATE_SNAPSHOTS=1 python3 -m pytest -q tests/unit/test_render.py

readme:
	llmdeploy config-table --update-readme
