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
TEACHERS       ?= 1
COMBINE        ?= logits
TEACHER_T      ?= 1
CACHE_DTYPE    ?= float32
CACHE_TOPK     ?= 0
VIEWS          ?= 1
VIEW_SEED      ?= 0
MIXUP          ?= 0
DEVICE         ?= auto
STUDENT        ?= cnn-tiny
T              ?= 4
ALPHA          ?= 0.9
SEED           ?= 0
EPOCHS         ?= 5
AUGMENT        ?= 0
REPLAY         ?= 0
HOLDOUT        ?= 0
THREADS        ?= 0
JOBS           ?= 1
DEMO_STUDENTS  ?= mlp cnn-tiny cnn-small
FORMATS        ?= onnx,torchscript,int8
STUDENTS       ?= $(STUDENT)
TS             ?= $(T)
ALPHAS         ?= 0 $(ALPHA)
SEEDS          ?= $(SEED)
SWEEP_BACKEND  ?= joblib
ALPHA_T        ?= 0.8
NPROC          ?= 1
TEACHER_WEIGHTS ?=
SCHEDULER      ?=

# --- derived paths ---------------------------------------------------------------------
SC           := $(VENV)/bin/softcache
INSTALLED    := $(VENV)/.installed
DATA_NAME    := $(basename $(notdir $(DATASET)))
DATA_FILE    := $(DATA_DIR)/dataset/$(DATA_NAME).npz
# A softcache teacher other than the default (TEACHER=auto, TEACHER_EPOCHS=0, TEACHER_SEED=0)
# gets its own directory and cache name, so several teachers live side by side.
# $(call trained_tag,SEED) is the tag of the teacher trained with that seed.
trained_tag  = $(if $(filter-out auto,$(TEACHER)),-$(TEACHER))$(if $(filter-out 0,$(TEACHER_EPOCHS)),-e$(TEACHER_EPOCHS))$(if $(filter-out 0,$1),-s$1)
TRAINED_TAG  := $(call trained_tag,$(TEACHER_SEED))
# TEACHERS=N > 1: an ensemble of N such teachers, seeds TEACHER_SEED .. TEACHER_SEED+N-1, each
# trained and cached on its own (Make redoes only a member that changed), combined by `ensemble`.
MEMBER_SEEDS := $(shell seq $(TEACHER_SEED) $$(( $(TEACHER_SEED) + $(TEACHERS) - 1 )) 2>/dev/null)
ENSEMBLE     := $(filter-out 1,$(TEACHERS))
# TEACHER=published: the committed cache published/<dataset>.h5 (made on a GPU box; see published/README.md).
PUBLISHED    := $(filter published,$(TEACHER))
# TEACHER names an architecture for the teacher stage to train (auto, cnn, resnet18), or
# brings the user's own teacher: a model file (TorchScript, torch.export .pt2) or
# module:factory with TEACHER_WEIGHTS. Architecture names hold no ':', '/' or '.'.
BYO_TEACHER  := $(if $(or $(findstring :,$(TEACHER)),$(findstring /,$(TEACHER)),$(findstring .,$(TEACHER))),yes)
TEACHER_TAG  := $(if $(PUBLISHED),-published,$(if $(BYO_TEACHER),-$(subst :,-,$(subst .,_,$(notdir $(TEACHER)))),$(TRAINED_TAG)$(if $(ENSEMBLE),-x$(TEACHERS))))
TEACHER_DIR  := $(DATA_DIR)/teacher/$(DATA_NAME)$(TEACHER_TAG)
TEACHER_CKPT := $(TEACHER_DIR)/teacher.pt
TEACHER_ARG  := $(if $(BYO_TEACHER),$(TEACHER) $(if $(TEACHER_WEIGHTS),--teacher-weights $(TEACHER_WEIGHTS)),$(TEACHER_CKPT))
TEACHER_DEPS := $(if $(BYO_TEACHER),$(wildcard $(TEACHER) $(TEACHER_WEIGHTS)),$(TEACHER_CKPT))
# Students check the cache against teacher.json when softcache trained the one teacher (the
# ensemble stage checks each member against its own; a published cache carries its record).
TEACHER_RECORD := $(if $(or $(BYO_TEACHER),$(ENSEMBLE),$(PUBLISHED)),,--teacher-record $(TEACHER_DIR)/teacher.json)
VIEWS_TAG    := $(if $(filter-out 1,$(VIEWS)),-v$(VIEWS)$(if $(filter-out 0,$(VIEW_SEED)),-vs$(VIEW_SEED))$(if $(filter-out 0,$(MIXUP)),-mx$(MIXUP)))
# $(call cache_file,TAG): the cache of the teacher with that tag.
cache_file   = $(DATA_DIR)/cache/$(DATA_NAME)$1-T$(TEACHER_T)-$(CACHE_DTYPE)$(if $(filter-out 0,$(CACHE_TOPK)),-top$(CACHE_TOPK))$(VIEWS_TAG).h5
PUBLISHED_CACHE := published/$(DATA_NAME).h5
CACHE        := $(if $(PUBLISHED),$(PUBLISHED_CACHE),$(call cache_file,$(TEACHER_TAG)))
MEMBER_CKPTS  := $(foreach s,$(MEMBER_SEEDS),$(DATA_DIR)/teacher/$(DATA_NAME)$(call trained_tag,$s)/teacher.pt)
MEMBER_CACHES := $(foreach s,$(MEMBER_SEEDS),$(call cache_file,$(call trained_tag,$s)))
$(if $(and $(ENSEMBLE),$(or $(BYO_TEACHER),$(PUBLISHED))),$(error TEACHERS=$(TEACHERS) trains an ensemble of softcache teachers; TEACHER=$(TEACHER) is one teacher, so use TEACHERS=1))
$(if $(and $(ENSEMBLE),$(filter-out 0,$(CACHE_TOPK))),$(error an ensemble cache stores every logit; use CACHE_TOPK=0 with TEACHERS=$(TEACHERS)))
$(if $(or $(filter 0,$(TEACHERS)),$(filter-out $(TEACHERS),$(words $(MEMBER_SEEDS)))),$(error TEACHERS must be a whole number >= 1, got '$(TEACHERS)'))
# What students see (REPLAY cached views, or AUGMENT at random) and HOLDOUT, as options and in run names.
INPUT_ARGS   := --replay $(REPLAY) $(if $(filter 1,$(AUGMENT)),--augment,--no-augment) --holdout $(HOLDOUT)
# Whose targets: the teacher's tag names distilled runs, COMBINE picks an ensemble's targets.
TEACHER_ARGS := --teacher-tag=$(TEACHER_TAG) --combine $(COMBINE)
COMBINE_TAG  := $(if $(filter-out logits,$(COMBINE)),$(if $(filter probs,$(COMBINE)),-probs,-m$(COMBINE)))
INPUT_TAG    := $(if $(filter-out 0,$(REPLAY)),-r$(REPLAY),$(if $(filter 1,$(AUGMENT)),-aug))$(if $(filter-out 0,$(HOLDOUT)),-ho$(HOLDOUT))
# A run's directory name says what it is: $(call run_name,STUDENT,T,ALPHA,SEED,EPOCHS).
run_name     = $1-$(if $(filter 0 0.0 0.00,$3),scratch,T$2-a$3$(if $(TEACHER_TAG),-from$(TEACHER_TAG))$(COMBINE_TAG))$(INPUT_TAG)-s$4-e$5
RUN          ?= $(call run_name,$(STUDENT),$(T),$(ALPHA),$(SEED),$(EPOCHS))
RUN_DIR      := $(DATA_DIR)/runs/$(RUN)
# Runs in parallel share the cores: each gets cores/JOBS torch threads unless THREADS is set.
CORES        := $(shell nproc 2>/dev/null || echo 1)
RUN_THREADS  := $(if $(filter-out 0,$(THREADS)),$(THREADS),$(if $(filter-out 1,$(JOBS)),$(shell expr $(CORES) / $(JOBS) \| 1),0))
REPORT       := $(DATA_DIR)/reports/report.md
# The README's results block documents the default data directory only, so a report over
# another DATA_DIR (tests, experiments) never rewrites it; README_RESULTS= turns it off.
README_RESULTS ?= $(if $(filter data,$(DATA_DIR)),README.md)
PARAMS       := $(DATA_DIR)/params

