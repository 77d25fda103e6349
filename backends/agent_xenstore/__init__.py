"""``xenstore``: the XenServer / Rackspace guest agent protocol over XenStore."""
