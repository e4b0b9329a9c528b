"""What one run does with Kubernetes objects, end to end and in-process, for tests of bad input:
translate the cluster, pack the inventory document, merge with lb_validate's model (allocation
included) and render the gateway's nftables script. And what would make nft refuse that script."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from ansible_collections.portico.gateway.plugins.module_utils.dataplane.options import RenderOptions
from ansible_collections.portico.gateway.plugins.module_utils.dataplane.render import render_table
from ansible_collections.portico.gateway.plugins.module_utils.k8s.translate import TranslateOptions, translate_cluster
from ansible_collections.portico.gateway.plugins.module_utils.model.documents import (
    SERVICES_FORMAT,
    BackendSetPacker,
    encode,
)
from ansible_collections.portico.gateway.plugins.module_utils.model.ipam import Pool
from ansible_collections.portico.gateway.plugins.module_utils.model.sources import MergedModel, merge

# nft refuses a longer comment ("comment too long, 128 characters maximum allowed").
NFT_COMMENT_MAX = 128


def run_site(services: Sequence[Mapping[str, Any]], slices: Sequence[Mapping[str, Any]], nodes: Sequence[Mapping[str, Any]],
             options: TranslateOptions, pools: Mapping[str, Pool], static: Sequence[Any] = (),
             ) -> tuple[list[dict[str, Any]], MergedModel, str]:
    """(inventory entries, merged model, nft script) of one run over these objects."""
    entries = translate_cluster(services, slices, nodes, options)
    packer = BackendSetPacker()
    for entry in entries:
        entry["loadbalancers"] = packer.pack_loadbalancers(entry["loadbalancers"])
    model = merge(list(static), encode(SERVICES_FORMAT, entries, packer.sets), pools)
    return entries, model, render_table(model.loadbalancers, RenderOptions()).script


def assert_nft_loadable(script: str) -> None:
    """What would make ``nft -f`` refuse the whole table (every LB, not only the odd one)."""
    for comment in re.findall(r'comment "([^"]*)"', script):
        assert len(comment.encode()) <= NFT_COMMENT_MAX, comment
    assert "%" not in script  # IPv6 zones (fe80::1%eth0): nft has no syntax for them
    for line in script.splitlines():
        assert line.count('"') % 2 == 0, line