# Parameter stamps: a stamp file holds the parameters its artifact was built with. When
# the parameters given now differ from the file's content, the stamp depends on FORCE, so
# its rule rewrites it and everything built from it is stale; otherwise the stamp is left
# alone and keeps its mtime. Checking reads the file only, so `make -n` and `make -q`
# tell the truth about what would run and change nothing (a dry run with other teacher
# settings must not make the next real run retrain the teacher).
# $(call params_differ,FILE,CONTENT) is non-empty when FILE does not hold CONTENT.
params_differ = $(shell [ "$$(cat $1 2>/dev/null)" = '$2' ] || echo differ)
DATA_STAMP     := $(PARAMS)/data-$(DATA_NAME).txt
DATA_PARAMS    := dataset=$(DATASET) source=$(SOURCE) limit=$(LIMIT)
teacher_stamp  = $(PARAMS)/teacher-$(DATA_NAME)$(call trained_tag,$1).txt
teacher_params = arch=$(TEACHER) epochs=$(TEACHER_EPOCHS) seed=$1 device=$(DEVICE)

$(DATA_STAMP): $(if $(call params_differ,$(DATA_STAMP),$(DATA_PARAMS)),FORCE)
	@mkdir -p $(@D) && printf '%s\n' '$(DATA_PARAMS)' > $@
