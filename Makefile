# Portico: the two commands of the README are `make lab` and `make test`.
SHELL := /bin/bash
VENV ?= .venv
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
export ANSIBLE_CONFIG := $(CURDIR)/ansible.cfg
export CONTAINERS_CONF := $(CURDIR)/lab/containers.conf
export PYTHONPATH := $(CURDIR)/collections
COLLECTION := collections/ansible_collections/portico/gateway
PYTEST := $(VENV)/bin/pytest -p no:cacheprovider

.PHONY: deps lab lab-up lab-converge lab-demo lab-down test unit integration lint sanity molecule molecule-default molecule-ha molecule-bgp bench bench-quick clean

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

## The whole test suite (what CI runs).
test: deps unit integration lint molecule bench-quick

unit:
	$(PYTEST) -q tests/unit

integration:
	$(PYTEST) -q tests/integration

lint:
	ansible-lint --profile production playbooks roles lab molecule
	$(MAKE) sanity

sanity:
	cd $(COLLECTION) && ansible-test sanity --python 3.11 --color no

## All scenarios: single gateway + Kubernetes (default), VRRP pair (ha), BGP/BFD/ECMP behind BIRD
## with the rollout post-checks (bgp). They share the lab containers, so they run one after another.
molecule:
	molecule test -s default
	molecule test -s ha
	molecule test -s bgp

molecule-default:
	molecule test -s default

molecule-ha:
	molecule test -s ha

molecule-bgp:
	molecule test -s bgp

bench:
	bash bench/run

bench-quick:
	bash bench/run --quick

clean: lab-down
	rm -rf $(VENV)
