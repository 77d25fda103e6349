"""``vdi_remote_stream``: xhost streams images through XAPI's /import_raw_vdi and /export_raw_vdi."""
