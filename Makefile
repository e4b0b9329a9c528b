# Portico: the two commands of the README are `make lab` and `make test`.
SHELL := /bin/bash
VENV ?= .venv
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
export ANSIBLE_CONFIG := $(CURDIR)/ansible.cfg
export CONTAINERS_CONF := $(CURDIR)/lab/containers.conf
export PYTHONPATH := $(CURDIR)/collections
COLLECTION := collections/ansible_collections/portico/gateway
PYTEST := $(VENV)/bin/pytest -p no:cacheprovider
# Python outside the collection (the collection has ansible-test sanity); settings in ruff.toml.
RUFF_PATHS := bin/portico-watch bin/portico-console roles/healthcheck/files/portico-healthd roles/conntrackd/files/portico-conntrack-reaper bench lab tests molecule/*/tests
# What `make test` runs, in order; .ci/stages prints each stage's time at the end. Stages joined
# by "+" run at the same time: they time nothing, and the image build (debootstrap, on a new
# machine) mostly waits for the network. The lab goes down before the benchmarks, which measure CPU.
TEST_STAGES := unit+lint+sanity+monitoring+lab-image integration molecule-default molecule-ha molecule-bgp lab-down bench-quick

.PHONY: deps lab lab-up lab-converge lab-demo lab-down lab-image test unit integration lint sanity monitoring \
	molecule molecule-default molecule-ha molecule-bgp bench bench-quick clean

deps:
	@bash .ci/install-deps

## Bring up the lab (client, router, gw1, three nodes), converge gw1, show traffic through the VIPs.
lab: deps lab-up lab-converge lab-demo

lab-up:
	bash lab/lab.sh up

lab-converge:
	ansible-playbook -i inventories/lab playbooks/site.yml

lab-demo:
	bash lab/demo.sh

lab-down:
	bash lab/lab.sh down

lab-image:
	bash lab/lab.sh image

## The whole test suite (what CI runs).
test: deps
	@python3 .ci/stages $(TEST_STAGES)

unit:
	$(PYTEST) -q tests/unit

# Integration tests run on every core (pytest-xdist, one file per worker), except the ones that
# time the health checker and the lab probe: those run afterwards, alone.
TIMED_INTEGRATION := $(wildcard $(addprefix tests/integration/,test_healthd.py test_health_probes.py \
	test_probe_scheduler.py test_lab_probe.py))
integration:
	$(PYTEST) -q -n auto --dist loadfile $(addprefix --ignore=,$(TIMED_INTEGRATION)) tests/integration
	$(PYTEST) -q $(TIMED_INTEGRATION)

# ansible-lint -q: the violations and the exit status, without its summary and notices.
lint:
	ruff check $(RUFF_PATHS)
	ansible-lint -q --profile production playbooks roles lab molecule

sanity:
	cd $(COLLECTION) && ansible-test sanity --python 3.11 --color no

# The alerting and recording rules (docs/monitoring): promtool's own checks, then its unit tests
# (every alert fires in one case and stays quiet in another).
monitoring:
	promtool check rules docs/monitoring/portico-rules.yml
	promtool test rules docs/monitoring/tests/*.test.yml

## The scenarios share the lab: each brings it to its own topology with new gateways (lab.sh
## scenario), then converges, checks idempotence and verifies with real traffic.
##   default: single gateway + Kubernetes; ha: VRRP pair; bgp: BGP/BFD/ECMP behind BIRD, rollout.
molecule: molecule-default molecule-ha molecule-bgp

# --destroy never: the lab is not molecule's, so after a failure there is nothing for molecule to
# clean up (and the lab stays as it failed, for a look).
molecule-default molecule-ha molecule-bgp: molecule-%:
	bash lab/lab.sh scenario $*
	molecule test -s $* --destroy never

bench:
	bash bench/run

bench-quick:
	bash bench/run --quick

clean: lab-down
	rm -rf $(VENV)
