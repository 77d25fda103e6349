"""The guest agent plugins as plugins: entry points, options, the per-instance
decision, and the helpers of the boot sequence."""
from __future__ import annotations

import pytest

from xhost import exception, plugins, registry
from xhost.backends.agent_none.plugin import AgentDisabled
from xhost.backends.agent_xenstore import boot, options
from xhost.conf import opts
from xhost.objects import Flavor, ImageMeta, Instance

ROLE = registry.ROLES_BY_KEY["guest_agent"]


def instance(**properties) -> Instance:
    return Instance(uuid="u", name="i", flavor=Flavor("f", 1, 512, 1),
                    image=ImageMeta(id="img", properties=properties))


def test_both_plugins_are_installed_and_xenstore_is_the_default(make_conf):
    names = {item.name for item in registry.installed(ROLE.namespace)}
    assert {"xenstore", "none"} <= names
    conf = make_conf()
    assert plugins.selected_names(conf)["guest_agent"] == "xenstore"
    host = plugins.load(conf, roles=["guest_agent"])
    assert type(host.plugin("guest_agent")).__name__ == "XenstoreAgent"
    assert conf.agent_xenstore.password_digest == "md5"


def test_options_are_published_for_the_sample_and_checks():
    groups = {getattr(g, "name", g): [o.name for o in o_] for g, o_ in opts.list_opts()}
    assert groups["agent_xenstore"] == ["password_digest", "password_length", "build_version",
                                        "build_url", "build_md5", "build_os_type"]
    assert {"agent_timeout", "agent_version_timeout", "agent_resetnetwork_timeout",
            "agent_path", "disable_agent", "use_agent_default"} <= set(groups["xenserver"])


def test_bad_options_are_refused_clearly(make_conf):
    conf = make_conf("[agent_xenstore]\nbuild_version = 2.0\n")
    with pytest.raises(exception.ConfigError,
                       match="build_version is set, so build_url and build_md5 must be set"):
        plugins.load(conf, roles=["guest_agent"])
    conf = make_conf("[agent_xenstore]\npassword_digest = sha1\n")
    with pytest.raises(exception.XhostError, match="password_digest"):
        plugins.load(conf, roles=["guest_agent"])


@pytest.mark.parametrize("properties,default,expected", [
    ({"img_use_agent": "true"}, False, True),
    ({"img_use_agent": "False"}, True, False),
    ({"xenapi_use_agent": "yes"}, False, True),
    ({"img_use_agent": "0", "xenapi_use_agent": "1"}, False, False),  # the new name wins
    ({}, True, True),
    ({}, False, False),
    ({"img_use_agent": "perhaps"}, True, True),
    ({"img_use_agent": "perhaps"}, False, False),
    ({"img_use_agent": ""}, True, True),
])
def test_the_image_property_decides_strictly(make_conf, properties, default, expected):
    conf = make_conf(f"[xenserver]\nuse_agent_default = {default}\n")
    assert boot.use_agent(conf, instance(**properties)) is expected


def test_disable_agent_wins_over_everything(make_conf):
    conf = make_conf("[xenserver]\ndisable_agent = true\nuse_agent_default = true\n")
    assert boot.use_agent(conf, instance(img_use_agent="true")) is False
    host = plugins.load(conf, roles=["guest_agent"])
    assert host.selected["guest_agent"] == "none"
    assert host.agent_detect(None, instance(img_use_agent="true")) is False
    assert host.agent_configure_instance(None, instance(), "OpaqueRef:x") == []
    with pytest.raises(AgentDisabled, match=r"server i cannot have its password set: xhost "
                                            r"talks to no guest agent"):
        host.agent_set_password(None, instance(), "OpaqueRef:x", "pw")
    with pytest.raises(AgentDisabled, match="cannot have files injected"):
        host.agent_inject_file(None, instance(), "OpaqueRef:x", "/a", b"")


def test_versions_compare_like_nova(make_conf):
    key = boot.version_key
    assert key("1.0.10") > key("1.0.9") > key("1.0")
    assert key("2.2.13.0") > key("2.2.2.9")
    assert key("1.0.0.0") == key("1.0.0.0")
    conf = make_conf("[agent_xenstore]\nbuild_version = 1.2\nbuild_url = http://x/a\n"
                     "build_md5 = 0123456789abcdef0123456789ABCDEF\n")
    options.register(conf)
    linux = instance(os_type="linux")
    assert boot.newer_build(conf, linux, "1.1.9") == ("http://x/a",
                                                      "0123456789abcdef0123456789abcdef")
    assert boot.newer_build(conf, linux, "1.2") is None
    assert boot.newer_build(conf, instance(os_type="windows"), "1.0") is None


def test_generated_passwords():
    seen = {boot.generate_password(12) for _ in range(50)}
    assert len(seen) == 50
    for password in seen:
        assert len(password) == 12 and password.isalnum()
        assert any(c.islower() for c in password) and any(c.isupper() for c in password)
        assert any(c.isdigit() for c in password)
