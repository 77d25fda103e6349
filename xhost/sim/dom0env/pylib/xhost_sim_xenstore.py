"""``xenstore-read``, ``-write``, ``-rm``, ``-exists``, ``-list``, ``-ls`` for a
simulated dom0 (Python >= 3.6, stdlib only).

Installed as one program linked under each name (like Xen's
``xenstore_client``, it picks its mode from the name it was called by, or
from its first argument when called as ``xenstore``).  It talks to the
simulator's XenStore over ``$XHOST_SIM_XENSTORED_SOCKET`` and reproduces the
real commands' options, output format (values escaped like ``\\t``,
``\\x1b``; ``xenstore-ls`` indentation, 80-column truncation when not on a
terminal, ``-f`` full paths, ``-p`` permissions), messages and exit codes.
"""
import fcntl
import json
import os
import socket
import struct
import sys
import termios

SOCKET_ENV = "XHOST_SIM_XENSTORED_SOCKET"
#: Set by the simulator when it installs this program.
DEFAULT_SOCKET = None

USAGE = {
    "read": "[-h] [-p] [-s] key [...]",
    "write": "[-h] [-s] key value [...]",
    "rm": "[-h] [-s] [-t] key [...]",
    "exists": "[-h] [-p] [-s] key [...]",
    "list": "[-h] [-p] [-s] key [...]",
    "ls": "[-h] [-f] [-p] [-s] [path]",
}
LONG_OPTIONS = {"help": "h", "flat": "f", "socket": "s", "prefix": "p", "tidy": "t"}
TAG_LEN = len(' = "..."')


class XsError(Exception):
    def __init__(self, code):
        Exception.__init__(self, code)
        self.code = code


class Exit(Exception):
    def __init__(self, status):
        Exception.__init__(self, status)
        self.status = status


class Program:
    def __init__(self, argv0, mode, out, err):
        self.argv0 = argv0
        self.name = os.path.basename(argv0)
        self.mode = mode
        self.out = out
        self.err = err

    def warnx(self, message):
        self.err.write("%s: %s\n" % (self.name, message))

    def errx(self, message):
        self.warnx(message)
        raise Exit(1)

    def usage(self, with_mode):
        prefix = (self.mode + " ") if with_mode else ""
        self.errx("Usage: %s %s%s" % (self.argv0, prefix, USAGE[self.mode]))


# -- value escaping, as xenstore's sanitise_value / unsanitise_value ------------

def sanitise(data):
    out = []
    for byte in bytearray(data):
        if 0x20 <= byte <= 0x7E and byte != 0x5C:
            out.append(chr(byte))
        elif byte == 0x09:
            out.append("\\t")
        elif byte == 0x0A:
            out.append("\\n")
        elif byte == 0x0D:
            out.append("\\r")
        elif byte == 0x5C:
            out.append("\\\\")
        elif byte < 8:
            out.append("\\%03o" % byte)
        else:
            out.append("\\x%02x" % byte)
    return "".join(out)


def _scan(text, pos, digits, base, limit):
    end = pos
    while end < len(text) and end - pos < limit and text[end] in digits:
        end += 1
    if end == pos:
        return None, pos
    return int(text[pos:end], base), end


def unsanitise(text):
    raw = text.encode("utf-8", "surrogateescape")
    out = bytearray()
    i = 0
    while i < len(raw):
        byte = raw[i]
        i += 1
        if byte != 0x5C:
            out.append(byte)
            continue
        if i >= len(raw):
            # xenstore's unsanitise_value turns a trailing backslash into a NUL.
            out.append(0)
            break
        code = chr(raw[i])
        i += 1
        simple = {"t": 0x09, "n": 0x0A, "r": 0x0D, "\\": 0x5C}
        if code in simple:
            out.append(simple[code])
        elif code == "x":
            value, end = _scan(raw.decode("latin-1"), i, "0123456789abcdefABCDEF", 16, 2)
            out.append(value if value is not None else ord("x"))
            i = end
        elif code in "01234567":
            value, end = _scan(raw.decode("latin-1"), i - 1, "01234567", 8, 3)
            out.append(value & 0xFF)
            i = end
        else:
            out.append(ord(code))
    return bytes(out)


