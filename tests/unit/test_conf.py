"""Nova compatibility of [xenserver] and configuration loading."""
from __future__ import annotations

import logging

import pytest
from oslo_config import cfg, types

from xhost.conf import check, xenserver

MiB = 1024 * 1024
# Nova's nova/conf/xenserver.py when the XenAPI driver was removed:
# name -> (oslo type class, default, min, max)
NOVA = {
    "agent_timeout": (types.Integer, 30, 0, None),
    "agent_version_timeout": (types.Integer, 300, 0, None),
    "agent_resetnetwork_timeout": (types.Integer, 60, 0, None),
    "agent_path": (types.String, "usr/sbin/xe-update-networking", None, None),
    "disable_agent": (types.Boolean, False, None, None),
    "use_agent_default": (types.Boolean, False, None, None),
    "login_timeout": (types.Integer, 10, 0, None),
    "connection_concurrent": (types.Integer, 5, 1, None),
    "cache_images": (types.String, "all", None, None),
    "image_compression_level": (types.Integer, None, 1, 9),
    "default_os_type": (types.String, "linux", None, None),
    "block_device_creation_timeout": (types.Integer, 10, 1, None),
    "max_kernel_ramdisk_size": (types.Integer, 16 * MiB, None, None),
    "sr_matching_filter": (types.String, "default-sr:true", None, None),
    "sparse_copy": (types.Boolean, True, None, None),
    "num_vbd_unplug_retries": (types.Integer, 10, 0, None),
    "ipxe_network_name": (types.String, None, None, None),
    "ipxe_boot_menu_url": (types.String, None, None, None),
    "ipxe_mkisofs_cmd": (types.String, "mkisofs", None, None),
    "connection_url": (types.String, None, None, None),
    "connection_username": (types.String, "root", None, None),
    "connection_password": (types.String, None, None, None),
    "vhd_coalesce_poll_interval": (types.Float, 5.0, 0, None),
    "check_host": (types.Boolean, True, None, None),
    "vhd_coalesce_max_attempts": (types.Integer, 20, 0, None),
    "sr_base_path": (types.String, "/var/run/sr-mount", None, None),
    "target_host": (types.HostAddress, None, None, None),
    "target_port": (types.Port, 3260, 0, 65535),
    "independent_compute": (types.Boolean, False, None, None),
    "running_timeout": (types.Integer, 60, 0, None),
    "image_upload_handler": (types.String, "", None, None),
    "image_handler": (types.String, "direct_vhd", None, None),
    "introduce_vdi_retry_wait": (types.Integer, 20, 0, None),
    "ovs_integration_bridge": (types.String, None, None, None),
    "use_join_force": (types.Boolean, True, None, None),
    "console_public_hostname": (types.String, None, None, None),  # default: hostname
}


def test_all_36_nova_options_are_registered():
    assert len(NOVA) == 36
    registered = {o.name: o for o in xenserver.NOVA_OPTS}
    assert set(registered) == set(NOVA)


@pytest.mark.parametrize("name", sorted(NOVA))
def test_nova_option_keeps_type_default_and_bounds(name):
    opt = {o.name: o for o in xenserver.all_opts()}[name]
    type_cls, default, lo, hi = NOVA[name]
    assert isinstance(opt.type, type_cls)
    if name != "console_public_hostname":
        assert opt.default == default
    if lo is not None or hi is not None:
        assert (getattr(opt.type, "min", None), getattr(opt.type, "max", None)) == (lo, hi)
    if name == "connection_password":
        assert opt.secret
    if name == "cache_images":
        assert list(opt.type.choices) == ["all", "some", "none"]


NOVA_CONF = """
[DEFAULT]
compute_driver = xenapi.XenAPIDriver
my_ip = 192.0.2.5
flat_injected = False
[glance]
api_servers = http://192.0.2.1:9292
[xenserver]
connection_url = https://192.0.2.10
connection_username = root
connection_password = not-a-real-secret
connection_concurrent = 8
agent_timeout = 45
cache_images = some
image_compression_level = 9
sr_matching_filter = other-config:i18n-key=local-storage
vhd_coalesce_poll_interval = 2.5
target_port = 3261
ovs_integration_bridge = br-int
torrent_images = none
[neutron]
url = http://192.0.2.1:9696
"""


