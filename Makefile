# The README's quick start: `make demo` runs the main job on its local default (the whole stack in a local
# QEMU VM, smoke-tested), `make test` runs the tests. Both set up first (scripts/setup.sh is idempotent).
DEMO_STACK ?= local

.PHONY: setup demo test snapshots readme

setup:
	bash scripts/setup.sh

demo: setup
	llmdeploy local up --stack $(DEMO_STACK)

test: setup
	python3 -m pytest -q

snapshots:
	UPDATE_SNAPSHOTS=1 python3 -m pytest -q tests/test_render.py

readme:
	llmdeploy config-table --update-readme
