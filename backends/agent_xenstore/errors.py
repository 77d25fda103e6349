"""What can go wrong talking to a guest agent. Messages never carry a
request's payload (the password one is a secret)."""
from __future__ import annotations

from xhost import exception


class AgentError(exception.XhostError):
    """The guest agent did not do what was asked."""

    msg_fmt = "guest agent of {instance}: {command} failed: {reason}"


class AgentTimeout(AgentError):
    msg_fmt = ("guest agent of {instance}: no answer to {command} within {timeout} s; is the "
               "agent running in the guest? ([xenserver] {option} sets how long to wait)")


class AgentNotImplemented(AgentError):
    msg_fmt = "guest agent of {instance}: the agent does not support {command} ({reason})"


class AgentBadReply(AgentError):
    msg_fmt = "guest agent of {instance}: unusable answer to {command}: {reason}"


class AgentRebooted(AgentError):
    msg_fmt = ("guest agent of {instance}: the guest rebooted during {command} "
               "{times} time(s) in a row; giving up")


class AgentNotRunning(AgentError):
    msg_fmt = ("guest agent of {instance}: the server is not running ({state}); start it "
               "first")
