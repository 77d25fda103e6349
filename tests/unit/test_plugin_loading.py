"""Choosing plugins by name: stevedore picks, pluggy checks, errors are loud."""
from __future__ import annotations

import sys
import textwrap

import pytest

from xhost import exception, hookimpl, plugins, registry


@pytest.fixture
def fake_dists(tmp_path, monkeypatch):
    """Install fake distributions (metadata + modules) on sys.path."""
    monkeypatch.syspath_prepend(str(tmp_path))

    def add(dist: str, entry_points: dict[str, dict[str, str]], modules: dict[str, str] = None):
        if modules is None:
            modules = {}
        info = tmp_path / f"{dist.replace('-', '_')}-1.0.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.0\n")
        lines = []
        for group, eps in entry_points.items():
            lines.append(f"[{group}]")
            lines += [f"{name} = {target}" for name, target in eps.items()]
        (info / "entry_points.txt").write_text("\n".join(lines) + "\n")
        for name, source in modules.items():
            (tmp_path / f"{name}.py").write_text(textwrap.dedent(source))
        return info

    yield add
    for name in [m for m in sys.modules if m.startswith("fakeplug")]:
        del sys.modules[name]


HANDLER = """
from xhost import hookimpl

class Handler:
    "A fake image handler."
    def __init__(self, conf):
        self.conf = conf

    @hookimpl
    def xhost_image_capabilities(self, ctx):
        return "caps from fake"
"""


def conf_for(make_conf, **xenserver):
    lines = "\n".join(f"{k} = {v}" for k, v in xenserver.items())
    return make_conf(f"[xenserver]\n{lines}\n")


def test_configured_name_selects_plugin(fake_dists, make_conf):
    fake_dists("fake-handler", {"xhost.image_handlers": {"fakeh": "fakeplug_h:Handler"}},
               {"fakeplug_h": HANDLER})
    host = plugins.load(conf_for(make_conf, image_handler="fakeh"), roles=["image_handler"])
    assert host.selected == {"image_handler": "fakeh"}
    assert host.image_capabilities(ctx=None) == "caps from fake"
    assert type(host.plugin("image_handler")).__name__ == "Handler"


def test_unknown_name_names_role_name_installed_and_hint(fake_dists, make_conf):
    fake_dists("fake-handler", {"xhost.image_handlers": {"fakeh": "fakeplug_h:Handler"}},
               {"fakeplug_h": HANDLER})
    with pytest.raises(exception.NoSuchPlugin) as err:
        plugins.load(conf_for(make_conf, image_handler="nosuch"), roles=["image_handler"])
    msg = str(err.value)
    assert "image handler 'nosuch' is not available" in msg
    assert "fakeh" in msg and "is the plugin installed?" in msg


def test_import_failure_names_plugin_and_cause(fake_dists, make_conf):
    fake_dists("fake-broken", {"xhost.image_handlers": {"broken": "fakeplug_b:Handler"}},
               {"fakeplug_b": "import not_a_module_anywhere\n"})
    with pytest.raises(exception.PluginLoadError) as err:
        plugins.load(conf_for(make_conf, image_handler="broken"), roles=["image_handler"])
    msg = str(err.value)
    assert "'broken'" in msg and "fakeplug_b:Handler" in msg and "not_a_module_anywhere" in msg


def test_two_plugins_with_one_name_is_an_error(fake_dists, make_conf):
    fake_dists("fake-one", {"xhost.image_handlers": {"twin": "fakeplug_h:Handler"}},
               {"fakeplug_h": HANDLER})
    fake_dists("fake-two", {"xhost.image_handlers": {"twin": "fakeplug_h2:Handler"}},
               {"fakeplug_h2": HANDLER})
    assert set(registry.conflicts("xhost.image_handlers")) == {"twin"}
    with pytest.raises(exception.PluginConflict) as err:
        plugins.load(conf_for(make_conf, image_handler="twin"), roles=["image_handler"])
    assert "fake-one" in str(err.value) and "fake-two" in str(err.value)


def test_extension_may_not_implement_role_hooks(fake_dists, make_conf):
    fake_dists("fake-ext", {"xhost.extensions": {"grabby": "fakeplug_e:Grabby"}},
               {"fakeplug_e": """
                from xhost import hookimpl
                class Grabby:
                    def __init__(self, conf):
                        pass
                    @hookimpl
                    def xhost_image_download(self, ctx, image):
                        return "stolen"
                """})
    with pytest.raises(exception.PluginContractError, match="only the selected image handler"):
        plugins.load(conf_for(make_conf, enabled_extensions="grabby"), roles=[])


def test_plugin_with_unknown_hook_argument_is_refused(fake_dists, make_conf):
    fake_dists("fake-bad", {"xhost.extensions": {"bad": "fakeplug_x:Bad"}},
               {"fakeplug_x": """
                from xhost import hookimpl
                class Bad:
                    def __init__(self, conf):
                        pass
                    @hookimpl
                    def xhost_instance_spawned(self, ctx, instance, color):
                        pass
                """})
    with pytest.raises(exception.PluginContractError, match="color"):
        plugins.load(conf_for(make_conf, enabled_extensions="bad"), roles=[])


def test_unknown_extension_name(make_conf):
    with pytest.raises(exception.NoSuchPlugin, match="extension 'nope'"):
        plugins.load(conf_for(make_conf, enabled_extensions="nope"), roles=[])


def test_extensions_load_in_configured_order(fake_dists, make_conf):
    ext = """
        from xhost import hookimpl
        ORDER = []
        class E:
            def __init__(self, conf):
                pass
            @hookimpl
            def xhost_plugins_loaded(self):
                ORDER.append(type(self).__module__)
    """
    fake_dists("fake-e1", {"xhost.extensions": {"e1": "fakeplug_e1:E"}}, {"fakeplug_e1": ext})
    fake_dists("fake-e2", {"xhost.extensions": {"e2": "fakeplug_e2:E"}}, {"fakeplug_e2": ext})
    host = plugins.load(conf_for(make_conf, enabled_extensions="e2,e1"), roles=[])
    assert host.extensions == ["e2", "e1"]


def test_registry_reads_metadata_without_importing(fake_dists):
    fake_dists("fake-lazy", {"xhost.image_handlers": {"lazy": "fakeplug_lazy:Handler"}},
               {"fakeplug_lazy": "raise RuntimeError('imported!')\n"})
    (item,) = [i for i in registry.installed("xhost.image_handlers") if i.name == "lazy"]
    assert (item.distribution, item.module) == ("fake-lazy", "fakeplug_lazy")
    assert "fakeplug_lazy" not in sys.modules


def test_plugins_from_env_restricts_discovery(fake_dists, monkeypatch):
    fake_dists("fake-handler", {"xhost.image_handlers": {"fakeh": "fakeplug_h:Handler"}},
               {"fakeplug_h": HANDLER})
    assert "fakeh" in registry.names("xhost.image_handlers")
    monkeypatch.setenv(registry.PLUGINS_FROM_ENV, "xhost")
    assert "fakeh" not in registry.names("xhost.image_handlers")


def test_hookimpl_marker_is_the_public_api():
    assert hookimpl.project_name == "xhost"
