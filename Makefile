# softcache: the stage graph.   data ──> teacher ──> teacher-logits ──> student ──> export ──> report
# No names and no policy here: pipeline/make_plan.py (standard library only) checks the variables given,
# resolves every default and hands back every setting, file and run name, and the parameter stamps
# (DATA_DIR/params/*.txt) whose content changed: `make student T=8` re-runs only the student. `make help`.

GIVEN    := $(foreach v,$(.VARIABLES),$(if $(filter command line,$(origin $v)),$v))
override SHELL := /bin/bash   # the recipes are bash; SHELL=... given on the command line is refused below
.DEFAULT_GOAL := help
PYTHON ?= python3

# Settings are data: values go unexpanded ($(value)) to a file Make writes, never through a shell; pipeline.make_plan reads it.
define NEWLINE


endef
$(foreach v,$(GIVEN),$(if $(findstring $(NEWLINE),$(value $v)),$(error make: a setting holds a line break; give every setting on one line)))
NAMES_IN := $(shell mktemp)
NAMES_MK := $(shell mktemp)
$(file >$(NAMES_IN),$(MAKECMDGOALS)$(NEWLINE)$(foreach v,$(GIVEN),$v=$(value $v)$(NEWLINE)))
NAMES_RC := $(shell $(PYTHON) -m pipeline.make_plan make --given $(NAMES_IN) > $(NAMES_MK); echo $$?)
$(eval $(file <$(NAMES_MK)))$(shell rm -f $(NAMES_MK) $(NAMES_IN))
$(if $(filter-out 0,$(NAMES_RC)),$(error '$(PYTHON) -m pipeline.make_plan' failed; softcache needs Python >= 3.10 as $(PYTHON)))
$(if $(SETTINGS_ERROR),$(error $(SETTINGS_ERROR)))
$(if $(NAMES_OK),,$(error '$(PYTHON) -m pipeline.make_plan' printed no settings; run it by hand to see why))

REPORT := $(SC) report --runs '$(RUNS)' --out '$(REPORT_FILE)'
# The stages' errors name their fix as a make target (pytest, under `make test`, is not told).
export SOFTCACHE_CALLER := make

# Stages write atomically: make must never delete an artifact whose recipe was killed (named: .PRECIOUS patterns miss them).
.PRECIOUS: $(DATA_FILE) $(TEACHER_TARGETS) $(MEMBER_CACHES) $(CACHE) $(STUDENT_RUNS) $(PSKD_RUNS) $(DEMO_EXPORTS)

.PHONY: FORCE help venv data teacher teacher-logits student sweep self-distill experiment-views experiment-pskd experiment-selfkd experiment-labels experiment-patient experiment-lm \
	pskd-grid export publish report readme-results demo demo-runs test bench clean-students clean
FORCE:
help:
	@$(PYTHON) -m pipeline.make_plan help

venv: $(INSTALLED)
$(INSTALLED): pyproject.toml
	test -x '$(VENV)/bin/python' || $(PYTHON) -m venv '$(VENV)'
	'$(VENV)/bin/pip' install -q '$(TORCH_SPEC)'
	'$(VENV)/bin/pip' install -q -e '.[dev,edge,cluster,tensorboard,text,hf,timm]'
	touch '$@'

$(STAMPS):
$(PARAMS)/%.txt:
	@mkdir -p '$(@D)' && printf '%s\n' '$(STAMP)' > '$@'

data: $(DATA_FILE)   # an image folder or text is re-checked on every run (DATA_CHECK): a changed file is noticed
$(DATA_FILE): $(DATA_STAMP) $(DATA_CHECK) | $(INSTALLED)
	$(SC) data --dataset '$(DATASET)' $(if $(SOURCE),--source '$(SOURCE)') --raw-dir '$(DATA_DIR)/raw' \
		--limit '$(LIMIT)' --layout '$(LAYOUT)' $(DATA_ARGS) --out '$@'

# A softcache-trained teacher (the one teacher, or each ensemble member), and its pass.
$(DATA_DIR)/teacher/%/teacher.pt: $(PARAMS)/teacher-%.txt $(DATA_FILE) | $(INSTALLED)
	$(SC) $(TEACHER_FIT) --out-dir '$(@D)' --seed '$(MEMBER_SEED)' --device '$(DEVICE)' --threads '$(RUN_THREADS)'