# -- talking to the simulator's xenstored ------------------------------------------

class Store:
    """One connection to the simulated xenstored (HTTP/1.1 over a Unix socket;
    written by hand because importing http.client costs more than the call)."""

    def __init__(self, path, program):
        self.path = path
        self.program = program
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(60)
        try:
            self.sock.connect(path)
        except OSError as exc:
            program.errx("xs_open: %s" % (exc.strerror or exc))
        self.rfile = self.sock.makefile("rb")

    def batch(self, ops, transaction):
        body = json.dumps({"ops": ops, "transaction": transaction}).encode("utf-8")
        head = ("POST /xenstore HTTP/1.1\r\nHost: localhost\r\n"
                "Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body))
        try:
            self.sock.sendall(head.encode("ascii") + body)
            status_line = self.rfile.readline()
            length = 0
            while True:
                line = self.rfile.readline()
                if not line or line in (b"\r\n", b"\n"):
                    break
                name, _, value = line.decode("latin-1").partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value.strip())
            data = self.rfile.read(length)
        except (OSError, ValueError) as exc:
            self.program.errx("xenstored connection: %s" % exc)
        parts = status_line.split()
        if len(parts) < 2 or parts[1] != b"200":
            self.program.errx("xenstored: %s" % data.decode("utf-8", "replace").strip())
        return json.loads(data.decode("utf-8"))

    def one(self, op):
        reply = self.batch([op], False)
        if reply.get("error"):
            raise XsError(reply["error"]["code"])
        return reply["results"][0]


def _decode(value):
    return value.encode("latin-1")


def _strerror(code):
    import errno

    return os.strerror(getattr(errno, code, errno.EINVAL))


# -- the modes --------------------------------------------------------------------

def run_transactional(program, store, args, prefix, tidy):
    """read / write / rm / exists / list: one transaction, like the C client."""
    mode = program.mode
    ops = []
    if mode == "write":
        for i in range(0, len(args), 2):
            ops.append(["write", args[i], unsanitise(args[i + 1]).decode("latin-1")])
    elif mode == "rm":
        ops = [["rm_tidy" if tidy else "rm", key] for key in args]
    elif mode in ("read", "exists"):
        ops = [["read", key] for key in args]
    elif mode == "list":
        ops = [["directory", key] for key in args]
    many = {"read": len(args) > 1, "write": len(args) > 2}.get(mode, True)
    reply = store.batch(ops, many)
    results = reply.get("results", [])
    failed = reply.get("error")
    lines = []
    for key, result in zip(args if mode != "write" else args[::2], results):
        if mode == "read":
            value = sanitise(_decode(result))
            lines.append(("%s: %s\n" % (key, value)) if prefix else value + "\n")
        elif mode == "list":
            for name in result:
                lines.append(("%s/%s\n" % (key, name)) if prefix else name + "\n")
    status = 0
    if failed:
        key = failed.get("path") or ops[failed["index"]][1]
        status = 1
        if mode == "read":
            program.warnx("couldn't read path %s" % key)
        elif mode == "write":
            program.warnx("could not write path %s" % key)
        elif mode == "rm":
            program.warnx("could not remove path %s" % key)
        elif mode == "list":
            program.warnx("could not list path %s" % key)
    # A failed transaction is aborted, but what was read before is printed.
    program.out.write("".join(lines))
    return status


def terminal_width(out):
    try:
        packed = fcntl.ioctl(out.fileno(), termios.TIOCGWINSZ, b"\0" * 8)
    except (OSError, ValueError, AttributeError):
        return None
    return struct.unpack("HHHH", packed)[1]