FORCE:

.PHONY: FORCE help venv data teacher teacher-logits student sweep experiment-views self-distill experiment-pskd export publish report demo demo-runs test bench clean-students clean

help:
	@echo "make demo | test | data | teacher | teacher-logits | student | sweep | experiment-views | self-distill | experiment-pskd | export | publish | report | bench | clean-students | clean"
	@echo "variables: T ALPHA STUDENT SEED EPOCHS AUGMENT REPLAY HOLDOUT TEACHER TEACHERS COMBINE TEACHER_EPOCHS TEACHER_T VIEWS VIEW_SEED MIXUP DATASET LIMIT DEVICE RUN FORMATS STUDENTS TS ALPHAS SEEDS JOBS ALPHA_T (see README.md)"

# --- the environment ---------------------------------------------------------------------
venv: $(INSTALLED)
$(INSTALLED): pyproject.toml
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q "$(TORCH_SPEC)"
	$(VENV)/bin/pip install -q -e '.[dev,edge,cluster]'
	touch $@

# --- stages ----------------------------------------------------------------------------
data: $(DATA_FILE)
$(DATA_FILE): $(DATA_STAMP) | $(INSTALLED)
	$(SC) data --dataset $(DATASET) $(if $(SOURCE),--source $(SOURCE)) --raw-dir $(DATA_DIR)/raw \
		--limit $(LIMIT) --out $@

# NPROC > 1 shards the teacher pass over that many torchrun ranks.
TEACHER_PASS := $(if $(filter-out 1,$(NPROC)),$(VENV)/bin/torchrun --standalone --nproc-per-node $(NPROC) -m stages.cli,$(SC))
PASS_ARGS    := --temperature $(TEACHER_T) --dtype $(CACHE_DTYPE) --topk $(CACHE_TOPK) --views $(VIEWS) \
	--view-seed $(VIEW_SEED) --mixup $(MIXUP) --device $(DEVICE)

# One softcache-trained teacher per seed (the one teacher, or each ensemble member): its
# parameter stamp, its training, and its teacher pass into its own cache.
define trained_teacher_rule
$(call teacher_stamp,$1): $$(if $$(call params_differ,$(call teacher_stamp,$1),$(call teacher_params,$1)),FORCE)
	@mkdir -p $$(@D) && printf '%s\n' '$(call teacher_params,$1)' > $$@
$(DATA_DIR)/teacher/$(DATA_NAME)$(call trained_tag,$1)/teacher.pt: $(DATA_FILE) $(call teacher_stamp,$1) | $(INSTALLED)
	$(SC) teacher --dataset $(DATA_FILE) --out-dir $$(@D) --arch $(TEACHER) \
		--epochs $(TEACHER_EPOCHS) --seed $1 --device $(DEVICE) --threads $(THREADS)