$(DATA_DIR)/cache/%$(CACHE_SUFFIX).h5: $(DATA_DIR)/teacher/%/teacher.pt $(DATA_FILE) $(TRANSFER) | $(INSTALLED)
	$(PASS) $(PASS_STAGE) --teacher '$<' --out '$@' $(PASS_ARGS)

teacher: $(TEACHER_TARGETS)
teacher-logits: $(CACHE)

# The user's own teacher (file or module:factory); an ensemble's members combined; published: never built here.
ifeq ($(TEACHER_KIND),file)
$(CACHE): $(TEACHER_FILES) $(DATA_FILE) $(TRANSFER) | $(INSTALLED)
	$(PASS) $(PASS_STAGE) --teacher '$(TEACHER)' $(if $(TEACHER_WEIGHTS),--teacher-weights '$(TEACHER_WEIGHTS)') --out '$@' $(PASS_ARGS)
endif
ifeq ($(TEACHER_KIND),ensemble)
$(CACHE): $(MEMBER_CACHES) | $(INSTALLED)
	$(SC) ensemble $(ENSEMBLE_ARGS) --out '$@' --dtype '$(CACHE_DTYPE)'
endif
ifeq ($(TEACHER_KIND),published)
$(CACHE):
	@echo "make: no published teacher cache at $@ for DATASET=$(DATASET); use TEACHER=auto to train one here" >&2; exit 2
endif

# Student runs: the STUDENT/T/ALPHA run and the demo's; each run's own fields come from make_plan.py.
student: $(RUN_DIR)/metrics.json
$(STUDENT_RUNS): $(RUNS)/%/metrics.json: $(CACHE) $(DATA_FILE) | $(INSTALLED)
	$(SC) $(STUDENT_STAGE) --cache '$(CACHE)' --out-dir '$(@D)' --student '$(RUN_STUDENT)' --T '$(RUN_T)' \
		--alpha '$(RUN_ALPHA)' --seed '$(SEED)' $(STUDENT_ARGS) $(if $(RUN_LABELS),--labels '$(RUN_LABELS)') \
		$(if $(RUN_SELF),--self-alpha-T '$(RUN_SELF)') --threads '$(RUN_THREADS)'

# A grid of runs from one cache, JOBS at a time, finished runs skipped (resumes); SWEEP_BACKEND=dask: a cluster.
SWEEP = $(SC) sweep --cache '$(CACHE)' --dataset '$(DATA_FILE)' $(TEACHER_RECORD) --runs-dir '$(RUNS)' \
	--reports-dir '$(DATA_DIR)/reports' --students '$(STUDENTS)' --seeds '$(SEEDS)' --epochs '$(EPOCHS)' \
	--jobs '$(JOBS)' --threads '$(RUN_THREADS)' --backend '$(SWEEP_BACKEND)' $(if $(SCHEDULER),--scheduler '$(SCHEDULER)') \
	$(INPUT_ARGS) $(TEACHER_ARGS) $(LOG_ARGS)
sweep: $(CACHE) $(DATA_FILE) | $(INSTALLED)
	$(SWEEP) --Ts '$(TS)' --alphas '$(ALPHAS)'

# Self-distillation (METHOD=pskd|byot|cskd): no teacher, no cache.
self-distill: $(PSKD_RUN)
$(PSKD_RUNS): $(RUNS)/%/metrics.json: $(DATA_FILE) | $(INSTALLED)
	$(SC) self-distill --dataset '$(DATA_FILE)' --out-dir '$(@D)' --student '$(RUN_STUDENT)' --seed '$(RUN_SEED)' $(SELF_ARGS)

# Scratch and teacher KD (T, ALPHA) by a sweep, PS-KD (ALPHA_T) for STUDENTS x SEEDS, JOBS at a time.
pskd-grid: $(PSKD_GRID)
experiment-pskd: $(CACHE) $(DATA_FILE) | $(INSTALLED)
	$(SWEEP) --Ts '$(T)' --alphas '0 $(ALPHA)'
	@$(MAKE) --no-print-directory -j'$(JOBS)' --output-sync=target pskd-grid
	$(REPORT)

