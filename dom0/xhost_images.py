#!/usr/bin/env python3
"""xhost dom0 plugin: VHD images between an image service and a file SR.

The ``direct_vhd`` image handler calls these functions so that the image
bytes travel straight between the image service (HTTP or HTTPS) and the SR,
never through xhost:

``download_vhd``
    GETs an image -- a tarball of a VHD chain (``0.vhd`` the leaf ...
    ``N.vhd`` the base; legacy ``snap.vhd``/``image.vhd``/``base.vhd``) or a
    bare VHD -- and, while hashing what arrives, gunzips and untars it into a
    staging directory inside the SR.  Only regular files with those names are
    accepted; each file is checked against the limits before its data is
    written, then the chain is validated (structure, checksums, BAT, parent
    links) with ``xhost_vhd``.  The size of the download and its strongest
    hash must match the image's (``os_hash_value``, else md5 ``checksum``).
    The files get fresh UUIDs (footer and file name), their parents are
    re-pointed, the parents are hidden, and the chain is moved into the SR
    (base first, leaf last).  The staging directory is removed on every
    path.
``upload_vhd``
    Streams the VHD chain of a VDI (found from its file) as a gzipped tarball
    (``0.vhd`` the leaf ... ``N.vhd``) with chunked transfer encoding to an
    image service URL.
``remove_vhds``
    Removes ``<uuid>.vhd`` files of an SR (the undo of a download whose files
    were never introduced), after waiting for a download of those files that
    is still running (its caller was killed) to end.

Failures use these codes (params never include URLs' query strings or
request headers, which may carry credentials):

``XHOST_IMAGE_RETRY [reason]``       transient: another attempt may work
``XHOST_IMAGE_HTTP [status, reason]`` the server refused (permanent)
``XHOST_IMAGE_NOT_FOUND [reason]``   the image is not there (HTTP 404)
``XHOST_IMAGE_INVALID [reason]``     the image data is unusable or hostile
``XHOST_IMAGE_SR [reason]``          the SR is not a mounted file SR
"""
import fcntl
import hashlib
import http.client
import os
import queue
import re
import shutil
import socket
import ssl
import stat
import tarfile
import tempfile
import threading
import uuid as uuidlib
import zlib
from urllib.parse import urlsplit

import xhost_dom0lib
import xhost_vhd

CHUNK = 1024 * 1024
#: Bytes per read from the network and per piece of gunzip output: large
#: pieces keep the per-piece Python work small next to the copying and
#: hashing (4 pieces in flight cost 8 MiB).
READ_SIZE = 2 * 1024 * 1024
#: Compressed bytes handed to zlib at a time (see _Gunzip).
INPUT_SIZE = 512 * 1024
#: Network buffers in the pool (see _HashingReader): one being filled,
#: the rest queued for (or being hashed by) the digest thread.
POOL_BUFFERS = 6
#: All-zero pieces at least this large are left as holes in the staging file.
HOLE_MIN = 64 * 1024
STAGING_PREFIX = ".xhost-staging-"
#: Members of an image tarball: 0.vhd (leaf) ... N.vhd (base).
NUMBERED = re.compile(r"^(0|[1-9][0-9]{0,2})\.vhd$")
#: Nova's pre-Grizzly names, numbered in this order when present.
LEGACY = ("snap.vhd", "image.vhd", "base.vhd")
UUID_NAME = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\.vhd$")
#: HTTP statuses that another attempt cannot fix (Nova's list).
PERMANENT = frozenset([400, 401, 403, 404, 405, 406, 409, 410, 411, 412, 413, 415, 416,
                       417, 422, 501, 505, 510])
#: Decompressed bytes tolerated after the end of the tar archive (tar pads
#: its last record with zeros; anything larger is refused as a bomb).
TRAILING_LIMIT = 1024 * 1024
#: Bytes a VHD may put before its header.
MAX_HEADER_OFFSET = 64 * 1024
DEFAULT_TIMEOUT = 90


def _fail(code, *params):
    return xhost_dom0lib.Dom0Error(code, *params)


def _invalid(reason):
    return _fail("XHOST_IMAGE_INVALID", reason)


def _retry(reason):
    return _fail("XHOST_IMAGE_RETRY", reason)


