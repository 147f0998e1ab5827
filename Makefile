# softcache: the stage graph.
#
#   data ──> teacher ──> teacher-logits (HDF5 cache) ──> student ──> report
#
# Artifacts are file targets. Parameters that change an artifact are written to small
# stamp files under $(DATA_DIR)/params/ that are rewritten only when their content
# changes, so `make student T=8` re-runs only the student, while a new TEACHER_EPOCHS
# rebuilds teacher and cache. Student runs are named by their parameters, so every
# T/ALPHA/SEED gets its own run directory and earlier runs are kept.

SHELL := /bin/bash
.DEFAULT_GOAL := help

# --- variables (all optional; see README.md) -----------------------------------------
PYTHON         ?= python3
VENV           ?= .venv
TORCH_SPEC     ?= torch==2.13.0
DATA_DIR       ?= data
DATASET        ?= fashion-mnist
SOURCE         ?=
LIMIT          ?= 0
TEACHER        ?= auto
TEACHER_EPOCHS ?= 0
TEACHER_SEED   ?= 0
TEACHER_T      ?= 1
CACHE_DTYPE    ?= float32
DEVICE         ?= auto
STUDENT        ?= cnn-tiny
T              ?= 4
ALPHA          ?= 0.9
SEED           ?= 0
EPOCHS         ?= 5
THREADS        ?= 0
DEMO_STUDENTS  ?= mlp cnn-tiny cnn-small

# --- derived paths ---------------------------------------------------------------------
SC           := $(VENV)/bin/softcache
INSTALLED    := $(VENV)/.installed
DATA_NAME    := $(basename $(notdir $(DATASET)))
DATA_FILE    := $(DATA_DIR)/dataset/$(DATA_NAME).npz
TEACHER_DIR  := $(DATA_DIR)/teacher/$(DATA_NAME)
TEACHER_CKPT := $(TEACHER_DIR)/teacher.pt
CACHE        := $(DATA_DIR)/cache/$(DATA_NAME)-T$(TEACHER_T)-$(CACHE_DTYPE).h5
ARM          := $(if $(filter 0 0.0 0.00,$(ALPHA)),scratch,T$(T)-a$(ALPHA))
RUN          ?= $(STUDENT)-$(ARM)-s$(SEED)-e$(EPOCHS)
RUN_DIR      := $(DATA_DIR)/runs/$(RUN)
REPORT       := $(DATA_DIR)/reports/results.md
PARAMS       := $(DATA_DIR)/params

# $(call stamp,FILE,CONTENT) rewrites FILE only when CONTENT differs, so its mtime changes
# exactly when the parameters do. Stamps are written while the Makefile is read (not by
# a rule), so the graph below is plain file dependencies and `make -n` / `make -q` tell
# the truth about what would run.
stamp = $(shell mkdir -p $(dir $1) && c='$2' && \
	if [ "$$(cat $1 2>/dev/null)" != "$$c" ]; then printf '%s\n' "$$c" > $1; fi)
DATA_STAMP    := $(PARAMS)/data-$(DATA_NAME).txt
TEACHER_STAMP := $(PARAMS)/teacher-$(DATA_NAME).txt
ifneq ($(filter-out help venv test bench clean clean-students,$(MAKECMDGOALS)),)
$(call stamp,$(DATA_STAMP),dataset=$(DATASET) source=$(SOURCE) limit=$(LIMIT))
$(call stamp,$(TEACHER_STAMP),arch=$(TEACHER) epochs=$(TEACHER_EPOCHS) seed=$(TEACHER_SEED) device=$(DEVICE))
endif

.PHONY: help venv data teacher teacher-logits student report demo test bench clean-students clean

help:
	@echo "make demo | test | data | teacher | teacher-logits | student | report | bench | clean-students | clean"
	@echo "variables: T ALPHA STUDENT SEED EPOCHS TEACHER TEACHER_EPOCHS TEACHER_T DATASET LIMIT DEVICE (see README.md)"

# --- the environment ---------------------------------------------------------------------
venv: $(INSTALLED)
$(INSTALLED): pyproject.toml
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q "$(TORCH_SPEC)"
	$(VENV)/bin/pip install -q -e '.[dev]'
	touch $@

# --- stages ----------------------------------------------------------------------------
data: $(DATA_FILE)
$(DATA_FILE): $(DATA_STAMP) | $(INSTALLED)
	$(SC) data --dataset $(DATASET) $(if $(SOURCE),--source $(SOURCE)) --raw-dir $(DATA_DIR)/raw \
		--limit $(LIMIT) --out $@

teacher: $(TEACHER_CKPT)
$(TEACHER_CKPT): $(DATA_FILE) $(TEACHER_STAMP) | $(INSTALLED)
	$(SC) teacher --dataset $(DATA_FILE) --out-dir $(TEACHER_DIR) --arch $(TEACHER) \
		--epochs $(TEACHER_EPOCHS) --seed $(TEACHER_SEED) --device $(DEVICE) --threads $(THREADS)

teacher-logits: $(CACHE)
$(CACHE): $(TEACHER_CKPT) $(DATA_FILE) | $(INSTALLED)
	$(SC) teacher-logits --teacher $(TEACHER_CKPT) --dataset $(DATA_FILE) --out $@ \
		--temperature $(TEACHER_T) --dtype $(CACHE_DTYPE) --device $(DEVICE)

student: $(RUN_DIR)/metrics.json
$(RUN_DIR)/metrics.json: $(CACHE) $(DATA_FILE) | $(INSTALLED)
	$(SC) student --cache $(CACHE) --dataset $(DATA_FILE) --teacher-record $(TEACHER_DIR)/teacher.json \
		--out-dir $(RUN_DIR) --student $(STUDENT) --T $(T) --alpha $(ALPHA) --seed $(SEED) \
		--epochs $(EPOCHS) --threads $(THREADS)

report: | $(INSTALLED)
	$(SC) report --runs $(DATA_DIR)/runs --out $(REPORT)

# --- entry points ------------------------------------------------------------------------
# The demo: for every student, a scratch run (ALPHA=0) and a distilled run (T, ALPHA),
# both from the one cache, then the table. Each sub-make reuses what is up to date.
demo: $(CACHE)
	@for s in $(DEMO_STUDENTS); do \
		$(MAKE) --no-print-directory student STUDENT=$$s ALPHA=0 || exit 2; \
		$(MAKE) --no-print-directory student STUDENT=$$s || exit 2; \
	done
	@$(MAKE) --no-print-directory report

# pytest exits 5 when it collected nothing: say so rather than fail with a bare status.
test: $(INSTALLED)
	$(VENV)/bin/python -m pytest; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests" >&2; fi; exit $$rc

bench: $(INSTALLED)
	$(VENV)/bin/python benchmarks/run_all.py --out BENCHMARKS.md

clean-students:
	rm -rf $(DATA_DIR)/runs $(DATA_DIR)/reports

clean:
	rm -rf $(DATA_DIR)/dataset $(DATA_DIR)/teacher $(DATA_DIR)/cache $(DATA_DIR)/runs \
		$(DATA_DIR)/reports $(DATA_DIR)/params