$(call cache_file,$(call trained_tag,$1)): $(DATA_DIR)/teacher/$(DATA_NAME)$(call trained_tag,$1)/teacher.pt $(DATA_FILE) | $(INSTALLED)
	$(TEACHER_PASS) teacher-logits --teacher $$< --dataset $(DATA_FILE) --out $$@ $(PASS_ARGS)
endef
ifeq ($(BYO_TEACHER)$(PUBLISHED),)
$(foreach s,$(MEMBER_SEEDS),$(eval $(call trained_teacher_rule,$s)))
endif

teacher: $(if $(PUBLISHED),,$(if $(ENSEMBLE),$(MEMBER_CKPTS),$(TEACHER_DEPS)))
teacher-logits: $(CACHE)
ifneq ($(BYO_TEACHER),)
$(CACHE): $(TEACHER_DEPS) $(DATA_FILE) | $(INSTALLED)
	$(TEACHER_PASS) teacher-logits --teacher $(TEACHER_ARG) --dataset $(DATA_FILE) --out $@ $(PASS_ARGS)
endif
# The ensemble: member caches combined, no teacher run (each member checked against its teacher.json).
ifneq ($(ENSEMBLE),)
$(CACHE): $(MEMBER_CACHES) | $(INSTALLED)
	$(SC) ensemble $(foreach s,$(MEMBER_SEEDS),--member $(call cache_file,$(call trained_tag,$s)) \
		--record $(DATA_DIR)/teacher/$(DATA_NAME)$(call trained_tag,$s)/teacher.json) --out $@ --dtype $(CACHE_DTYPE)
endif
# The published cache is committed, never built here.
$(PUBLISHED_CACHE):
	@echo "make: no published teacher cache at $@ for DATASET=$(DATASET); use TEACHER=auto to train one here" >&2; exit 2

# One rule per student run that this invocation can ask for: the STUDENT/T/ALPHA/SEED/
# EPOCHS run, and the demo's scratch and distilled run of every DEMO_STUDENTS entry.
# A spec is STUDENT:T:ALPHA:SEED:EPOCHS; $(call field,N,SPEC) is its N-th field.
field    = $(word $1,$(subst :, ,$2))
spec_run = $(call run_name,$(call field,1,$1),$(call field,2,$1),$(call field,3,$1),$(call field,4,$1),$(call field,5,$1))
define student_rule
$(DATA_DIR)/runs/$(call spec_run,$1)/metrics.json: $(CACHE) $(DATA_FILE) | $(INSTALLED)
	$(SC) student --cache $(CACHE) --dataset $(DATA_FILE) $(TEACHER_RECORD) \
		--out-dir $$(@D) --student $(call field,1,$1) --T $(call field,2,$1) --alpha $(call field,3,$1) \
		--seed $(call field,4,$1) --epochs $(call field,5,$1) $(INPUT_ARGS) $(TEACHER_ARGS) --threads $(RUN_THREADS)
endef
DEMO_SPECS := $(foreach s,$(DEMO_STUDENTS),$s:$(T):0:$(SEED):$(EPOCHS) $s:$(T):$(ALPHA):$(SEED):$(EPOCHS))
DEMO_RUNS  := $(foreach spec,$(DEMO_SPECS),$(DATA_DIR)/runs/$(call spec_run,$(spec))/metrics.json)
$(foreach spec,$(sort $(STUDENT):$(T):$(ALPHA):$(SEED):$(EPOCHS) $(DEMO_SPECS)),$(eval $(call student_rule,$(spec))))

student: $(RUN_DIR)/metrics.json

# PS-KD self-distillation: no teacher, no cache; one rule per STUDENT:ALPHA_T:SEED:EPOCHS spec
# this invocation can ask for (the current one, and the experiment's grid).
pskd_run = $(call field,1,$1)-pskd-a$(call field,2,$1)-s$(call field,3,$1)-e$(call field,4,$1)
define pskd_rule
$(DATA_DIR)/runs/$(call pskd_run,$1)/metrics.json: $(DATA_FILE) | $(INSTALLED)
	$(SC) self-distill --dataset $(DATA_FILE) --out-dir $$(@D) --student $(call field,1,$1) \
		--alpha-T $(call field,2,$1) --seed $(call field,3,$1) --epochs $(call field,4,$1) --threads $(RUN_THREADS)