def _public(url):
    """``scheme://host/path`` of a URL: no query string (tokens), no user info."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = "%s:%d" % (host, parts.port)
    return "%s://%s%s" % (parts.scheme, host, parts.path)


# --------------------------------------------------------------------------
# HTTP


def _connection(url, ca_pem, verify_tls, timeout):
    parts = urlsplit(url)
    if parts.scheme == "https":
        if ca_pem:
            context = ssl.create_default_context(cadata=ca_pem)
        else:
            context = ssl.create_default_context()
        if not verify_tls:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        conn = http.client.HTTPSConnection(parts.hostname, parts.port, timeout=timeout,
                                           context=context)
    elif parts.scheme == "http":
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    else:
        raise _fail("XHOST_IMAGE_HTTP", "0", "unsupported URL scheme %r (http or https)"
                    % parts.scheme)
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    return conn, path


def _refused(status, reason, url, body):
    text = body[:200].decode("utf-8", "replace").strip()
    message = "%s answered HTTP %d %s%s" % (_public(url), status, reason,
                                            (": " + text) if text else "")
    if status == 404:
        return _fail("XHOST_IMAGE_NOT_FOUND", message)
    if status in PERMANENT or 300 <= status < 400:
        return _fail("XHOST_IMAGE_HTTP", str(status), message)
    return _retry(message)


def _get(url, headers, ca_pem, verify_tls, timeout):
    conn, path = _connection(url, ca_pem, verify_tls, timeout)
    try:
        conn.putrequest("GET", path, skip_accept_encoding=True)
        for key, value in (headers or {}).items():
            conn.putheader(key, value)
        conn.endheaders()
        response = conn.getresponse()
    except ssl.SSLError as exc:
        conn.close()
        raise _fail("XHOST_IMAGE_HTTP", "0", "TLS failure talking to %s: %s"
                    % (_public(url), exc))
    except (OSError, http.client.HTTPException) as exc:
        conn.close()
        raise _retry("cannot GET %s: %s: %s" % (_public(url), type(exc).__name__, exc))
    if response.status != 200:
        body = b""
        try:
            body = response.read(4096)
        except (OSError, http.client.HTTPException):
            pass
        conn.close()
        raise _refused(response.status, response.reason, url, body)
    return conn, response


class _Digest(threading.Thread):
    """One digest of the buffers it is given, on a thread of its own.

    hashlib releases the GIL on large buffers, so the hash gets a core while
    the download, gunzip and writes go on.  Each item is ``(buffer, view)``:
    once ``view`` is hashed, ``buffer`` goes back to the pool it came from.
    """

    def __init__(self, algo, pool):
        threading.Thread.__init__(self, name="xhost-image-" + algo)
        self.daemon = True
        self.digest = hashlib.md5() if algo == "md5" else hashlib.new(algo)
        self.queue = queue.Queue()
        self.pool = pool

    def run(self):
        update, get, free = self.digest.update, self.queue.get, self.pool.put
        while True:
            item = get()
            if item is None:
                return
            update(item[1])
            free(item[0])

    def finish(self):
        self.queue.put(None)
        self.join()


class _HashingReader(object):
    """The HTTP body, hashed (with ``algo``, else md5, else not at all) and
    counted as it is read.

    The body is received straight from the socket into a few preallocated
    buffers (``POOL_BUFFERS``) that go round between the reader and the
    digest thread: nothing is allocated, zero-filled or faulted in per read,
    and the pool bounds how far the download runs ahead of the hash.
    :meth:`read_view` hands out a view of a pool buffer, valid only until
    the next read; :meth:`read` returns a copy."""

    def __init__(self, response, url, algo, expected_size, md5=True):
        self.response = response
        self.url = url
        self.pool = queue.Queue()
        for _ in range(POOL_BUFFERS):
            self.pool.put(bytearray(READ_SIZE))
        self.digests = [_Digest(algo, self.pool)] if algo else (
            [_Digest("md5", self.pool)] if md5 else [])
        for digest in self.digests:
            digest.start()
        self.count = 0
        self.expected = expected_size

    def read_view(self, count):
        """Up to ``count`` bytes as a memoryview, valid until the next read."""
        count = min(count, READ_SIZE)
        buffer = self.pool.get()
        view = memoryview(buffer)[:count]
        try:
            got = self.response.readinto(view)
        except http.client.IncompleteRead as exc:
            raise _retry("the download from %s was cut after %d bytes (%d missing)"
                         % (_public(self.url), self.count + len(exc.partial),
                            exc.expected or 0))
        except (OSError, http.client.HTTPException) as exc:
            raise _retry("the download from %s failed after %d bytes: %s: %s"
                         % (_public(self.url), self.count, type(exc).__name__, exc))
        view = view[:got]
        if got and self.digests:
            self.digests[0].queue.put((buffer, view))
        else:  # nothing will hash it: it is free again at the next read
            self.pool.put(buffer)
        if got:
            self.count += got
            if self.expected is not None and self.count > self.expected:
                raise _invalid("the server sent more than the image's %d bytes"
                               % self.expected)
        return view

    def read(self, count):
        return bytes(self.read_view(count))

    def close(self):
        for digest in self.digests:
            digest.finish()

    @property
    def digest(self):
        """The digest computed, or None."""
        return self.digests[0].digest if self.digests else None


class _Gunzip(object):
    """Decompresses a gzip stream (several members allowed) as it is read,
    refusing to produce more than ``limit`` bytes.

    Compressed input is taken in modest pieces and output produced in
    large ones, so zlib rarely leaves an unconsumed tail to copy, and a read
    that wants the whole output gets zlib's buffer itself."""

    def __init__(self, source, limit, head=b""):
        self.source = source
        self.limit = limit
        self.produced = 0
        self._pending = head
        self._out = b""
        self._at = 0
        self._z = None
        self.finished = False

    def _input(self):
        """Compressed input: what zlib left, else a view of the next read
        (valid until the read after; zlib copies what it leaves)."""
        data, self._pending = self._pending, b""
        read = getattr(self.source, "read_view", self.source.read)
        while len(data) < 2:
            if data:  # a byte of a buffer the next read may reuse
                data = bytes(data)
            more = read(INPUT_SIZE)
            if not more:
                break
            data = data + bytes(more) if data else more
        return data

    def _more(self):
        while not self._out and not self.finished:  # (_out is empty on entry)
            data = self._input()
            if not data:
                if self._z is not None:
                    raise _retry("the gzip stream ended early (the download was cut?)")
                self.finished = True
                return
            if self._z is None:
                if data[:2] != b"\x1f\x8b":
                    if bytes(data).strip(b"\x00"):
                        raise _invalid("%d bytes of non-gzip data follow the compressed "
                                       "image" % len(data))
                    continue  # zero padding after the last gzip member
                self._z = zlib.decompressobj(16 + zlib.MAX_WBITS)
            try:
                out = self._z.decompress(data, READ_SIZE)
            except zlib.error as exc:
                raise _invalid("the gzip data is corrupt: %s" % exc)
            if self._z.eof:
                self._pending = self._z.unused_data
                self._z = None
            else:
                self._pending = self._z.unconsumed_tail
            self.produced += len(out)
            if self.produced > self.limit:
                raise _invalid("the image expands to more than %d bytes, more than its "
                               "disks can hold (a gzip bomb?)" % self.limit)
            self._out = out

    def read(self, count=-1):
        if self._at >= len(self._out):
            self._out, self._at = b"", 0
            self._more()
        if count < 0 or count >= len(self._out) - self._at:
            data = self._out[self._at:] if self._at else self._out
        else:
            data = self._out[self._at:self._at + count]
        self._at += len(data)
        return data


