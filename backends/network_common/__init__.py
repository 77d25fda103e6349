"""What the network backends share (not a plugin): VIF records, Nova's device
names, interim networks and the dom0 hybrid plumbing."""
