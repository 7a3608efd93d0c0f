# The two commands of the README. Both set up a fresh machine first (idempotent, seconds when already done).
VENV ?= .venv

.PHONY: quick test setup setup-test
quick: setup            ## install, then run the main job: the quick suite on the embedded data + comparison table
	$(VENV)/bin/sema-bench

test: setup-test        ## install (incl. OpenMMLab), then run the whole test suite
	SEMA_REQUIRE_OPENMMLAB=1 OMP_NUM_THREADS=1 $(VENV)/bin/python -m pytest -n 2 -q --durations=15

setup:
	scripts/setup.sh

setup-test:
	scripts/setup.sh --openmmlab
