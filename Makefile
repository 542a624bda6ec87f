# data2vec.cpp — the two commands a new user needs:
#   make demo   set up, build, and run the main job (pretrain, evaluate, report)
#   make test   set up, build, and run the test suite
SHELL := /bin/bash
BUILD_DIR ?= build
BUILD_TYPE ?= Release
JOBS ?= $(shell nproc)
CMAKE_ARGS ?=

APT_PACKAGES := build-essential cmake pkg-config ccache git \
  libtorch-dev libopenblas0-openmp libblas-dev libdnnl-dev libgloo-dev \
  libyaml-cpp-dev libcli11-dev libspdlog-dev libfmt-dev nlohmann-json3-dev \
  libsentencepiece-dev libsndfile1-dev libsamplerate0-dev libstb-dev libturbojpeg0-dev libpng-dev zlib1g-dev libpcre2-dev \
  libgtest-dev libgmock-dev libbenchmark-dev gnuplot-nox python3-torch python3-numpy

.PHONY: setup build test test-all demo clean format

# Idempotent: installs only what is missing.
setup:
	@missing=$$(for p in $(APT_PACKAGES); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "setup: installing $$missing"; \
	  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$missing; \
	else echo "setup: all packages present"; fi

build:
	cmake -S . -B $(BUILD_DIR) -DCMAKE_BUILD_TYPE=$(BUILD_TYPE) $(CMAKE_ARGS)
	cmake --build $(BUILD_DIR) -j $(JOBS)

# The default suite; tests labelled "slow" run with `make test-all`.
test: setup build
	cd $(BUILD_DIR) && ctest --output-on-failure -j $(JOBS) -LE slow

test-all: setup build
	cd $(BUILD_DIR) && ctest --output-on-failure -j $(JOBS)

demo: setup build
	bash scripts/demo.sh

format:
	clang-format -i $$(git ls-files '*.cpp' '*.h')

clean:
	rm -rf $(BUILD_DIR)
