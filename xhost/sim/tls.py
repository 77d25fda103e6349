"""Self-signed certificate for ``--tls``, generated once per state directory
with the ``openssl`` command (present on every Debian/XCP-ng system)."""
from __future__ import annotations

import ipaddress
import shutil
import subprocess
from pathlib import Path


def ensure_certificate(directory: Path, address: str) -> tuple[Path, Path]:
    """``(cert, key)`` paths, creating a self-signed pair if needed."""
    directory.mkdir(parents=True, exist_ok=True)
    cert, key = directory / "xapi-ssl.pem", directory / "xapi-ssl.key"
    if cert.exists() and key.exists():
        return cert, key
    openssl = shutil.which("openssl")
    if openssl is None:
        raise RuntimeError("--tls needs the 'openssl' command to create a certificate; "
                           "install it (apt-get install openssl) or serve plain HTTP")
    try:
        ipaddress.ip_address(address)
        san = f"subjectAltName=IP:{address},DNS:localhost"
    except ValueError:
        san = f"subjectAltName=DNS:{address},DNS:localhost"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "3650",
         "-subj", f"/CN={address}", "-addext", san,
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True)
    key.chmod(0o600)
    return cert, key
