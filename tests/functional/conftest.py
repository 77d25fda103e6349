"""A tiny XML-RPC server speaking XAPI's envelope, for session-layer tests
that need to misbehave in ways a real host rarely does (slow answers,
expiring every session, a redirecting pool member)."""
from __future__ import annotations

import datetime
import ipaddress
import socketserver
import ssl
import threading
import time
import uuid
import xmlrpc.client
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest


class MiniXapi:
    def __init__(self, password="secret", master=None):
        self.password = password
        self.master = master  # "host:port" -> answer HOST_IS_SLAVE
        self.sessions: dict[str, str] = {}
        self.originators: list[str] = []
        self.logins = 0
        self.logouts = 0
        self.calls: list[str] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.lock = threading.Lock()
        self.expire_next = 0

    def ok(self, value):
        return {"Status": "Success", "Value": value}

    def fail(self, *details):
        return {"Status": "Failure", "ErrorDescription": list(details)}

    def dispatch(self, method, params):
        with self.lock:
            self.calls.append(method)
        if method == "session.login_with_password":
            if self.master:
                return self.fail("HOST_IS_SLAVE", self.master)
            user, pw = params[0], params[1]
            if pw != self.password:
                return self.fail("SESSION_AUTHENTICATION_FAILED", user, "Authentication failure")
            ref = f"OpaqueRef:{uuid.uuid4()}"
            with self.lock:
                self.sessions[ref] = user
                self.logins += 1
                self.originators.append(params[3] if len(params) > 3 else "")
            return self.ok(ref)
        session = params[0] if params else None
        with self.lock:
            if self.expire_next > 0 and session in self.sessions:
                self.expire_next -= 1
                del self.sessions[session]
            valid = session in self.sessions
        if self.master:
            return self.fail("HOST_IS_SLAVE", self.master)
        if not valid:
            return self.fail("SESSION_INVALID", str(session))
        if method == "session.logout":
            with self.lock:
                self.sessions.pop(session, None)
                self.logouts += 1
            return self.ok("")
        if method == "test.sleep":
            with self.lock:
                self.in_flight += 1
                self.max_in_flight = max(self.max_in_flight, self.in_flight)
            try:
                time.sleep(float(params[1]))
            finally:
                with self.lock:
                    self.in_flight -= 1
            return self.ok("")
        if method == "test.echo":
            return self.ok(list(params[1:]))
        if method == "VM.get_all":
            return self.ok(["OpaqueRef:11111111-1111-1111-1111-111111111111"])
        return self.fail("MESSAGE_METHOD_UNKNOWN", method)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        params, method = xmlrpc.client.loads(body, use_builtin_types=True)
        result = self.server.xapi.dispatch(method, params)
        out = xmlrpc.client.dumps((result,), methodresponse=True, allow_none=True).encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/xml")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)


class _Server(socketserver.ThreadingMixIn, HTTPServer):
    daemon_threads = True


@pytest.fixture
def mini_xapi():
    """Start MiniXapi servers: ``start(tls=False, **kwargs) -> (url, state)``."""
    servers = []

    def start(tls: tuple[str, str] | None = None, **kwargs):
        server = _Server(("127.0.0.1", 0), _Handler)
        server.xapi = MiniXapi(**kwargs)
        scheme = "http"
        if tls:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(*tls)
            server.socket = ctx.wrap_socket(server.socket, server_side=True)
            scheme = "https"
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"{scheme}://127.0.0.1:{server.server_address[1]}", server.xapi

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


@pytest.fixture
def self_signed(tmp_path):
    """A self-signed certificate for 127.0.0.1: (cert.pem, key.pem)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return str(cert_path), str(key_path)
