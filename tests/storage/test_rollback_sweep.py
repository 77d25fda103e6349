"""Every XAPI call and dom0 script call the backend makes for a full set of
disks fails in turn; each time the undo log removes everything it made."""
from __future__ import annotations

from xhost.compute import configdrive as drive_files

#: Calls whose failure the operation rightly survives: destroying the
#: finished task of an import (XAPI garbage-collects it with the session).
TOLERATED = {"task.destroy"}


def make_all_disks(env, ctx):
    instance = env.instance("adc", root_gb=1, ephemeral_gb=1, swap_mb=16)
    instance.user_data = b"#cloud-config\n"
    plugins = env.plugins
    sr = plugins.storage_choose_sr(ctx, instance)
    disks = list(plugins.storage_create_root_disk(ctx, instance, sr, instance.image))
    disks += plugins.storage_create_ephemeral_disks(ctx, instance, sr)
    disks += plugins.storage_create_swap_disk(ctx, instance, sr)
    disks.append(plugins.storage_create_config_drive(ctx, instance, sr,
                                                     drive_files.files_for(instance)))
    return instance, disks


def test_every_call_fails_in_turn_and_nothing_is_left(env, simulator, monkeypatch):
    controls = simulator.controls
    # Warm up: the image cache is filled, the dom0 version handshake done.
    instance, _ = make_all_disks(env, env.ctx())
    env.plugins.storage_destroy_disks(env.ctx(), instance, None)
    baseline = env.leftovers()

    calls: list[str] = []
    count = controls.count
    ctx = env.ctx()
    with monkeypatch.context() as patch:
        patch.setattr(controls, "count", lambda method: (calls.append(method), count(method)))
        instance, disks = make_all_disks(env, ctx)
    assert [d.kind for d in disks] == ["root", "ephemeral", "swap", "config_drive"]
    # grow_partition, then make_filesystem for the ephemeral and the swap disk
    assert calls.count("host.call_plugin") == 3
    env.plugins.storage_destroy_disks(env.ctx(), instance, None)

    for nth, method in enumerate(calls, 1):
        controls.add_fault("*", ["XHOST_INJECTED_FAULT", method], nth=nth)
        ctx = env.ctx()
        try:
            make_all_disks(env, ctx)
            raised = None
        except Exception as exc:
            raised = exc
        finally:
            controls.clear_faults()
            undo_failures = ctx.undo.rollback()
        assert undo_failures == [], (nth, method, undo_failures)
        left = env.leftovers()
        if method in TOLERATED:
            assert raised is None, (nth, method, raised)
            left.tasks.remove("xhost import_raw_vdi")
        else:
            assert raised is not None and "XHOST_INJECTED_FAULT" in str(raised), (nth, method)
        assert left == baseline, (nth, method, left)
