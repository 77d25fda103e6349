"""``local``: images kept in a directory with their metadata (no set-up)."""
