# The README's two commands. Each sets up its own virtual environment in .venv/ on a fresh machine.
# torch==2.13.0 is installed first, so that the project's range never pulls another build. Where the
# package index serves torch's CPU build as that version (it does on this project's machines) that
# is what comes; elsewhere, name PyTorch's CPU wheel index: make test TORCH_INDEX=URL.
PYTHON ?= python3
TORCH_INDEX ?=
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test lint proto system-deps fuzz

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.13.0 $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(BIN)/python -m pip install -q -e '.[dev]'
	# Norse, the independent simulator the NIR export is checked in, requires torchvision, which
	# pins a torch other than ours; its NIR import needs neither, so it comes without dependencies.
	$(BIN)/python -m pip install -q --no-deps norse==1.1.0
	touch $@

demo: $(BIN)/.installed
	$(BIN)/spikeshot demo

lint: $(BIN)/.installed
	$(BIN)/ruff check .

# A real Prometheus server scrapes the metrics in one test; TLS tests make certificates with openssl;
# the broad Glyphs meta-dataset draws characters from the Noto fonts and objects from Noto Color
# Emoji; the scale-out tests run replicas on redis-server behind nginx. As root (CI) they are
# installed from Debian's packages; otherwise those tests skip.
SYSTEM_PACKAGES := prometheus openssl fonts-noto-core fonts-noto-color-emoji redis-server nginx
system-deps:
	@if ! command -v prometheus >/dev/null || ! command -v openssl >/dev/null \
		|| ! command -v redis-server >/dev/null || ! command -v nginx >/dev/null \
		|| [ ! -f /usr/share/fonts/truetype/noto/NotoSans-Regular.ttf ] \
		|| [ ! -f /usr/share/fonts/truetype/noto/NotoColorEmoji.ttf ]; then \
		if [ "$$(id -u)" = 0 ]; then \
			apt-get update -qq && apt-get install -y -qq --no-install-recommends $(SYSTEM_PACKAGES); \
		else echo "some of $(SYSTEM_PACKAGES) missing and not root: their tests will skip"; fi; \
	fi

# pytest exits 5 when it selects no test: a suite that ran nothing has not passed.
test: lint system-deps
	$(BIN)/python -m pytest -q; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest selected no test"; fi; exit $$rc

# Every fuzzing target in turn for FUZZ_SECONDS each (tests/fuzzing.py); the corpus is kept in
# fuzz-corpus/, findings go to fuzz-findings/. One target: make fuzz FUZZ_TARGETS=rpc
FUZZ_SECONDS ?= 1800
FUZZ_TARGETS ?= $(shell $(BIN)/python tests/fuzzing.py --list 2>/dev/null)
fuzz: $(BIN)/.installed
	@for t in $(FUZZ_TARGETS); do \
		echo "== $$t, $(FUZZ_SECONDS) s"; \
		$(BIN)/python tests/fuzzing.py $$t --seconds $(FUZZ_SECONDS) || exit 1; \
	done

proto: $(BIN)/.installed
	$(BIN)/python -m spikeshot.v1.regenerate