class _Forward(object):
    """A forward-only seekable view of a stream, so that tarfile reads the
    headers in place ("r:" mode) and member data can be taken straight from
    the stream (:class:`_MemberData`)."""

    def __init__(self, source):
        self.source = source
        self.pos = 0

    def tell(self):
        return self.pos

    def seek(self, pos, whence=0):
        if whence != 0 or pos < self.pos:
            raise _invalid("the tar archive refers back to offset %d (now at %d)"
                           % (pos, self.pos))
        while self.pos < pos:
            if not self.read_some(min(READ_SIZE, pos - self.pos)):
                break
        return self.pos

    def read_some(self, count):
        """Up to ``count`` bytes, whatever the source has at hand."""
        data = self.source.read(count)
        self.pos += len(data)
        return data

    def read(self, count=-1):
        if count is None or count < 0:
            count = READ_SIZE
        data = self.source.read(count)
        if len(data) < count and data:
            parts = [data]
            got = len(data)
            while got < count:
                more = self.source.read(count - got)
                if not more:
                    break
                parts.append(more)
                got += len(more)
            data = b"".join(parts)
        self.pos += len(data)
        return data


class _MemberData(object):
    """A regular tar member's data read straight from the archive stream,
    not through tarfile's file object and its buffer copies; reads may be
    short, the end of the stream before the member's is corruption."""

    def __init__(self, archive, member):
        if archive.tell() != member.offset_data:
            archive.seek(member.offset_data)
        self.archive = archive
        self.left = member.size

    def read(self, count):
        if self.left <= 0:
            return b""
        data = self.archive.read_some(min(count, self.left))
        if not data:
            raise tarfile.ReadError("unexpected end of data")
        self.left -= len(data)
        return data


class _Plain(object):
    """An uncompressed stream with the same limit."""

    def __init__(self, source, limit, head=b""):
        self.source = source
        self.limit = limit
        self.produced = 0
        self._head = head

    def read(self, count=-1):
        if self._head:
            data = self._head if count < 0 else self._head[:count]
            self._head = self._head[len(data):]
        else:  # a view, valid until the next read (see _HashingReader)
            read = getattr(self.source, "read_view", self.source.read)
            data = read(READ_SIZE if count < 0 else count)
        self.produced += len(data)
        if self.produced > self.limit:
            raise _invalid("the image is larger than %d bytes, more than its disks can "
                           "hold" % self.limit)
        return data


def _unpacked(source, limit):
    head = source.read(2)
    if head == b"\x1f\x8b":
        return _Gunzip(source, limit, head)
    return _Plain(source, limit, head)


# --------------------------------------------------------------------------
# Members


