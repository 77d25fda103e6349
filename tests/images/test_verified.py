"""``xhost.images.verified``: the strongest hash of the record is checked."""
from __future__ import annotations

import hashlib

import pytest

from xhost import images
from xhost.objects import ImageMeta

DATA = [b"a" * 3_000_000, b"b" * 1_000_001, b"c"]
BODY = b"".join(DATA)


def meta(**kw) -> ImageMeta:
    return ImageMeta(id="img", size=len(BODY), **kw)


def consume(image: ImageMeta, chunks=DATA) -> bytes:
    return b"".join(images.verified(chunks, image))


def test_matching_hashes_pass_the_data_through_unchanged():
    image = meta(checksum=hashlib.md5(BODY).hexdigest(), os_hash_algo="sha512",
                 os_hash_value=hashlib.sha512(BODY).hexdigest())
    assert consume(image) == BODY


def test_the_os_hash_value_is_verified_when_the_record_has_one():
    image = meta(checksum=hashlib.md5(BODY).hexdigest(), os_hash_algo="sha512",
                 os_hash_value=hashlib.sha512(b"other").hexdigest())
    with pytest.raises(images.ImageDataError, match="sha512 does not match os_hash_value"):
        consume(image)


def test_md5_is_the_fallback_without_an_os_hash_value():
    image = meta(checksum=hashlib.md5(b"other").hexdigest())
    with pytest.raises(images.ImageDataError, match="md5 .* != checksum"):
        consume(image)
    assert consume(meta(checksum=hashlib.md5(BODY).hexdigest())) == BODY


def test_a_short_stream_is_refused_even_without_hashes():
    with pytest.raises(images.ImageDataError, match="bytes received"):
        consume(meta(), DATA[:2])


def test_a_chunk_that_cannot_be_hashed_raises_instead_of_hanging():
    image = meta(os_hash_algo="sha512", os_hash_value="0" * 128)
    with pytest.raises(TypeError):
        consume(image, [b"x", "not bytes", b"y"] * 10)


def test_an_abandoned_stream_ends_its_digest_thread():
    import threading

    stream = images.verified(iter(DATA), meta(os_hash_algo="sha512", os_hash_value="0" * 128))
    next(stream)
    stream.close()
    assert not [t for t in threading.enumerate() if t.name.startswith("xhost-hash-")]
