"""The ``[agent_xenstore]`` options.

Nova's agent options (``agent_timeout``, ``agent_version_timeout``,
``agent_resetnetwork_timeout``, ``disable_agent``, ``use_agent_default``)
are core options of ``[xenserver]``; these are the plugin's own.
"""
from __future__ import annotations

from oslo_config import cfg

GROUP = cfg.OptGroup(
    "agent_xenstore",
    title="'xenstore' guest agent options",
    help="Options of the 'xenstore' guest agent (the XenServer / Rackspace guest agent "
         "protocol over XenStore). Its timeouts are Nova's [xenserver] agent_* options.",
)

OPTS = [
    cfg.StrOpt("password_digest", default="md5",
               choices=[("md5", "classic agents (OpenSSL 1.0's default)"),
                        ("sha256", "agents using OpenSSL >= 1.1's default")],
               help="Digest OpenSSL's key derivation (EVP_BytesToKey) uses to turn the "
                    "Diffie-Hellman secret into the AES key that protects the admin password, "
                    "i.e. the agent's 'openssl enc -md'. md5 is what agents built against "
                    "OpenSSL 1.0 (all the classic ones) expect; agents built against OpenSSL "
                    ">= 1.1 with its default need sha256."),
    cfg.IntOpt("password_length", default=12, min=8, max=64,
               help="Length of the admin password generated for instances created without "
                    "one (shown once by 'xhost server create')."),
    cfg.StrOpt("build_version",
               help="Version of the newest guest agent build. At first boot, an agent that "
                    "reports an older version is told to update itself ('agentupdate') from "
                    "build_url. Unset: agents are never updated."),
    cfg.URIOpt("build_url", schemes=["http", "https"],
               help="Where guests download the agent build of build_version (http, https)."),
    cfg.StrOpt("build_md5", regex=r"^[0-9a-fA-F]{32}$",
               help="MD5 checksum (hex) of the build at build_url; the agent checks it."),
    cfg.StrOpt("build_os_type", default="linux",
               help="os_type of the instances the build is for (Nova kept builds per os_type): "
                    "'linux', 'windows', or '' for all."),
]


def list_opts() -> list[tuple[cfg.OptGroup, list[cfg.Opt]]]:
    return [(GROUP, OPTS)]


def register(conf: cfg.ConfigOpts) -> None:
    conf.register_group(GROUP)
    conf.register_opts(OPTS, group=GROUP)