def _member_index(name, seen_legacy):
    if name.startswith("./"):
        name = name[2:]
    match = NUMBERED.match(name)
    if match:
        return int(match.group(1)), name
    if name in LEGACY:
        seen_legacy.append(name)
        return None, name
    raise _invalid("member %r is not an image disk: only 0.vhd ... N.vhd (or the legacy "
                   "snap.vhd, image.vhd, base.vhd) are accepted" % name)


def _check_member_type(member):
    if member.isreg():
        return
    kinds = [("issym", "a symbolic link"), ("islnk", "a hard link"),
             ("ischr", "a character device"), ("isblk", "a block device"),
             ("isfifo", "a FIFO"), ("isdir", "a directory")]
    what = next((text for attr, text in kinds if getattr(member, attr)()),
                "an entry of type %r" % member.type)
    raise _invalid("member %r is %s; only regular files are accepted" % (member.name, what))


def _vhd_limit(head, name, declared, max_virtual_size):
    """The largest size a VHD whose first bytes are ``head`` may have;
    refuses early what the footer and header already show is wrong."""
    footer = xhost_vhd.Footer.unpack(head[:xhost_vhd.FOOTER_SIZE])
    if footer.cookie != xhost_vhd.FOOTER_COOKIE:
        # A fixed VHD: raw data then the footer (checked once written).
        if declared is None:
            raise _invalid("%s does not start with a VHD footer copy and its length is "
                           "unknown; only dynamic VHDs can be streamed bare" % name)
        if declared - xhost_vhd.FOOTER_SIZE > max_virtual_size:
            raise _invalid("%s: virtual size %d is larger than the %d bytes allowed"
                           % (name, declared - xhost_vhd.FOOTER_SIZE, max_virtual_size))
        return declared
    if not footer.checksum_ok():
        raise _invalid("%s: the VHD footer checksum is wrong (0x%08x, computed 0x%08x)"
                       % (name, footer.checksum, footer.compute_checksum()))
    if footer.current_size > max_virtual_size:
        raise _invalid("%s: virtual size %d is larger than the %d bytes allowed"
                       % (name, footer.current_size, max_virtual_size))
    if footer.disk_type == xhost_vhd.DISK_FIXED:
        raise _invalid("%s: a fixed VHD cannot start with a footer copy" % name)
    offset = footer.data_offset
    if offset % 512 or offset > MAX_HEADER_OFFSET or offset < xhost_vhd.FOOTER_SIZE:
        raise _invalid("%s: the VHD header offset %d is implausible" % (name, offset))
    if len(head) < offset + xhost_vhd.HEADER_SIZE:
        raise _invalid("%s is too short for a VHD" % name)
    header = xhost_vhd.DynamicHeader.unpack(head[offset:offset + xhost_vhd.HEADER_SIZE])
    if header.cookie != xhost_vhd.HEADER_COOKIE or not header.checksum_ok():
        raise _invalid("%s: the VHD header cookie or checksum is wrong" % name)
    block = header.block_size
    if block < 4096 or block > 256 * 1024 * 1024 or block & (block - 1):
        raise _invalid("%s: invalid VHD block size %d" % (name, block))
    entries = -(-footer.current_size // block)
    if header.max_table_entries < entries or header.max_table_entries > 2 * entries + 1024:
        raise _invalid("%s: the VHD block table has %d entries for %d blocks"
                       % (name, header.max_table_entries, entries))
    bitmap = -(-(block // 512) // 8)
    bitmap = -(-bitmap // 512) * 512
    locators = sum(loc.space for loc in header.locators)
    bat = -(-header.max_table_entries * 4 // 512) * 512
    limit = (header.table_offset + bat + locators + entries * (bitmap + block) +
             xhost_vhd.FOOTER_SIZE + MAX_HEADER_OFFSET)
    if declared is not None and declared > limit:
        raise _invalid("%s is %d bytes, more than a VHD of %d bytes with %d-byte blocks "
                       "can be (%d); the archive lies about its size or is a bomb"
                       % (name, declared, footer.current_size, block, limit))
    return limit


def _write_member(reader, path, name, declared, max_virtual_size):
    """Copy one member into a new staging file (holes for zero chunks)."""
    head = b""
    want = MAX_HEADER_OFFSET + xhost_vhd.HEADER_SIZE
    while len(head) < want:
        piece = reader.read(want - len(head))
        if not piece:
            break
        head += piece
    if len(head) < xhost_vhd.FOOTER_SIZE:
        raise _invalid("%s is %d bytes long, too short for a VHD" % (name, len(head)))
    limit = _vhd_limit(head, name, declared, max_virtual_size)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0),
                 0o600)
    written = 0
    try:
        data = head
        while data:
            written += len(data)
            if written > limit:
                raise _invalid("%s is larger than a VHD of its geometry can be (%d bytes)"
                               % (name, limit))
            if len(data) >= HOLE_MIN and _is_zero(data):
                os.lseek(fd, len(data), os.SEEK_CUR)
            else:
                _write_all(fd, data)
            data = reader.read(READ_SIZE)
        os.ftruncate(fd, written)
    finally:
        os.close(fd)
    if declared is not None and written != declared:
        raise _invalid("%s: the archive announced %d bytes but held %d"
                       % (name, declared, written))
    return written


_ZEROS = bytes(READ_SIZE)


def _is_zero(data):
    """Whether ``data`` (bytes or a memoryview) is all zeros, at memcmp
    speed (comparing memoryviews with == goes element by element)."""
    if len(data) <= READ_SIZE:
        return _ZEROS.startswith(data)
    return not bytes(data).strip(b"\x00")


def _write_all(fd, data):
    view = memoryview(data)
    while view:
        done = os.write(fd, view)
        view = view[done:]


# --------------------------------------------------------------------------
# The chain


def _open(path, name):
    try:
        return xhost_vhd.open_vhd(path)
    except xhost_vhd.VHDError as exc:
        raise _invalid("%s: %s" % (name, exc.problem))


def _set_footer_uuid(path, new_uuid):
    # xhost_vhd has no public "set uuid" (vhd-util has none either); the
    # footer (and its copy) are rewritten the way set_hidden() does it.
    with xhost_vhd.VHDFile(path, writable=True) as vhd:
        vhd.footer.uuid_bytes = new_uuid.bytes
        vhd._write_footers()


def _validate_chain(files, max_virtual_size):
    """``files`` = [(name, path)] leaf first; check the links by UUID."""
    infos = []
    for name, path in files:
        with _open(path, name) as vhd:
            infos.append({"name": name, "uuid": vhd.uuid, "parent": vhd.parent_uuid,
                          "type": vhd.disk_type, "size": vhd.virtual_size,
                          "hidden": vhd.hidden})
    if infos[0]["hidden"]:
        raise _invalid("%s, the leaf of the image, is marked hidden (a base copy, not a "
                       "disk)" % infos[0]["name"])
    seen = {}
    for info in infos:
        if info["size"] > max_virtual_size:
            raise _invalid("%s: virtual size %d is larger than the %d bytes allowed"
                           % (info["name"], info["size"], max_virtual_size))
        if info["uuid"] in seen:
            raise _invalid("%s and %s have the same UUID %s"
                           % (seen[info["uuid"]], info["name"], info["uuid"]))
        seen[info["uuid"]] = info["name"]
    position = dict((info["uuid"], index) for index, info in enumerate(infos))
    for index, info in enumerate(infos):
        last = index == len(infos) - 1
        if info["type"] != xhost_vhd.DISK_DIFFERENCING:
            if not last:
                raise _invalid("%s is a %s disk, so it has no parent, but %s follows it in "
                               "the chain" % (info["name"],
                                              xhost_vhd.DISK_TYPE_NAMES.get(info["type"]),
                                              infos[index + 1]["name"]))
            continue
        parent = info["parent"]
        if parent in position and position[parent] <= index:
            raise _invalid("%s names %s as its parent: the chain loops"
                           % (info["name"], infos[position[parent]]["name"]))
        if parent not in position:
            raise _invalid("%s is a differencing disk whose parent UUID %s matches no disk "
                           "of the image" % (info["name"], parent))
        if position[parent] != index + 1:
            raise _invalid("%s's parent is %s, but %s follows it in the chain"
                           % (info["name"], infos[position[parent]]["name"],
                              infos[index + 1]["name"]))
        if infos[index + 1]["size"] > info["size"]:
            raise _invalid("%s is smaller than its parent %s"
                           % (info["name"], infos[index + 1]["name"]))
    return infos


def _ordered(members, legacy):
    """[(name, path)] leaf first, from the received members."""
    if legacy and len(members) != len(legacy):
        raise _invalid("the image mixes legacy names (%s) with numbered ones"
                       % ", ".join(legacy))
    if legacy:
        order = [n for n in LEGACY if n in members]
        return [(n, members[n]) for n in order]
    names = sorted(members, key=lambda n: int(n.split(".")[0]))
    expected = ["%d.vhd" % i for i in range(len(names))]
    if names != expected:
        raise _invalid("the image's disks must be numbered 0.vhd ... %d.vhd without gaps; "
                       "it holds %s" % (len(names) - 1, ", ".join(names)))
    return [(n, members[n]) for n in names]


def _import_chain(files, staging, sr_dir, new_uuids, max_virtual_size):
    """Validate, renumber and move the chain into the SR; return the UUIDs
    leaf first."""
    _validate_chain(files, max_virtual_size)
    renamed = []
    for (name, path), new in zip(files, new_uuids):
        target = os.path.join(staging, "%s.vhd" % new)
        _set_footer_uuid(path, new)
        os.rename(path, target)
        renamed.append((name, target))
    for index in range(len(renamed) - 2, -1, -1):
        name, child = renamed[index]
        try:
            xhost_vhd.set_parent(child, renamed[index + 1][1])
        except xhost_vhd.VHDError as exc:
            raise _invalid("%s: %s" % (name, exc.problem))
    for _name, path in renamed[1:]:
        xhost_vhd.set_hidden(path, True)
    try:
        xhost_vhd.check(renamed[0][1], parents=True, search_dirs=[staging],
                        ignore_timestamps=True)
    except xhost_vhd.VHDError as exc:
        bad = exc.path
        for name, path in renamed:
            if os.path.basename(path) == os.path.basename(exc.path):
                bad = name
        raise _invalid("%s: %s" % (bad, exc.problem))
    moved = []
    try:
        for _name, path in reversed(renamed):
            target = os.path.join(sr_dir, os.path.basename(path))
            if os.path.lexists(target):
                raise _invalid("%s already exists in the SR" % os.path.basename(path))
            os.rename(path, target)
            moved.append(target)
    except BaseException:
        for path in moved:
            try:
                os.unlink(path)
            except OSError:
                pass
        raise
    return [str(u) for u in new_uuids[:len(files)]]


def _sr_dir(sr_path):
    if not sr_path.startswith("/") or "/../" in sr_path + "/" or "\x00" in sr_path:
        raise _fail("XHOST_IMAGE_SR", "SR path %r is not an absolute path" % sr_path)
    real = xhost_dom0lib.host_path(sr_path)
    if not os.path.isdir(real):
        raise _fail("XHOST_IMAGE_SR", "%s is not a directory: the SR is not a mounted "
                    "file-based SR (ext, nfs)" % sr_path)
    return real


def _new_uuids(uuids, count):
    result = []
    for text in uuids or []:
        try:
            result.append(uuidlib.UUID(str(text)))
        except ValueError:
            raise xhost_dom0lib.Dom0Error("XHOST_DOM0_BAD_ARGS", "download_vhd",
                                          "bad uuid %r" % text)
    if len(result) < count:
        raise _invalid("the image holds %d disks but only %d UUIDs were given (the "
                       "chain is too deep)" % (count, len(result)))
    return result


def download_vhd(session, url, sr_path, uuids, headers=None, container="tgz",
                 checksum=None, os_hash_algo=None, os_hash_value=None, size=None,
                 max_virtual_size=xhost_vhd.MAX_VIRTUAL_SIZE, max_members=None,
                 ca_pem=None, verify_tls=True, io_timeout=DEFAULT_TIMEOUT):
    """Fetch an image into the SR; return ``{"uuids": [leaf, ..., base],
    "bytes": n, "virtual_size": v}``."""
    sr_dir = _sr_dir(sr_path)
    timeout = int(io_timeout)
    max_members = int(max_members or min(len(uuids or []), xhost_vhd.MAX_CHAIN_DEPTH))
    max_virtual_size = min(int(max_virtual_size), xhost_vhd.MAX_VIRTUAL_SIZE)
    if os_hash_algo and os_hash_algo not in hashlib.algorithms_available:
        raise _invalid("unknown hash algorithm %r" % os_hash_algo)
    if not uuids:
        raise _invalid("no UUIDs were given for the image's disks")
    lock = _download_lock(sr_dir, uuids[0])
    staging = tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=sr_dir)
    conn = None
    try:
        conn, response = _get(url, headers, ca_pem, verify_tls, timeout)
        length = response.getheader("Content-Length")
        expected = int(size) if size is not None else None
        if length and length.isdigit() and expected is not None and int(length) != expected:
            raise _invalid("the server announced %s bytes, the image has %d"
                           % (length, expected))
        # The strongest hash the image has is verified, as glanceclient does:
        # md5 only for images without an os_hash_value. Hashing every byte
        # twice would cost a core of its own and prove nothing more.
        hashed = _HashingReader(response, url,
                                os_hash_algo if os_hash_value and os_hash_algo else None,
                                expected, md5=bool(checksum))
        # Each disk is at most its virtual size plus its metadata.
        per_disk = max_virtual_size + max_virtual_size // 256 + 64 * 1024 * 1024
        limit = max_members * per_disk + TRAILING_LIMIT
        try:
            files = _receive(hashed, staging, container, max_members, max_virtual_size,
                             limit, expected if length is None else int(length))
            while hashed.read_view(READ_SIZE):
                pass
        finally:
            hashed.close()
        _verify(hashed, expected, checksum, os_hash_algo, os_hash_value)
        new = _new_uuids(uuids, len(files))
        result = _import_chain(files, staging, sr_dir, new, max_virtual_size)
        with xhost_vhd.open_vhd(os.path.join(sr_dir, "%s.vhd" % result[0])) as leaf:
            virtual = leaf.virtual_size
        return {"uuids": result, "bytes": hashed.count, "virtual_size": virtual}
    except socket.timeout:
        raise _retry("the download from %s stalled for %ss" % (_public(url), timeout))
    finally:
        if conn is not None:
            conn.close()
        shutil.rmtree(staging, ignore_errors=True)
        _release_download_lock(lock)


def _lock_path(sr_dir, leaf_uuid):
    name = "%s.vhd" % leaf_uuid
    if not UUID_NAME.match(name):
        raise xhost_dom0lib.Dom0Error("XHOST_DOM0_BAD_ARGS", "download_vhd",
                                      "bad uuid %r" % leaf_uuid)
    return os.path.join(sr_dir, ".xhost-download-%s.lock" % leaf_uuid)


def _download_lock(sr_dir, leaf_uuid):
    """Held while a download runs: ``remove_vhds`` of its UUIDs waits for it,
    so the undo of a download whose caller went away (killed) cannot run
    before the download has put its files in place."""
    path = _lock_path(sr_dir, leaf_uuid)
    handle = open(path, "a")
    fcntl.flock(handle, fcntl.LOCK_EX)
    return path, handle


def _release_download_lock(lock):
    path, handle = lock
    try:
        os.unlink(path)
    except OSError:
        pass
    handle.close()


def _receive(hashed, staging, container, max_members, max_virtual_size, limit, length):
    if container == "bare":
        path = os.path.join(staging, "member-0")
        reader = _Plain(hashed, limit)
        _write_member(reader, path, "the image", length, max_virtual_size)
        return [("the image", path)]
    stream = _unpacked(hashed, limit)
    members = {}
    legacy = []
    try:
        archive = _Forward(stream)
        tar = tarfile.open(fileobj=archive, mode="r:")
    except tarfile.TarError as exc:
        raise _invalid("the image is not a tar archive: %s" % exc)
    try:
        while True:
            try:
                member = tar.next()
            except tarfile.TarError as exc:
                raise _invalid("the tar archive is corrupt: %s" % exc)
            if member is None:
                break
            if member.isdir() and member.name in (".", "./"):
                continue
            _check_member_type(member)
            if member.name.startswith("/") or ".." in member.name.split("/"):
                raise _invalid("member %r has an absolute or escaping path" % member.name)
            index, name = _member_index(member.name, legacy)
            if name in members:
                raise _invalid("member %r appears twice" % name)
            if len(members) >= max_members:
                raise _invalid("the image holds more than %d disks" % max_members)
            path = os.path.join(staging, "member-%d" % len(members))
            try:
                if member.sparse is None:
                    data = _MemberData(archive, member)
                else:  # a GNU sparse member: tarfile puts its holes back
                    data = tar.extractfile(member)
                _write_member(data, path, name, member.size, max_virtual_size)
            except tarfile.TarError as exc:
                raise _invalid("%s: the tar archive is corrupt: %s" % (name, exc))
            members[name] = path
    finally:
        try:
            tar.close()
        except (tarfile.TarError, OSError):
            pass
    if not members:
        raise _invalid("the archive holds no disk (0.vhd)")
    trailing = 0
    while True:
        data = stream.read(READ_SIZE)
        if not data:
            break
        trailing += len(data)
        if trailing > TRAILING_LIMIT or data.strip(b"\x00"):
            raise _invalid("data follows the end of the tar archive (a hidden member or a "
                           "bomb)")
    return _ordered(members, legacy)


def _verify(hashed, expected, checksum, algo, value):
    if expected is not None and hashed.count != expected:
        raise _retry("received %d bytes, the image has %d" % (hashed.count, expected))
    if value and algo:
        if hashed.digest.hexdigest() != value:
            raise _invalid("checksum mismatch: the data's %s does not match the image's "
                           "os_hash_value" % algo)
    elif checksum and hashed.digest.hexdigest() != checksum:
        raise _invalid("checksum mismatch: the data received has md5 %s, the image's "
                       "checksum is %s" % (hashed.digest.hexdigest(), checksum))


# --------------------------------------------------------------------------
# Upload


def _chain_files(sr_dir, leaf_uuid):
    name = "%s.vhd" % leaf_uuid
    if not UUID_NAME.match(name):
        raise xhost_dom0lib.Dom0Error("XHOST_DOM0_BAD_ARGS", "upload_vhd",
                                      "bad uuid %r" % leaf_uuid)
    path = os.path.join(sr_dir, name)
    if not os.path.isfile(path):
        raise _fail("XHOST_IMAGE_SR", "no file %s in the SR" % name)
    try:
        with xhost_vhd.open_chain(path, search_dirs=[sr_dir]) as leaf:
            return [os.path.realpath(vhd.path) for vhd in leaf.chain()]
    except xhost_vhd.VHDError as exc:
        raise _fail("XHOST_IMAGE_SR", "the disk's VHD chain is broken: %s" % exc)


class _ChunkedSender(object):
    """File-like sink: gzip (level) then HTTP chunked framing on a socket."""

    def __init__(self, conn, level):
        self.conn = conn
        self.z = zlib.compressobj(level, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
        self.md5 = hashlib.md5()
        self.sent = 0
        self._buffer = []
        self._buffered = 0

    def _emit(self, data):
        if not data:
            return
        self.md5.update(data)
        self.sent += len(data)
        self._buffer.append(data)
        self._buffered += len(data)
        if self._buffered >= CHUNK:
            self._flush()

    def _flush(self):
        if self._buffered:
            data = b"".join(self._buffer)
            self.conn.send(b"%x\r\n" % len(data) + data + b"\r\n")
        self._buffer = []
        self._buffered = 0

    def write(self, data):
        self._emit(self.z.compress(data))
        return len(data)

    def close(self):
        self._emit(self.z.flush())
        self._flush()
        self.conn.send(b"0\r\n\r\n")


def upload_vhd(session, url, sr_path, leaf_uuid, headers=None, method="PUT",
               compression_level=6, ca_pem=None, verify_tls=True, io_timeout=DEFAULT_TIMEOUT):
    """Stream the chain of ``leaf_uuid`` as a gzipped tarball to ``url``;
    return ``{"bytes": compressed bytes sent, "checksum": their md5,
    "files": n}``."""
    sr_dir = _sr_dir(sr_path)
    timeout = int(io_timeout)
    level = int(compression_level or 6)
    if not 1 <= level <= 9:
        raise xhost_dom0lib.Dom0Error("XHOST_DOM0_BAD_ARGS", "upload_vhd",
                                      "compression_level must be 1-9")
    staging = tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=sr_dir)
    conn = None
    try:
        # Hard links keep the files as they are if the SR's garbage collector
        # renames or deletes them meanwhile (Nova did the same).
        members = []
        for index, path in enumerate(_chain_files(sr_dir, leaf_uuid)):
            link = os.path.join(staging, "%d.vhd" % index)
            try:
                os.link(path, link)
            except OSError as exc:
                raise _fail("XHOST_IMAGE_SR", "cannot hard-link %s into the staging "
                            "directory: %s" % (os.path.basename(path), exc.strerror))
            members.append(link)
        conn, path = _connection(url, ca_pem, verify_tls, timeout)
        try:
            conn.putrequest(method, path, skip_accept_encoding=True)
            for key, value in (headers or {}).items():
                conn.putheader(key, value)
            conn.putheader("Content-Type", "application/octet-stream")
            conn.putheader("Transfer-Encoding", "chunked")
            conn.endheaders()
            sender = _ChunkedSender(conn, level)
            tar = tarfile.open(fileobj=sender, mode="w|", bufsize=CHUNK,
                               format=tarfile.PAX_FORMAT)
            for member in members:
                info = tar.gettarinfo(member, arcname=os.path.basename(member))
                info.uid = info.gid = 0
                info.uname = info.gname = "root"
                info.mode = 0o644
                with open(member, "rb") as data:
                    tar.addfile(info, data)
            tar.close()
            sender.close()
            response = conn.getresponse()
            body = response.read(4096)
        except socket.timeout:
            raise _retry("the upload to %s stalled for %ss" % (_public(url), timeout))
        except ssl.SSLError as exc:
            raise _fail("XHOST_IMAGE_HTTP", "0", "TLS failure talking to %s: %s"
                        % (_public(url), exc))
        except (OSError, http.client.HTTPException) as exc:
            raise _retry("the upload to %s failed: %s: %s" % (_public(url),
                                                               type(exc).__name__, exc))
        if not 200 <= response.status < 300:
            raise _refused(response.status, response.reason, url, body)
        return {"bytes": sender.sent, "checksum": sender.md5.hexdigest(),
                "files": len(members)}
    finally:
        if conn is not None:
            conn.close()
        shutil.rmtree(staging, ignore_errors=True)


def remove_vhds(session, sr_path, uuids):
    """Delete ``<uuid>.vhd`` files of the SR (missing ones are fine), once
    a download of them still running has ended."""
    sr_dir = _sr_dir(sr_path)
    removed = []
    if uuids:
        _release_download_lock(_download_lock(sr_dir, uuids[0]))
    for text in uuids:
        name = "%s.vhd" % text
        if not UUID_NAME.match(name):
            raise xhost_dom0lib.Dom0Error("XHOST_DOM0_BAD_ARGS", "remove_vhds",
                                          "bad uuid %r" % text)
        path = os.path.join(sr_dir, name)
        try:
            if stat.S_ISREG(os.lstat(path).st_mode):
                os.unlink(path)
                removed.append(text)
        except OSError:
            pass
    return {"removed": removed}


if __name__ == "__main__":
    xhost_dom0lib.dispatch({"download_vhd": download_vhd, "upload_vhd": upload_vhd,
                            "remove_vhds": remove_vhds})
