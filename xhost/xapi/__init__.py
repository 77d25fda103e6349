"""Talking to XAPI hosts: sessions, tasks, dom0 plugins, the HTTP data plane."""
from xhost.xapi.client import XapiClient, decode_task_result

__all__ = ["XapiClient", "decode_task_result"]