# Experiments (`make help`): choices on EXPERIMENT_HOLDOUT held-out rows, then STUDENTS x SEEDS; resumable.
experiment-views: EXPERIMENT_ARGS = --replay '$(REPLAY)' --epochs '$(EPOCHS)'
experiment-labels: EXPERIMENT_ARGS = --labels '$(LABEL_GRID)' --epochs '$(EPOCHS)' $(TRANSFER_ARGS)
experiment-patient: EXPERIMENT_ARGS = --lengths '$(LENGTHS)' --replay '$(REPLAY)' --banks '$(BANKS)'
experiment-views experiment-labels experiment-patient: $(CACHE) $(DATA_FILE) | $(INSTALLED)
	$(SC) $@ $(EXPERIMENT_COMMON) --students '$(STUDENTS)' --Ts '$(TS)' --alphas '$(ALPHAS)' --seeds '$(SEEDS)' \
		$(EXPERIMENT_ARGS)
	$(REPORT)
experiment-selfkd: $(CACHE) $(DATA_FILE) | $(INSTALLED)   # self-distillation side by side; its own grids unless given
	$(SC) $@ $(EXPERIMENT_COMMON) $(SELFKD_ARGS)
	$(REPORT)

experiment-lm: $(CACHE) $(DATA_FILE) | $(INSTALLED)   # text: scratch vs distilled LM students over SEEDS, and k
	$(SC) experiment-lm $(LM_EXPERIMENT_ARGS)

# Edge export of RUN (under DATA_DIR/runs): a format that misses its check exits 2; the demo's record why.
export: | $(INSTALLED)
	$(SC) export --run-dir '$(RUN_DIR)' --formats '$(FORMATS)' --threads '$(RUN_THREADS)'
$(RUNS)/%/export/export.json: $(RUNS)/%/metrics.json | $(INSTALLED)
	$(SC) export --run-dir '$(RUNS)/$*' --formats '$(FORMATS)' --threads '$(RUN_THREADS)' --skip-refused

# On the GPU box, after teacher-logits: a float16 copy in published/<dataset>.h5 (text: the LM teacher's weights).
publish: $(PUBLISH_FROM) | $(INSTALLED)
	$(SC) $(PUBLISH_ARGS) --device '$(PUBLISH_DEVICE)' $(if $(REPUBLISH),--replace '$(REPUBLISH)')

report: | $(INSTALLED)
	$(REPORT)

# Maintainers: the results block of docs/RESULTS.md and its figures (docs/results/), from data/runs.
readme-results: | $(INSTALLED)
	$(SC) report --runs data/runs --out data/reports/report.md --readme docs/RESULTS.md

# Scratch and distilled DEMO_STUDENTS, exported, then the table; the published teacher unless TEACHER=auto.
demo: | $(INSTALLED)
	@$(MAKE) --no-print-directory -j'$(JOBS)' --output-sync=target demo-runs $(DEMO_SETTINGS)
demo-runs: $(DEMO_EXPORTS)
	$(REPORT)

# Two pytest workers (an idle one steals queued tests): on 2 cores 13 min, not 16 (the slow tests are subprocesses).
test: $(INSTALLED)   # pytest exits 5 when it collected nothing: say so rather than a bare status
	env -u SOFTCACHE_CALLER '$(VENV)/bin/python' -m pytest -n 2 --dist worksteal; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests" >&2; fi; exit $$rc

# Every benchmark prints a Markdown section; together they become BENCHMARKS.md.
BENCHMARKS := run_all inference_batch cache_storage resume_kills export_latency sweep_speed teacher_pass_procs views_cost labels_cost student_resume flat_memory token_cache lm_student_step own_students self_methods
bench: $(INSTALLED) $(DATA_FILE) $(TEACHER_TARGETS)   # cache_storage reads the default teacher
	@{ echo "# Benchmarks"; echo; echo "Written by \`make bench\`; machine and date in each section."; echo; \
	  for b in $(BENCHMARKS); do '$(VENV)/bin/python' benchmarks/$$b.py || exit 1; echo; done; } > BENCHMARKS.md.tmp
	mv BENCHMARKS.md.tmp BENCHMARKS.md

# Only softcache's own folders inside DATA_DIR (never empty or /); raw/ and anything else there is kept.
clean-students:
	rm -rf $(foreach d,runs tuning reports tensorboard,'$(DATA_DIR)/$d')
clean:
	rm -rf $(foreach d,dataset text teacher cache runs tuning reports params tensorboard,'$(DATA_DIR)/$d')
