"""``glance``: OpenStack Glance (image API v2) as xhost's image service."""