endef
PSKD_SPECS := $(foreach s,$(STUDENTS),$(foreach seed,$(SEEDS),$s:$(ALPHA_T):$(seed):$(EPOCHS)))
PSKD_RUNS  := $(foreach spec,$(PSKD_SPECS),$(DATA_DIR)/runs/$(call pskd_run,$(spec))/metrics.json)
$(foreach spec,$(sort $(STUDENT):$(ALPHA_T):$(SEED):$(EPOCHS) $(PSKD_SPECS)),$(eval $(call pskd_rule,$(spec))))

self-distill: $(DATA_DIR)/runs/$(call pskd_run,$(STUDENT):$(ALPHA_T):$(SEED):$(EPOCHS))/metrics.json

# The PS-KD experiment: for STUDENTS x SEEDS at EPOCHS, scratch and teacher KD (T, ALPHA)
# from the cache by a sweep, PS-KD (ALPHA_T) by self-distill, then the report.
experiment-pskd: $(CACHE)
	@$(MAKE) --no-print-directory sweep TS="$(T)" ALPHAS="0 $(ALPHA)"
	@$(MAKE) --no-print-directory -j$(JOBS) --output-sync=target $(PSKD_RUNS)
	@$(MAKE) --no-print-directory report

# The cached-views experiment (VIEWS=K builds its cache): T and ALPHA for the two KD arms
# are chosen from TS x ALPHAS on EXPERIMENT_HOLDOUT held-out training rows, then scratch,
# clean-target KD and replayed-view KD run for STUDENTS x SEEDS at EPOCHS (finished runs
# are skipped), then the report. Tuning runs go to $(DATA_DIR)/tuning, not into the report.
EXPERIMENT_HOLDOUT ?= 5000
experiment-views: $(CACHE) $(DATA_FILE) | $(INSTALLED)
	$(SC) experiment-views --cache $(CACHE) --dataset $(DATA_FILE) $(TEACHER_RECORD) --runs-dir $(DATA_DIR)/runs \
		--tuning-dir $(DATA_DIR)/tuning --reports-dir $(DATA_DIR)/reports --students "$(STUDENTS)" --Ts "$(TS)" \
		--alphas "$(ALPHAS)" --seeds "$(SEEDS)" --holdout $(EXPERIMENT_HOLDOUT) --replay $(REPLAY) \
		--epochs $(EPOCHS) --jobs $(JOBS) --threads $(THREADS) $(TEACHER_ARGS)
	@$(MAKE) --no-print-directory report

# A grid of runs from the one cache (never the teacher), JOBS at a time, each written to
# data/runs/<name>/ as `make student` would; finished runs are skipped, so a killed sweep
# resumes. SWEEP_BACKEND=dask SCHEDULER=tcp://host:8786 runs it on a Dask cluster.
sweep: $(CACHE) $(DATA_FILE) | $(INSTALLED)
	$(SC) sweep --cache $(CACHE) --dataset $(DATA_FILE) $(TEACHER_RECORD) \
		--runs-dir $(DATA_DIR)/runs --reports-dir $(DATA_DIR)/reports --students "$(STUDENTS)" --Ts "$(TS)" \
		--alphas "$(ALPHAS)" --seeds "$(SEEDS)" --epochs $(EPOCHS) --jobs $(JOBS) --threads $(THREADS) \
		--backend $(SWEEP_BACKEND) $(if $(SCHEDULER),--scheduler $(SCHEDULER)) $(INPUT_ARGS) $(TEACHER_ARGS)

# Edge export of a finished run (RUN=<name under data/runs>, default: the STUDENT/T/... run).
# Phony on purpose: the stage itself refuses a run without a finished model, in one line.
export: | $(INSTALLED)
	$(SC) export --run-dir $(RUN_DIR) --formats $(FORMATS) --threads $(THREADS)

