# fairseq-nar-plugins: install, test, demo.
#   make install   build .venv/ (idempotent): torch, fairseq-fixed built against it, this package
#   make test      install, then run the test suite (one pytest worker per core: TEST_WORKERS=1 for one)
#   make demo      install, then the main job: Multi30k en->de AR teacher -> distillation -> CTC NAT student,
#                  decode, sacreBLEU and examples (CPU, or a GPU when torch sees one)
#   make bench     install, then train every Multi30k system for BENCH_MINUTES each, benchmark, update README
#   make bench-qg  install, then MiniLM-initialised against random NAR systems on SQuAD question generation
#                  (examples/qg/bench.sh, QG_MINUTES each), benchmark, QG scores and learning curves
SHELL := /bin/bash
PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
PINS := requirements/pins.txt
STAMP := $(VENV)/.installed

# demo settings (override on the command line: make demo DATA=/path/to/multi30k STUDENT_UPDATES=1000)
DATA ?= ../shared/data/multi30k-en-de
WORK ?= work/demo
STUDENT_UPDATES ?= 500
TEACHER_UPDATES ?= 800

# test settings: pytest-xdist workers (auto: one per core; each test file runs whole on one worker, its
# subprocesses on one thread each)
TEST_WORKERS ?= auto

# bench settings: training minutes per system (each on one core, as many at a time as there are cores)
BENCH_WORK ?= work/bench
BENCH_MINUTES ?= 60
QG_DATA ?= ../shared/data/squad-qg-du2017
QG_WORK ?= work/qg
QG_MINUTES ?= 40

.PHONY: install test demo bench bench-qg clean-venv

install: $(STAMP)

$(STAMP): setup.py $(PINS) Makefile
	@bash scripts/install.sh "$(PYTHON)" "$(VENV)" "$(PINS)"
	@touch $(STAMP)

test: install
	$(VENV)/bin/python -m pytest tests -n $(TEST_WORKERS) --dist loadfile --durations=30

demo: install
	PATH="$(abspath $(VENV))/bin:$$PATH" bash examples/multi30k/demo.sh "$(DATA)" "$(WORK)" "$(STUDENT_UPDATES)" "$(TEACHER_UPDATES)"

bench: install
	PATH="$(abspath $(VENV))/bin:$$PATH" bash examples/multi30k/bench.sh "$(DATA)" "$(BENCH_WORK)" "$(BENCH_MINUTES)"

bench-qg: install
	PATH="$(abspath $(VENV))/bin:$$PATH" bash examples/qg/bench.sh "$(QG_DATA)" "$(QG_WORK)" "$(QG_MINUTES)"

clean-venv:
	rm -rf $(VENV)
