"""``none``: no guest agent (what ``[xenserver] disable_agent = true`` selects)."""