def test_existing_nova_conf_loads_unchanged(make_conf):
    conf = make_conf(NOVA_CONF)
    x = conf.xenserver
    assert x.connection_url == "https://192.0.2.10"
    assert x.connection_password == "not-a-real-secret"
    assert (x.connection_concurrent, x.agent_timeout, x.image_compression_level) == (8, 45, 9)
    assert x.cache_images == "some"
    assert x.vhd_coalesce_poll_interval == 2.5 and x.target_port == 3261
    assert x.ovs_integration_bridge == "br-int"


def test_vif_driver_class_paths_are_deprecated_aliases(make_conf, caplog):
    conf = make_conf("[xenserver]\nvif_driver = nova.virt.xenapi.vif.XenAPIBridgeDriver\n")
    with caplog.at_level(logging.WARNING):
        assert conf.xenserver.network_backend == "linux_bridge"
    assert "deprecated" in caplog.text
    conf = make_conf("[xenserver]\nnetwork_backend = nova.virt.xenapi.vif.XenAPIOpenVswitchDriver\n")
    assert conf.xenserver.network_backend == "openvswitch"


def test_image_upload_handler_class_path_alias(make_conf):
    conf = make_conf("[xenserver]\nimage_handler = nova.virt.xenapi.image.vdi_stream.VdiStreamStore\n")
    assert conf.xenserver.image_handler == "vdi_remote_stream"


def test_disable_agent_selects_none(make_conf):
    from xhost import plugins

    conf = make_conf("[xenserver]\ndisable_agent = true\nguest_agent = xenstore\n")
    assert plugins.selected_names(conf)["guest_agent"] == "none"


def _problems(write_conf, text):
    path = write_conf(text)
    return path, check.check([str(path)])


def _errors(problems):
    return [p for p in problems if p.level == check.ERROR]


def test_check_reports_type_and_bounds_with_option_group_and_file(write_conf):
    path, problems = _problems(write_conf, """
        [xenserver]
        agent_timeout = soon
        connection_concurrent = 0
        image_compression_level = 12
        cache_images = most
    """)
    by_option = {p.option: p for p in _errors(problems)}
    for option in ("agent_timeout", "connection_concurrent", "image_compression_level",
                   "cache_images"):
        assert by_option[option].group == "xenserver"
        assert by_option[option].file == str(path)
    assert "soon" in by_option["agent_timeout"].message
    assert "most" in by_option["cache_images"].message


def test_check_reports_unknown_plugin_with_role_installed_and_hint(write_conf):
    path, problems = _problems(write_conf, "[xenserver]\nimage_handler = fastest_vhd\n")
    (problem,) = [p for p in _errors(problems) if p.option == "image_handler"]
    assert problem.file == str(path)
    assert "image handler 'fastest_vhd' is not available" in problem.message
    assert "installed:" in problem.message and "is the plugin installed?" in problem.message


def test_check_ignores_other_services_and_notes_removed_nova_options(write_conf):
    _, problems = _problems(write_conf, NOVA_CONF)
    assert not [p for p in problems if p.group in ("DEFAULT", "glance", "neutron")]
    notices = [p for p in problems if p.level == check.NOTICE]
    assert [p.option for p in notices] == ["torrent_images"]


def test_check_reports_misspelt_option(write_conf):
    path, problems = _problems(write_conf, "[xenserver]\nconection_url = http://h\n")
    (problem,) = [p for p in _errors(problems) if p.option == "conection_url"]
    assert problem.file == str(path) and "unknown option" in problem.message


def test_check_requires_password_with_url(write_conf):
    _, problems = _problems(write_conf, "[xenserver]\nconnection_url = https://h\n")
    (problem,) = [p for p in _errors(problems) if p.option == "connection_password"]
    assert problem.file == check.UNSET and "connection_url is set" in problem.message


def test_check_rejects_non_xapi_url(write_conf):
    _, problems = _problems(write_conf, "[xenserver]\nconnection_url = ftp://h\n"
                                        "connection_password = x\n")
    assert [p.option for p in _errors(problems) if "not a XAPI URL" in p.message] == \
        ["connection_url"]


def test_check_reports_unreadable_file(tmp_path):
    problems = check.check([str(tmp_path / "missing.conf")])
    assert problems[0].level == check.ERROR and "missing.conf" in problems[0].file


def test_password_is_secret_in_logged_config(make_conf, caplog):
    conf = make_conf(NOVA_CONF)
    with caplog.at_level(logging.DEBUG):
        conf.log_opt_values(logging.getLogger("t"), logging.DEBUG)
    assert "not-a-real-secret" not in caplog.text


def test_options_are_registered_on_private_conf_objects():
    assert "xenserver" not in cfg.CONF  # never the global CONF