# The demo's exports are file targets: each follows its run's metrics.json.
$(DATA_DIR)/runs/%/export/export.json: $(DATA_DIR)/runs/%/metrics.json | $(INSTALLED)
	$(SC) export --run-dir $(DATA_DIR)/runs/$* --formats $(FORMATS) --threads $(RUN_THREADS)

# Publish this cache for CPU-only users (on the GPU box, after teacher-logits): a float16 copy in
# published/<dataset>.h5 with a record of the command (this invocation's variables), device and times.
PUBLISH_DEVICE ?=
PUBLISH_COMMAND := make teacher-logits TEACHER=$(TEACHER) TEACHERS=$(TEACHERS) TEACHER_EPOCHS=$(TEACHER_EPOCHS) \
	TEACHER_SEED=$(TEACHER_SEED) TEACHER_T=$(TEACHER_T) VIEWS=$(VIEWS) VIEW_SEED=$(VIEW_SEED) MIXUP=$(MIXUP) DEVICE=$(DEVICE)
publish: $(CACHE) | $(INSTALLED)
	$(SC) publish --cache $(CACHE) --out $(PUBLISHED_CACHE) --command "$(PUBLISH_COMMAND)" \
		--device "$(PUBLISH_DEVICE)" $(foreach s,$(if $(BYO_TEACHER),,$(MEMBER_SEEDS)),--record $(DATA_DIR)/teacher/$(DATA_NAME)$(call trained_tag,$s)/teacher.json)

report: | $(INSTALLED)
	$(SC) report --runs $(DATA_DIR)/runs --out $(REPORT) $(if $(README_RESULTS),--readme $(README_RESULTS))

# --- entry points ------------------------------------------------------------------------
# The demo: for every student, a scratch run (ALPHA=0) and a distilled run (T, ALPHA),
# both from the one cache, JOBS at a time, each exported for the edge, then the table.
# It learns from the published teacher (published/<dataset>.h5) when one is committed for the
# data the demo uses (the full Fashion-MNIST) and no other teacher was named, with the
# DEMO_T/DEMO_ALPHA recipe chosen for it on held-out rows; otherwise from the CPU teacher
# trained here, with T and ALPHA. `make demo TEACHER=auto` always trains here.
DEMO_T       ?= 1
DEMO_ALPHA   ?= 0.5
USE_PUBLISHED := $(and $(wildcard $(PUBLISHED_CACHE)),$(filter file,$(origin TEACHER)),$(if $(TRAINED_TAG)$(ENSEMBLE),,default),$(filter 0,$(LIMIT)),$(filter fashion-mnist,$(DATASET)))
DEMO_EXPORTS := $(DEMO_RUNS:metrics.json=export/export.json)
demo: | $(INSTALLED)
	@$(MAKE) --no-print-directory demo-runs $(if $(USE_PUBLISHED),TEACHER=published T=$(DEMO_T) ALPHA=$(DEMO_ALPHA))
demo-runs: $(CACHE)
	@$(MAKE) --no-print-directory -j$(JOBS) --output-sync=target $(DEMO_EXPORTS)
	@$(MAKE) --no-print-directory report

# pytest exits 5 when it collected nothing: say so rather than fail with a bare status.
test: $(INSTALLED)
	$(VENV)/bin/python -m pytest; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests" >&2; fi; exit $$rc

# Every benchmark prints a Markdown section; together they become BENCHMARKS.md.
BENCHMARKS := run_all cache_storage resume_kills export_latency sweep_speed teacher_pass_procs views_cost
bench: $(INSTALLED)
	@{ echo "# Benchmarks"; echo; echo "Written by \`make bench\`; machine and date in each section."; echo; \
	  for b in $(BENCHMARKS); do $(VENV)/bin/python benchmarks/$$b.py || exit 1; echo; done; } > BENCHMARKS.md.tmp
	mv BENCHMARKS.md.tmp BENCHMARKS.md

clean-students:
	rm -rf $(DATA_DIR)/runs $(DATA_DIR)/tuning $(DATA_DIR)/reports

clean:
	rm -rf $(DATA_DIR)/dataset $(DATA_DIR)/teacher $(DATA_DIR)/cache $(DATA_DIR)/runs \
		$(DATA_DIR)/tuning $(DATA_DIR)/reports $(DATA_DIR)/params
