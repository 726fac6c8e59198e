# Two commands for a fresh machine (see README):
#   make demo   set up, then run the main job on the embedded default (managed Neo4j, small zoo)
#   make test   set up, then run the test suite against a real Neo4j
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.lineage-index-installed

.PHONY: setup demo test lint clean-neo4j

setup: $(STAMP)

$(STAMP): pyproject.toml
	@command -v java >/dev/null && command -v mvn >/dev/null || { \
	  echo "Installing Java 17 and Maven (needed to build the managed Neo4j)"; \
	  (apt-get update -qq && apt-get install -y -qq openjdk-17-jre-headless maven) || \
	  { echo "Please install Java 17+ and Maven, e.g. apt-get install openjdk-17-jre-headless maven"; exit 1; }; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $(STAMP)

demo: setup
	$(BIN)/lineage-index demo

test: setup
	$(BIN)/python -m pytest -q

lint: setup
	$(BIN)/ruff check lineage_index tests bench
