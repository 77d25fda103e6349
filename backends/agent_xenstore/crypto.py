"""The guest agent's password exchange: Diffie-Hellman, then AES-128-CBC.

What Nova's XenAPI driver did with an ``openssl`` subprocess, done in process
with ``cryptography`` and byte-identical to::

    openssl enc -aes-128-cbc -a -A -nosalt -md md5 -pass pass:<shared secret>

(``-md sha256`` is OpenSSL >= 1.1's default; old agents, built against OpenSSL
1.0, derive the key with MD5, so MD5 is xhost's default.) The key and IV
come from OpenSSL's ``EVP_BytesToKey`` with no salt and one iteration.
"""
from __future__ import annotations

import base64
import hashlib
import secrets

from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

#: 2**107 - 1, a Mersenne prime; the agents' fixed group.
PRIME = 162259276829213363391578010288127
BASE = 5
DIGESTS = ("md5", "sha256")


class DiffieHellman:
    """One side of the key exchange. Keys travel as decimal strings (some
    Windows agents crash on integers)."""

    def __init__(self, private: int | None = None) -> None:
        # 80 random bits, as the agents' peers always used.
        self._private = private if private is not None else int.from_bytes(secrets.token_bytes(10), "big")
        self.public = str(pow(BASE, self._private, PRIME))

    def shared_secret(self, peer_public: str | int) -> str:
        try:
            peer = int(str(peer_public).strip())
        except ValueError:
            raise ValueError("the agent's public key is not a number") from None
        if not 1 < peer < PRIME - 1:
            raise ValueError("the agent's public key is out of range")
        return str(pow(peer, self._private, PRIME))


def evp_bytes_to_key(password: bytes, digest: str = "md5", key_len: int = 16,
                     iv_len: int = 16) -> tuple[bytes, bytes]:
    """OpenSSL's ``EVP_BytesToKey`` with no salt and one iteration."""
    if digest not in DIGESTS:
        raise ValueError(f"digest must be one of {DIGESTS}, not {digest!r}")
    derived = b""
    block = b""
    while len(derived) < key_len + iv_len:
        block = hashlib.new(digest, block + password).digest()
        derived += block
    return derived[:key_len], derived[key_len:key_len + iv_len]


def encrypt(secret: str, plaintext: bytes, digest: str = "md5") -> str:
    """AES-128-CBC encrypt ``plaintext`` under ``secret``; single-line base64."""
    key, iv = evp_bytes_to_key(secret.encode(), digest)
    padder = padding.PKCS7(128).padder()
    padded = padder.update(plaintext) + padder.finalize()
    encryptor = Cipher(algorithms.AES(key), modes.CBC(iv)).encryptor()
    return base64.b64encode(encryptor.update(padded) + encryptor.finalize()).decode("ascii")


def decrypt(secret: str, ciphertext_b64: str, digest: str = "md5") -> bytes:
    """The inverse of :func:`encrypt`."""
    key, iv = evp_bytes_to_key(secret.encode(), digest)
    raw = base64.b64decode("".join(ciphertext_b64.split()), validate=True)
    decryptor = Cipher(algorithms.AES(key), modes.CBC(iv)).decryptor()
    padded = decryptor.update(raw) + decryptor.finalize()
    unpadder = padding.PKCS7(128).unpadder()
    return unpadder.update(padded) + unpadder.finalize()
