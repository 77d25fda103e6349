"""The agent password exchange matches the ``openssl`` command byte for byte."""
from __future__ import annotations

import shutil
import subprocess

import pytest

from xhost.backends.agent_xenstore import crypto

OPENSSL = shutil.which("openssl")
pytestmark = pytest.mark.skipif(OPENSSL is None, reason="the openssl command is not installed")

CASES = [
    ("162259276829213363391578010288126", b"S3cr3t-p@ss\n"),
    ("4f2a8c", b"S3cr3t-p@ss"),
    ("1", b""),
    ("98765432109876543210", "pässwörd with ünïcode and a long tail " .encode() * 5 + b"\n"),
]


def openssl(args, data: bytes) -> bytes:
    return subprocess.run([OPENSSL, "enc", "-aes-128-cbc", "-a", "-A", "-nosalt", *args],
                          input=data, capture_output=True, check=True).stdout


@pytest.mark.parametrize("digest", crypto.DIGESTS)
@pytest.mark.parametrize("secret,plaintext", CASES)
def test_encrypt_is_byte_identical_to_openssl(digest, secret, plaintext):
    expected = openssl(["-md", digest, "-pass", f"pass:{secret}"], plaintext).decode().strip()
    assert crypto.encrypt(secret, plaintext, digest) == expected


@pytest.mark.parametrize("digest", crypto.DIGESTS)
@pytest.mark.parametrize("secret,plaintext", CASES)
def test_openssl_decrypts_ours_and_we_decrypt_openssls(digest, secret, plaintext):
    ours = crypto.encrypt(secret, plaintext, digest)
    back = openssl(["-d", "-md", digest, "-pass", f"pass:{secret}"], ours.encode() + b"\n")
    assert back == plaintext
    theirs = openssl(["-md", digest, "-pass", f"pass:{secret}"], plaintext).decode()
    assert crypto.decrypt(secret, theirs, digest) == plaintext


def test_md5_and_sha256_differ_and_md5_is_the_default():
    plain = b"password\n"
    assert crypto.encrypt("5", plain) == crypto.encrypt("5", plain, "md5")
    assert crypto.encrypt("5", plain, "md5") != crypto.encrypt("5", plain, "sha256")


def test_diffie_hellman_agrees_and_uses_the_agents_group():
    assert crypto.PRIME == 2**107 - 1 and crypto.BASE == 5
    host, guest = crypto.DiffieHellman(), crypto.DiffieHellman()
    assert host.shared_secret(guest.public) == guest.shared_secret(host.public)
    assert host.public.isdigit()
    with pytest.raises(ValueError, match="not a number"):
        host.shared_secret("garbage")
    with pytest.raises(ValueError, match="out of range"):
        host.shared_secret("1")


@pytest.mark.parametrize("digest", crypto.DIGESTS)
@pytest.mark.parametrize("secret,plaintext", CASES)
def test_the_simulated_guest_agent_decrypts_what_xhost_encrypts(digest, secret, plaintext):
    """The guest side decrypts with the openssl command, as real agents do."""
    from xhost.sim import guest_agent

    sealed = crypto.encrypt(secret, plaintext, digest)
    assert guest_agent.decrypt_with_openssl(secret, sealed, digest) == plaintext
    other = "sha256" if digest == "md5" else "md5"
    assert guest_agent.decrypt_with_openssl(secret, sealed, other) != plaintext
