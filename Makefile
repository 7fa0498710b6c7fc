# layernet: the two commands that matter are `make demo` and `make test`.
VENV   ?= .venv
PYTHON ?= python3
SITE   ?= params/lab.yaml
BIN     = $(VENV)/bin
GO      ?= $(shell command -v go 2>/dev/null || echo /usr/local/go/bin/go)
COREDNS  = .tools/coredns/coredns
KAFKA    = .tools/kafka/.installed
KUBE     = .tools/kube/kube
KINE     = .tools/kube/kine
VALIDATE = .tools/kubernetes-validate/.installed
KUBERNETES_VALIDATE = kubernetes-validate==1.37.0
KUBE_VERSION = v1.37.2
AZ       = .tools/az/.installed
# Debian packages the local lab needs: nftables (isolation), iproute2 (namespaces), curl (health checks in tests);
# chromium: the browser the report tests drive headless (tests/browser, through Playwright; nothing is downloaded)
APT_PACKAGES = nftables iproute2 curl mosquitto openjdk-17-jre-headless maven chromium

.PHONY: setup setup-parts apt demo test jupyter lab-down strip

# The parts are made side by side: the Go builds (minutes of CPU) overlap the downloads (pip, apt, Maven).
setup:
	@$(MAKE) --no-print-directory -j4 setup-parts

setup-parts: $(VENV)/.installed $(VALIDATE) apt $(COREDNS) $(KAFKA) $(KUBE) $(KINE) $(AZ)

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $@

# The Kubernetes schema the manifest tests validate against, in a folder of its own that only those tests add to
# their path: where it is importable, the kubernetes client's package imports it, and with it jsonschema's format
# checker (seconds of start-up in every process that talks to a cluster, every stage's kernel included).
$(VALIDATE): $(VENV)/.installed
	rm -rf $(dir $@)
	$(BIN)/pip install -q --target $(dir $@) '$(KUBERNETES_VALIDATE)'
	touch $@

# CoreDNS for the lab's DNS levels: built from its Go module at the release pinned in tools/coredns/go.mod
# (go.sum pins every dependency) into .tools/, rebuilt only when the build files change.
$(COREDNS): tools/coredns/go.mod tools/coredns/go.sum tools/coredns/main.go
	cd tools/coredns && GOTOOLCHAIN=local GOFLAGS=-mod=readonly $(GO) build -trimpath -buildvcs=false -ldflags=-s -o $(abspath $@) .

# The lab's Kubernetes control plane (one cluster per level): kube-apiserver, kube-controller-manager and
# kube-scheduler from the k8s.io/kubernetes module pinned in tools/kube/go.mod, in one binary (`kube server` runs the
# three in one process, as K3s does), and kine
# (K3s's SQLite datastore shim) pinned in tools/kine/go.mod. Cold: about 10 min and 3 GB of memory; rebuilt only
# when the build files change (Go's build cache makes a rebuild quick).
$(KUBE): tools/kube/go.mod tools/kube/go.sum tools/kube/main.go
	cd tools/kube && GOTOOLCHAIN=local GOFLAGS=-mod=readonly $(GO) build -trimpath -buildvcs=false \
	  -ldflags "-s -w -X k8s.io/component-base/version.gitVersion=$(KUBE_VERSION) -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=37" \
	  -o $(abspath $@) .

$(KINE): tools/kine/go.mod tools/kine/go.sum
	cd tools/kine && GOTOOLCHAIN=local GOFLAGS=-mod=readonly $(GO) build -trimpath -buildvcs=false -ldflags "-s -w" \
	  -o $(abspath $@) github.com/k3s-io/kine

# Apache Kafka for the lab's Event Hubs: the broker jars from Maven Central at the version pinned in
# tools/kafka/pom.xml, copied into .tools/kafka/libs/ (Java 17 runs them), fetched again only when the pom changes.
$(KAFKA): tools/kafka/pom.xml | apt
	rm -rf .tools/kafka/libs
	mvn -q -B -Dstyle.color=never -f tools/kafka/pom.xml package
	touch $@

# The real Azure CLI (az), for the lab test that runs the az executor's core steps against the lab's Entra and ARM:
# the version pinned in tools/az/requirements.txt, every dependency at the version in tools/az/constraints.txt, in its
# own environment (its many azure-mgmt-* pins must not meet the project's), installed again only when those change.
$(AZ): tools/az/requirements.txt tools/az/constraints.txt
	rm -rf .tools/az
	$(PYTHON) -m venv .tools/az
	.tools/az/bin/pip install -q -r tools/az/requirements.txt -c tools/az/constraints.txt
	touch $@

apt:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then echo "installing Debian packages:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing || exit 1; \
	  units=$$(dpkg -L $$missing 2>/dev/null | grep -E '^/(usr/)?lib/systemd/system/[^/@]+\.(service|socket)$$' | xargs -rn1 basename | sort -u); \
	  if [ -n "$$units" ]; then echo "disabling host services these packages enabled (the lab runs its own):" $$units; \
	    systemctl disable --now $$units >/dev/null 2>&1 || deb-systemd-helper disable $$units >/dev/null 2>&1 || true; fi; \
	fi

demo: setup
	$(BIN)/layernet run deploy --site $(SITE)

# Two passes on both cores (pytest-xdist): first the tests that build no lab on a shared address plan, one file per
# worker (a module's fixtures stay in one process); then the `lab` tests, one xdist scope per address plan
# (tests/labs.py hands out the plans and names each module's scope): labs on different plans side by side, labs on the same plan one after the other.
# lint-imports: the layer contract (pyproject.toml [tool.importlinter], README "Layers"): a wrong-way import fails here.
test: setup
	$(BIN)/ruff check lib tests benchmarks
	$(BIN)/lint-imports --no-cache
	$(BIN)/pytest -q -rs --durations=10 -m "not lab" -n 2 --dist loadfile
	$(BIN)/pytest -q -rs --durations=15 -m lab -n 2 --dist loadscope

# JupyterLab on notebooks/ as one run: the notebooks opened in this session share one new run folder under runs/
# (the audit of stage 05 then knows stage 01's probes). A lab site whose lab is not running is brought up first and
# taken down again when Jupyter exits (Ctrl-C included); a lab that was already up is left as it was.
jupyter: setup
	$(BIN)/layernet jupyter --site $(SITE)

lab-down: setup
	$(BIN)/layernet lab down --site $(SITE)

strip: setup
	$(BIN)/jupyter nbconvert --clear-output --inplace notebooks/*.ipynb
