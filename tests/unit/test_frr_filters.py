"""Filters of the frr role (the collection's plugins/filter/frr.py: portico.gateway.pool_prefixes, ...)."""

import pytest

from ansible_collections.portico.gateway.plugins.filter import frr


def test_pool_prefixes_cover_ranges_exactly():
    pools = {
        "public": {"addresses": ["198.51.100.0/25", "198.51.100.128-198.51.100.239", "2001:db8:100::/64"]},
        "team-b": {"addresses": ["198.51.100.240-198.51.100.241"], "namespaces": ["team-b"], "auto_assign": False},
    }
    assert frr.pool_prefixes(pools) == [
        "198.51.100.0/25", "198.51.100.128/26", "198.51.100.192/27", "198.51.100.224/28",
        "198.51.100.240/31", "2001:db8:100::/64",
    ]


def test_pool_prefixes_merge_and_single_addresses():
    assert frr.pool_prefixes({"a": {"addresses": ["198.51.100.0/26", "198.51.100.64/26", "203.0.113.7"]}}) == [
        "198.51.100.0/25", "203.0.113.7/32"]
    assert frr.pool_prefixes(None) == []
    assert frr.pool_prefixes({}) == []


def test_pool_prefixes_name_the_bad_entry():
    with pytest.raises(ValueError, match=r"pool x: addresses\[1\]"):
        frr.pool_prefixes({"x": {"addresses": ["198.51.100.0/24", "not-an-ip"]}})


def test_prefix_list_entries():
    prefixes = ["198.51.100.0/25", "198.51.100.240/32", "2001:db8:100::/64", "2001:db8:100::5/128"]
    assert frr.frr_prefix_list_entries(prefixes, 4, "hosts") == ["198.51.100.0/25 ge 32", "198.51.100.240/32"]
    assert frr.frr_prefix_list_entries(prefixes, 6, "hosts") == ["2001:db8:100::/64 ge 128", "2001:db8:100::5/128"]
    assert frr.frr_prefix_list_entries(["198.19.0.0/16"], 4, "any") == ["198.19.0.0/16 le 32"]
    assert frr.frr_prefix_list_entries(["198.19.0.0/16"], 6, "any") == []
    with pytest.raises(ValueError, match="longer must be hosts or any"):
        frr.frr_prefix_list_entries(prefixes, 4, "more")


def test_validation_helpers():
    assert frr.invalid_prefixes(["198.51.100.0/24", "198.51.100.1/24", "x", "2001:db8::/32", "198.51.100.1"]) == [
        "198.51.100.1/24", "x", "198.51.100.1"]
    assert frr.invalid_addresses(["198.18.0.1", "2001:db8::1", "198.18.0.300", "198.18.0.1/32"]) == [
        "198.18.0.300", "198.18.0.1/32"]
    assert (frr.ip_version("198.18.0.1"), frr.ip_version("2001:db8::1"), frr.ip_version("uplink")) == (4, 6, 0)
