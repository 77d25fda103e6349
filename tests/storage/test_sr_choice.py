"""Choosing the SR by [xenserver] sr_matching_filter, and SR capabilities."""
from __future__ import annotations

import logging

import pytest

from xhost.backends.storage_sr.errors import InvalidSrFilter, NoMatchingSr


def choose(env):
    return env.plugins.storage_choose_sr(env.ctx(), None)


def test_default_sr_is_the_pools(env):
    assert choose(env) == env.sr("Local storage")


def test_other_config_filter(make_env):
    env = make_env("[xenserver]\nsr_matching_filter = other-config:i18n-key=local-storage\n")
    assert choose(env) == env.sr("Local storage")
    lvm = env.sr("Local LVM storage")
    env.xapi.call("SR.add_to_other_config", lvm, "xhost-tier", "fast")
    env2 = make_env("[xenserver]\nsr_matching_filter = other-config:xhost-tier=fast\n")
    assert choose(env2) == lvm


def test_several_matches_pick_the_most_free_space(make_env):
    env = make_env("[xenserver]\nsr_matching_filter = other-config:xhost-tier=bulk\n")
    for name in ("Local storage", "NFS virtual disk storage", "Local LVM storage"):
        env.xapi.call("SR.add_to_other_config", env.sr(name), "xhost-tier", "bulk")
    assert choose(env) == env.sr("NFS virtual disk storage")  # 1 TiB, the largest


def test_no_match_names_the_filter_and_lists_the_srs(make_env):
    env = make_env("[xenserver]\nsr_matching_filter = other-config:xhost-tier=gold\n")
    with pytest.raises(NoMatchingSr) as err:
        choose(env)
    message = str(err.value)
    assert "sr_matching_filter = 'other-config:xhost-tier=gold' matches no SR" in message
    assert ("'Local storage' (ext; the pool's default SR; other-config: i18n-key=local-storage"
            in message)
    assert "'Local LVM storage' (lvm; other-config: none)" in message
    assert "'XCP-ng Tools' (iso; cannot hold disks;" in message


def test_iso_library_is_never_chosen(make_env):
    env = make_env("[xenserver]\nsr_matching_filter = other-config:i18n-key=xenserver-tools\n")
    with pytest.raises(NoMatchingSr, match="'XCP-ng Tools' \\(iso; cannot hold disks"):
        choose(env)


def test_only_srs_plugged_on_this_host(make_env):
    env = make_env("[xenserver]\nsr_matching_filter = other-config:xhost-tier=shared\n")
    nfs = env.sr("NFS virtual disk storage")
    env.xapi.call("SR.add_to_other_config", nfs, "xhost-tier", "shared")
    assert choose(env) == nfs
    for pbd in env.xapi.call("SR.get_PBDs", nfs):
        env.xapi.call("PBD.unplug", pbd)
    with pytest.raises(NoMatchingSr, match="'NFS virtual disk storage' \\(nfs; not plugged on "
                                           "this host"):
        choose(env)


def test_default_sr_missing_or_unplugged(env):
    pool = env.xapi.call("pool.get_all")[0]
    nfs = env.sr("NFS virtual disk storage")
    env.xapi.call("pool.set_default_SR", pool, nfs)
    assert choose(env) == nfs
    for pbd in env.xapi.call("SR.get_PBDs", nfs):
        env.xapi.call("PBD.unplug", pbd)
    with pytest.raises(NoMatchingSr, match="the pool's default SR is not plugged on this host"):
        choose(env)
    env.xapi.call("pool.set_default_SR", pool, "OpaqueRef:NULL")
    with pytest.raises(NoMatchingSr, match="the pool has no default SR"):
        choose(env)


@pytest.mark.parametrize("value, reason", [
    ("default-sr", "it has no ':'"),
    ("default-sr:false", "default-sr only takes 'true'"),
    ("other-config:i18n-key", "other-config needs '<key>=<value>'"),
    ("name-label:Local storage", "unknown criterion 'name-label'"),
])
def test_invalid_filters_say_what_is_valid(make_env, value, reason):
    env = make_env(f"[xenserver]\nsr_matching_filter = {value}\n")
    with pytest.raises(InvalidSrFilter) as err:
        choose(env)
    assert reason in str(err.value)
    assert "'default-sr:true'" in str(err.value) and "other-config:<key>=<value>" in str(err.value)


def test_capabilities(env):
    ctx = env.ctx()
    ext = env.plugins.storage_capabilities(ctx, env.sr("Local storage"))
    rec = env.xapi.call("SR.get_record", env.sr("Local storage"))
    assert (ext.sr_type, ext.vhd_files, ext.copy_on_write, ext.shared) == ("ext", True, True,
                                                                          False)
    assert ext.free_bytes == int(rec["physical_size"]) - int(rec["physical_utilisation"])
    nfs = env.plugins.storage_capabilities(ctx, env.sr("NFS virtual disk storage"))
    assert (nfs.sr_type, nfs.vhd_files, nfs.copy_on_write, nfs.shared) == ("nfs", True, True,
                                                                          True)
    lvm = env.plugins.storage_capabilities(ctx, env.sr("Local LVM storage"))
    assert (lvm.sr_type, lvm.vhd_files, lvm.copy_on_write, lvm.shared) == ("lvm", False, False,
                                                                          False)
    assert lvm.free_bytes == 250 * 1024 ** 3


def test_the_choice_is_reused_for_its_time_and_forgotten_when_an_operation_fails(make_env):
    env = make_env("[storage_sr]\nsr_choice_cache_seconds = 60\n")
    counters = env.sim.controls.read_counters
    first, second, third = env.ctx(), env.ctx(), env.ctx()
    counters(reset=True)
    sr = env.plugins.storage_choose_sr(first, None)
    assert counters(reset=True), "the first choice asks the host"
    assert env.plugins.storage_choose_sr(second, None) == sr
    assert not counters(reset=True), "a choice made a moment ago is reused"
    first.undo.rollback(logging.getLogger(__name__))  # that operation failed
    counters(reset=True)
    assert env.plugins.storage_choose_sr(third, None) == sr
    assert counters(reset=True), "after a failure the filter is matched again"


def test_a_cache_time_of_zero_matches_the_filter_every_time(env):
    counters = env.sim.controls.read_counters
    for _ in range(2):
        ctx = env.ctx()
        counters(reset=True)
        env.plugins.storage_choose_sr(ctx, None)
        assert counters(reset=True)
