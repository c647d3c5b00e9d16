# Two commands on a fresh machine: `make demo` and `make test`. Both install what
# they need: a virtualenv in .venv and the Debian packages listed below.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
# Debian packages: lshw and prometheus-node-exporter are the peers the benchmarks measure
# against; prometheus ships promtool, which the tests use to check /metrics; postgresql is
# the database the inventory tests start in a temporary directory (initdb, pg_ctl); systemd
# gives systemd-analyze, which checks the units; lldpd runs on every switch and node of the
# network-namespace fabric the topology tests build; cloud-init validates the shipped
# user-data (`cloud-init schema`); libvirt-dev, pkg-config, gcc and python3-dev build
# libvirt-python, which the sushy-tools Redfish emulator of the BIOS tests needs (its
# libvirt driver on libvirt's in-process test:///default connection, no libvirtd);
# openssh-server, openssh-client and iproute2 make the hosts in network namespaces that
# the join tests reach over real SSH (each sshd from the test's own config and keys);
# `make deb` and tests/packaging build the Debian package: python3 is the interpreter its
# virtualenv runs on (Debian's, which the package depends on), dpkg-dev gives dpkg-shlibdeps
# (the compiled modules' library dependencies) and, through binutils, strip; lintian checks
# the result. fio is the NVMe acceptance check's tool (the tests run it for real); chromium
# and chromium-driver are the headless browser the dashboard tests drive.
APT_PACKAGES := lshw prometheus prometheus-node-exporter postgresql systemd lldpd cloud-init \
	libvirt-dev pkg-config gcc python3-dev openssh-server openssh-client iproute2 \
	python3 dpkg-dev lintian fio chromium chromium-driver
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: all test demo lint format protos bench deps-system clean dist deb

all: test

# Debian packages first: a Python dependency (libvirt-python) builds against them.
$(STAMP): pyproject.toml | deps-system
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

deps-system:
	@missing=""; for p in $(APT_PACKAGES); do \
	  dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $$missing; \
	fi

test: $(STAMP) deps-system
	$(PY) -m pytest -q

demo: $(STAMP)
	$(PY) -m testbed.demo

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check nodeagent testbed tests bench tools
	$(VENV)/bin/mypy nodeagent testbed tools bench
	$(VENV)/bin/lint-imports
	$(VENV)/bin/vulture nodeagent testbed --min-confidence 70 --exclude nodeagent/api/v1 --ignore-names DataclassInstance

format: $(STAMP)
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format nodeagent testbed tests bench tools

protos: $(STAMP)
	$(PY) tools/gen_protos.py

bench: $(STAMP) deps-system
	@for b in bench/*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

# The wheel, dist/nodeagent-<version>-py3-none-any.whl, built from a clean copy of the tree
# (what the cloud-init user-data installs with pip).
dist: $(STAMP)
	$(PY) tools/build_deb.py --wheel-only --out dist

# The Debian package, dist/nodeagent_<version>_<arch>.deb, then lintian on it (fails on
# errors; README "The Debian package" explains what it still says). Root: the virtualenv is
# built at /opt/nodeagent in a private mount namespace.
deb: $(STAMP) deps-system
	$(SUDO) $(PY) tools/build_deb.py --out dist --lintian

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache build *.egg-info

# Mutation testing of the core modules (tools/mutation.py; minutes per module, so neither in
# `make test` nor in CI). `make mutation ONLY=nodeagent/topology/tiers.py` runs one module.
ONLY ?=
.PHONY: mutation
mutation: $(STAMP) deps-system
	$(PY) tools/mutation.py $(if $(ONLY),--only $(ONLY))