def run_ls(program, store, args, show_perms, flat):
    max_width, desired_width = 80, 60
    cols = terminal_width(program.out)
    if cols is not None:
        max_width = cols - 2
    if flat:
        max_width, desired_width = (2 ** 31 - 1) // 2, 0
    out = program.out
    for path in args or ["/"]:
        try:
            entries = store.one(["tree", path])
        except XsError as exc:
            program.out.flush()
            program.errx("xs_directory (%s): %s" % (path, _strerror(exc.code)))
        for full, depth, value, perms in entries:
            linewid = 0
            if flat:
                out.write(full)
            else:
                out.write(" " * depth)
                linewid = depth
                name = full.rsplit("/", 1)[1]
                room = max_width - TAG_LEN - linewid
                shown = name[:room] if room >= 0 else name
                out.write(shown)
                linewid += len(shown)
            if value is None:
                out.write(":\n")
            else:
                raw = _decode(value)
                text = sanitise(raw)
                if max_width < linewid + len(raw) + TAG_LEN:
                    room = max_width - TAG_LEN - linewid
                    out.write(' = "%s\\..."' % (text[:room] if room >= 0 else text))
                else:
                    piece = ' = "%s"' % text
                    out.write(piece)
                    linewid += len(piece)
                    if show_perms:
                        out.write(" ")
                        linewid += 1
                        while linewid < min(desired_width, max_width):
                            out.write("." if linewid & 1 else " ")
                            linewid += 1
            if show_perms:
                out.write("  (%s)" % ",".join(perms))
            out.write("\n")
    return 0


def parse_options(program, args):
    """GNU getopt_long: options anywhere, ``--`` ends them, unknown ones are
    reported and ignored (the C client has no default case)."""
    opts, rest = [], []
    i = 0
    while i < len(args):
        arg = args[i]
        i += 1
        if arg == "--":
            rest.extend(args[i:])
            break
        if arg.startswith("--") and len(arg) > 2:
            name = arg[2:]
            matches = [n for n in LONG_OPTIONS if n.startswith(name)]
            if name in LONG_OPTIONS:
                matches = [name]
            if len(matches) == 1:
                opts.append(LONG_OPTIONS[matches[0]])
            else:
                program.err.write("%s: unrecognized option '%s'\n" % (program.name, arg))
        elif arg.startswith("-") and len(arg) > 1:
            for letter in arg[1:]:
                if letter in "hfspt":
                    opts.append(letter)
                else:
                    program.err.write("%s: invalid option -- '%s'\n" % (program.name, letter))
        else:
            rest.append(arg)
    return opts, rest


def main(argv=None, out=None, err=None, socket_path=None):
    argv = list(sys.argv if argv is None else argv)
    out = out or sys.stdout
    err = err or sys.stderr
    command = os.path.basename(argv[0])
    with_mode = not command.startswith("xenstore-")
    try:
        if with_mode:
            if len(argv) < 2:
                Program(argv[0], "read", out, err).errx("Usage: %s <mode> [-h] [...]" % argv[0])
            mode, args = argv[1], argv[2:]
        else:
            mode, args = command[len("xenstore-"):], argv[1:]
        program = Program(argv[0], mode, out, err)
        if mode not in USAGE:
            program.errx("unknown mode %s\n" % mode)
        opts, args = parse_options(program, args)
        prefix = tidy = flat = False
        for opt in opts:
            if opt == "h":
                program.usage(with_mode)
            elif opt == "f":
                if mode != "ls":
                    program.usage(with_mode)
                flat = True
            elif opt == "p":
                if mode not in ("read", "list", "ls"):
                    program.usage(with_mode)
                prefix = True
            elif opt == "t":
                if mode != "rm":
                    program.usage(with_mode)
                tidy = True
        if mode == "write" and len(args) % 2 == 1:
            program.usage(with_mode)
        if mode != "ls" and not args:
            program.usage(with_mode)
        path = (socket_path or os.environ.get(SOCKET_ENV) or DEFAULT_SOCKET
                or os.path.join(os.environ.get("XHOST_DOM0_ROOT", "/"),
                                "var/run/xenstored/socket"))
        store = Store(path, program)
        if mode == "ls":
            return run_ls(program, store, args, prefix, flat)
        return run_transactional(program, store, args, prefix, tidy)
    except Exit as exc:
        out.flush()
        return exc.status
    finally:
        out.flush()


if __name__ == "__main__":
    sys.exit(main())
