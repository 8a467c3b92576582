"""Loopback test lab for tlsrelay: a test CA, Unbound, receiving MTAs and the relay.

Every server listens on 127.0.0.0/8 only. Every process the lab starts is
stopped by its PID (SIGTERM, then SIGKILL) through the test's cleanups, also
when the test fails. Set TLSRELAY_E2E_KEEP=1 to keep the lab directories
(configs, certificates, logs, maildirs) after the run.

Run from the repository root:
    TLSRELAY_BIN=build/tlsrelay /usr/bin/python3 -m unittest discover -v -s tests/e2e -p "test_*.py"
"""

import base64
import json
import os
import random
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import unittest
from pathlib import Path

E2E_DIR = Path(__file__).resolve().parent
RECEIVER_SCRIPT = E2E_DIR / "receiver.py"

# Debian's python3-aiosmtpd is importable only by Debian's interpreter, and
# the python3 first on PATH may be another one (pyenv, venv).
SYSTEM_PYTHON = "/usr/bin/python3"

STOP_TIMEOUT = 10.0
START_TIMEOUT = 20.0
COMMAND_TIMEOUT = 120.0
POLL_INTERVAL = 0.05

KEEP_LAB = os.environ.get("TLSRELAY_E2E_KEEP", "") not in ("", "0")


# ---------------------------------------------------------------------------
# Small helpers


def free_port(*hosts, udp=False):
    """Return a TCP port that is free on every given address (UDP too if udp).

    NOTE: another process may take the port between this check and the
    server's bind. The lab accepts that race on a test machine.
    """
    hosts = hosts or ("127.0.0.1",)
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.bind((hosts[0], 0))
            port = probe.getsockname()[1]
        if all(_port_is_free(host, port, udp) for host in hosts):
            return port
    raise RuntimeError(f"no free port found on {hosts} after 100 attempts")


def _port_is_free(host, port, udp):
    kinds = [socket.SOCK_STREAM] + ([socket.SOCK_DGRAM] if udp else [])
    for kind in kinds:
        with socket.socket(socket.AF_INET, kind) as probe:
            try:
                probe.bind((host, port))
            except OSError:
                return False
    return True



def delivery_pattern(recipient, status=r"\w+"):
    """Return a regex for a delivery log line of recipient (with the given
    status), with named groups queue_id, relay, delay, tls, dsn, status and
    reason."""
    return (
        r"(?:^|\s)(?P<queue_id>[^\s:]+): to=<" + re.escape(recipient) + r">, "
        r"relay=(?P<relay>[^,]+), delay=(?P<delay>\d+(?:\.\d+)?), tls=(?P<tls>\w+), "
        r"dsn=(?P<dsn>\d\.\d{1,3}\.\d{1,3}), status=(?P<status>" + status + r") \((?P<reason>.*)\)\s*$"
    )

def wait_until(condition, timeout, interval=POLL_INTERVAL):
    """Call condition until it returns a true value or timeout seconds pass.

    Returns the last value condition returned (false on timeout).
    """
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value or time.monotonic() >= deadline:
            return value
        time.sleep(interval)


def tail(path, lines=40):
    """Return the last lines of a text file, or a note that it is missing."""
    try:
        text = Path(path).read_text(errors="replace")
    except FileNotFoundError:
        return f"({path} does not exist)"
    return "\n".join(text.splitlines()[-lines:])


def run_command(args, timeout=COMMAND_TIMEOUT, **kwargs):
    """Run a command to completion and return the CompletedProcess (text mode)."""
    return subprocess.run(
        [str(arg) for arg in args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        errors="replace",
        timeout=timeout,
        check=False,
        **kwargs,
    )


def toml_string(value):
    """Quote a value as a TOML basic string (JSON escapes are valid TOML)."""
    return json.dumps(str(value), ensure_ascii=False)


def toml_string_array(values):
    return "[" + ", ".join(toml_string(value) for value in values) + "]"


# ---------------------------------------------------------------------------
# Processes


class ManagedProcess:
    """A child process whose stdout and stderr go to files in the lab."""

    def __init__(self, name, args, directory, env=None):
        self.name = name
        self.args = [str(arg) for arg in args]
        self.stdout_path = Path(directory) / f"{name}.stdout"
        self.stderr_path = Path(directory) / f"{name}.stderr"
        with open(self.stdout_path, "wb") as stdout, open(self.stderr_path, "wb") as stderr:
            self.popen = subprocess.Popen(
                self.args,
                stdin=subprocess.DEVNULL,
                stdout=stdout,
                stderr=stderr,
                cwd=directory,
                env=env,
                start_new_session=True,
            )
        self.pid = self.popen.pid

    def running(self):
        return self.popen.poll() is None

    def describe_exit(self):
        """Return a message with the exit status and the end of both outputs."""
        return (
            f"{self.name} (pid {self.pid}, command {' '.join(self.args)}) "
            f"exited with status {self.popen.returncode}.\n"
            f"--- stderr ({self.stderr_path}):\n{tail(self.stderr_path)}\n"
            f"--- stdout ({self.stdout_path}):\n{tail(self.stdout_path)}"
        )

    def stop(self):
        """Send SIGTERM to the PID, then SIGKILL if it is still running after STOP_TIMEOUT."""
        if self.popen.poll() is not None:
            return
        try:
            os.kill(self.pid, signal.SIGTERM)
            self.popen.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            print(
                f"lab: {self.name} (pid {self.pid}) ignored SIGTERM for {STOP_TIMEOUT} s, sending SIGKILL",
                file=sys.stderr,
            )
            os.kill(self.pid, signal.SIGKILL)
            self.popen.wait(timeout=STOP_TIMEOUT)
        except ProcessLookupError:
            self.popen.wait(timeout=STOP_TIMEOUT)


# ---------------------------------------------------------------------------
# Certificates


class CertificateAuthority:
    """A test CA in a directory, operated with the openssl CLI (`openssl ca`)."""

    def __init__(self, directory, name="tlsrelay e2e test CA"):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.cert_path = self.directory / "ca.pem"
        self.key_path = self.directory / "ca.key"
        self.config_path = self.directory / "ca.cnf"
        (self.directory / "issued").mkdir(exist_ok=True)
        (self.directory / "index.txt").write_text("")
        (self.directory / "serial").write_text("1000\n")
        self.config_path.write_text(self._config())
        self._openssl(
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-sha256",
            "-days", "30",
            "-subj", f"/CN={name}",
            "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign",
            "-addext", "subjectKeyIdentifier=hash",
            "-keyout", self.key_path, "-out", self.cert_path,
        )

    def _config(self):
        return (
            "[ca]\n"
            "default_ca = test_ca\n"
            "[test_ca]\n"
            f"dir = {self.directory}\n"
            "database = $dir/index.txt\n"
            "serial = $dir/serial\n"
            "new_certs_dir = $dir/issued\n"
            "certificate = $dir/ca.pem\n"
            "private_key = $dir/ca.key\n"
            "default_md = sha256\n"
            "default_days = 30\n"
            "policy = policy_any\n"
            "unique_subject = no\n"
            "copy_extensions = none\n"
            "[policy_any]\n"
            "commonName = supplied\n"
        )

    def _openssl(self, *args):
        result = run_command(["openssl", *args], cwd=self.directory)
        if result.returncode != 0:
            raise RuntimeError(
                f"openssl {' '.join(str(arg) for arg in args)} failed with status "
                f"{result.returncode}:\n{result.stderr}"
            )
        return result

    def issue(self, common_name, dns_names=None, expired=False, file_stem=None):
        """Issue a server certificate and return (cert_path, key_path).

        dns_names become the subjectAltName (default: [common_name]). With
        expired=True the validity period lies in 2020, which `openssl ca`
        allows through -startdate/-enddate.
        """
        dns_names = dns_names or [common_name]
        stem = file_stem or common_name + ("-expired" if expired else "")
        key_path = self.directory / f"{stem}.key"
        csr_path = self.directory / f"{stem}.csr"
        cert_path = self.directory / f"{stem}.pem"
        ext_path = self.directory / f"{stem}.ext"
        ext_path.write_text(
            "basicConstraints = critical,CA:FALSE\n"
            "keyUsage = critical,digitalSignature,keyEncipherment\n"
            "extendedKeyUsage = serverAuth\n"
            "subjectKeyIdentifier = hash\n"
            "authorityKeyIdentifier = keyid\n"
            "subjectAltName = " + ",".join(f"DNS:{name}" for name in dns_names) + "\n"
        )
        self._openssl(
            "req", "-new", "-newkey", "rsa:2048", "-nodes",
            "-subj", f"/CN={common_name}",
            "-keyout", key_path, "-out", csr_path,
        )
        validity = (
            ["-startdate", "20200101000000Z", "-enddate", "20200201000000Z"]
            if expired
            else ["-days", "30"]
        )
        self._openssl(
            "ca", "-batch", "-notext", "-config", self.config_path,
            "-extfile", ext_path, *validity,
            "-in", csr_path, "-out", cert_path,
        )
        return cert_path, key_path


# ---------------------------------------------------------------------------
# DNS


DNS_TYPES = {"A": 1, "NS": 2, "CNAME": 5, "SOA": 6, "MX": 15, "TXT": 16, "AAAA": 28}
DNS_RCODES = {0: "NOERROR", 1: "FORMERR", 2: "SERVFAIL", 3: "NXDOMAIN", 4: "NOTIMP", 5: "REFUSED"}


def _encode_name(name):
    wire = b""
    for label in name.rstrip(".").split("."):
        encoded = label.encode("ascii")
        wire += bytes([len(encoded)]) + encoded
    return wire + b"\x00"


def _decode_name(message, offset):
    """Decode a possibly compressed name; return (name, offset after the name)."""
    labels = []
    end_offset = None
    for _ in range(128):
        length = message[offset]
        if length & 0xC0 == 0xC0:
            pointer = struct.unpack_from("!H", message, offset)[0] & 0x3FFF
            if end_offset is None:
                end_offset = offset + 2
            offset = pointer
            continue
        offset += 1
        if length == 0:
            break
        labels.append(message[offset:offset + length].decode("ascii"))
        offset += length
    else:
        raise ValueError("DNS name has more than 128 labels or a compression loop")
    return ".".join(labels) + ".", (end_offset if end_offset is not None else offset)


def dns_query(server, port, name, rrtype, timeout=1.0):
    """Send one UDP DNS query and return (rcode name, [(owner, type, value), ...]).

    Values: A is the address text, MX is (preference, exchange), other
    types are the raw rdata bytes.
    """
    query_id = random.randrange(0x10000)
    header = struct.pack("!HHHHHH", query_id, 0x0100, 1, 0, 0, 0)
    question = _encode_name(name) + struct.pack("!HH", DNS_TYPES[rrtype], 1)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        sock.sendto(header + question, (server, port))
        message, _ = sock.recvfrom(65535)

    reply_id, flags, question_count, answer_count, _, _ = struct.unpack_from("!HHHHHH", message)
    if reply_id != query_id:
        raise ValueError(f"DNS reply id {reply_id} does not match query id {query_id}")
    offset = 12
    for _ in range(question_count):
        _, offset = _decode_name(message, offset)
        offset += 4
    answers = []
    type_names = {number: text for text, number in DNS_TYPES.items()}
    for _ in range(answer_count):
        owner, offset = _decode_name(message, offset)
        record_type, _, _, length = struct.unpack_from("!HHIH", message, offset)
        offset += 10
        rdata_offset = offset
        offset += length
        if record_type == DNS_TYPES["A"]:
            value = socket.inet_ntoa(message[rdata_offset:rdata_offset + 4])
        elif record_type == DNS_TYPES["MX"]:
            preference = struct.unpack_from("!H", message, rdata_offset)[0]
            exchange, _ = _decode_name(message, rdata_offset + 2)
            value = (preference, exchange)
        else:
            value = message[rdata_offset:offset]
        answers.append((owner, type_names.get(record_type, str(record_type)), value))
    rcode = DNS_RCODES.get(flags & 0x000F, str(flags & 0x000F))
    return rcode, answers


class UnboundServer:
    """Unbound in the foreground on 127.0.0.1, serving only local zones.

    zones maps a zone name to its local-data records, e.g.
    {"relay.test": ["relay.test. MX 10 mx.relay.test.", "mx.relay.test. A 127.0.0.10"]}.
    Every name outside those zones gets NXDOMAIN from a static root zone, so
    Unbound never sends a query to another host.
    """

    def __init__(self, directory, zones, address="127.0.0.1"):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.address = address
        self.port = free_port(address, udp=True)
        self.zones = zones
        self.config_path = self.directory / "unbound.conf"
        self.config_path.write_text(self._config())
        self.process = None

    def _config(self):
        lines = [
            "server:",
            f"  interface: {self.address}",
            f"  port: {self.port}",
            "  do-ip6: no",
            "  num-threads: 1",
            "  do-not-query-localhost: no",
            f"  access-control: {self.address}/32 allow",
            '  username: ""',
            '  chroot: ""',
            f'  directory: "{self.directory}"',
            '  pidfile: ""',
            "  use-syslog: no",
            '  logfile: ""',
            "  verbosity: 1",
            "  log-queries: yes",
            '  module-config: "iterator"',
            '  local-zone: "." static',
            '  local-zone: "test." nodefault',
        ]
        for zone, records in self.zones.items():
            lines.append(f'  local-zone: "{zone}." static')
            lines.extend(f'  local-data: "{record}"' for record in records)
        lines += ["remote-control:", "  control-enable: no", ""]
        return "\n".join(lines)

    def start(self):
        checked = run_command(["unbound-checkconf", self.config_path])
        if checked.returncode != 0:
            raise RuntimeError(
                f"unbound-checkconf rejected {self.config_path}:\n{checked.stdout}{checked.stderr}"
            )
        self.process = ManagedProcess(
            "unbound", ["unbound", "-d", "-c", self.config_path], self.directory
        )
        probe_zone = next(iter(self.zones))
        if not wait_until(lambda: self._answers(probe_zone), START_TIMEOUT, interval=0.1):
            self.process.stop()
            raise RuntimeError(
                f"Unbound did not answer on {self.address}:{self.port} within {START_TIMEOUT} s.\n"
                + self.process.describe_exit()
            )

    def _answers(self, name):
        if not self.process.running():
            raise RuntimeError("Unbound exited during start.\n" + self.process.describe_exit())
        try:
            dns_query(self.address, self.port, name, "SOA", timeout=0.5)
        except (socket.timeout, ConnectionRefusedError):
            return False
        return True

    def query(self, name, rrtype):
        return dns_query(self.address, self.port, name, rrtype)

    def stop(self):
        if self.process:
            self.process.stop()


# ---------------------------------------------------------------------------
# Receiving MTA


class Receiver:
    """receiver.py (aiosmtpd) listening on host:port, storing messages in maildir."""

    def __init__(self, directory, name, host, port, cert=None, key=None,
                 starttls=True, reject_rcpt_prefix=None, hostname=None, seven_bit=False,
                 auth=None, auth_mechanisms=None, implicit_tls=False, idle_timeout=None):
        self.directory = Path(directory)
        self.name = name
        self.host = host
        self.port = port
        self.maildir = self.directory / f"{name}-maildir"
        self.maildir.mkdir(parents=True, exist_ok=True)
        args = [SYSTEM_PYTHON, RECEIVER_SCRIPT, "--listen", f"{host}:{port}",
                "--maildir", self.maildir]
        if hostname:
            args += ["--hostname", hostname]
        if starttls:
            args += ["--cert", cert, "--key", key]
        else:
            args += ["--no-tls"]
        if reject_rcpt_prefix:
            args += ["--reject-rcpt-prefix", reject_rcpt_prefix]
        if seven_bit:
            args += ["--seven-bit"]
        if auth:
            args += ["--auth", auth]
        if auth_mechanisms:
            args += ["--auth-mechanisms", auth_mechanisms]
        if implicit_tls:
            args += ["--implicit-tls"]
        if idle_timeout is not None:
            args += ["--idle-timeout", str(idle_timeout)]
        self.process = ManagedProcess(name, args, self.directory)

    def wait_ready(self, timeout=START_TIMEOUT):
        def ready():
            if not self.process.running():
                raise RuntimeError(
                    f"receiver {self.name} exited during start.\n" + self.process.describe_exit()
                )
            return "ready" in self.process.stdout_path.read_text(errors="replace")

        if not wait_until(ready, timeout):
            raise RuntimeError(
                f"receiver {self.name} did not print 'ready' within {timeout} s.\n"
                + self.process.describe_exit()
            )

    def messages(self):
        """Return the stored messages in arrival order as [(raw bytes, metadata dict)]."""
        stored = []
        for metadata_path in self.maildir.glob("*.json"):
            number = int(metadata_path.stem)
            metadata = json.loads(metadata_path.read_text())
            raw = (self.maildir / f"{number}.eml").read_bytes()
            stored.append((number, raw, metadata))
        stored.sort(key=lambda item: item[0])
        return [(raw, metadata) for _, raw, metadata in stored]

    def wait_for_messages(self, count, timeout):
        """Wait until at least count messages are stored; return all stored messages."""
        wait_until(lambda: len(list(self.maildir.glob("*.json"))) >= count, timeout)
        return self.messages()

    def stop(self):
        self.process.stop()


# ---------------------------------------------------------------------------
# The relay


def relay_binary():
    """Return the tlsrelay binary from TLSRELAY_BIN, raising AssertionError when unusable."""
    value = os.environ.get("TLSRELAY_BIN", "")
    if not value:
        raise AssertionError(
            "TLSRELAY_BIN is not set: set it to the built tlsrelay binary, "
            "e.g. TLSRELAY_BIN=build/tlsrelay (CTest sets it for the e2e test)"
        )
    path = Path(value).resolve()
    if not path.is_file():
        raise AssertionError(f"TLSRELAY_BIN={value}: file not found; build the tlsrelay target first")
    if not os.access(path, os.X_OK):
        raise AssertionError(f"TLSRELAY_BIN={value}: file is not executable")
    return path


class Relay:
    """tlsrelay `serve` with a generated config; stderr (the log) goes to a file."""

    def __init__(self, directory, binary, nameserver_port, ca_file, mx_port,
                 outbound_level="may", inbound_level="may",
                 mynetworks=("127.0.0.0/8", "[::1]/128"), smtpd_extra=(), toml_tail="", toml_head="",
                 relayhost="", smtp_extra=()):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.binary = binary
        self.port = free_port("127.0.0.1")
        self.queue_directory = self.directory / "queue"
        self.config_path = self.directory / "tlsrelay.toml"
        self.config_path.write_text(
            "\n".join([
                'myhostname = "relay.example.net"',
                f"queue_directory = {toml_string(self.queue_directory)}",
                toml_head,
                "",
                "[smtpd]",
                f"listen = {toml_string_array([f'127.0.0.1:{self.port}'])}",
                f"tls_security_level = {toml_string(inbound_level)}",
                'tls_cert_file = ""',
                'tls_key_file = ""',
                f"mynetworks = {toml_string_array(mynetworks)}",
                *smtpd_extra,
                "",
                "[smtp]",
                f"tls_security_level = {toml_string(outbound_level)}",
                f"tls_CAfile = {toml_string(ca_file)}",
                'tls_CApath = ""',
                f"port = {mx_port}",
                f"relayhost = {toml_string(relayhost)}",
                *smtp_extra,
                "",
                "[dns]",
                f"nameservers = {toml_string_array([f'127.0.0.1:{nameserver_port}'])}",
                "",
                toml_tail,
            ])
        )
        self.process = None
        self.log_path = None

    def start(self, timeout=START_TIMEOUT):
        """Start the relay and wait until its SMTP port accepts connections."""
        # TLSRELAY_* variables override the relay's configuration, so the
        # test harness's own (TLSRELAY_BIN) must not reach it.
        environment = {name: value for name, value in os.environ.items() if not name.startswith("TLSRELAY_")}
        self.process = ManagedProcess(
            "tlsrelay", [self.binary, "serve", "--config", self.config_path], self.directory, env=environment
        )
        self.log_path = self.process.stderr_path

        def accepting():
            if not self.process.running():
                raise AssertionError(
                    "tlsrelay exited before it accepted connections on "
                    f"127.0.0.1:{self.port}.\n{self.process.describe_exit()}"
                )
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return True
            except OSError:
                return False

        if not wait_until(accepting, timeout, interval=0.1):
            raise AssertionError(
                f"tlsrelay did not accept connections on 127.0.0.1:{self.port} within {timeout} s.\n"
                f"--- log ({self.log_path}):\n{tail(self.log_path)}"
            )

    def log_text(self):
        return self.log_path.read_text(errors="replace") if self.log_path else ""

    def find_log(self, pattern):
        """Return the first re.Match of pattern in any log line, or None."""
        regex = re.compile(pattern)
        for line in self.log_text().splitlines():
            match = regex.search(line)
            if match:
                return match
        return None

    def wait_for_log(self, pattern, timeout):
        """Wait until a log line matches pattern; return the match or raise AssertionError.

        A relay that has exited fails the wait at once instead of after the timeout.
        """
        def matched_or_exited():
            match = self.find_log(pattern)
            if match:
                return match
            if self.process and not self.process.running():
                raise AssertionError(
                    f"tlsrelay exited while the test waited for a log line matching {pattern!r}.\n"
                    + self.process.describe_exit()
                )
            return None

        match = wait_until(matched_or_exited, timeout, interval=0.1)
        if not match:
            raise AssertionError(
                f"no tlsrelay log line matched {pattern!r} within {timeout} s.\n"
                f"--- log ({self.log_path}):\n{tail(self.log_path)}\n"
                f"--- stdout ({self.process.stdout_path}):\n{tail(self.process.stdout_path, 10)}"
            )
        return match

    def queue_files(self):
        """Return the paths of files under queue_directory, except certificates and keys."""
        if not self.queue_directory.exists():
            return set()
        return {
            str(path.relative_to(self.queue_directory))
            for path in self.queue_directory.rglob("*")
            if path.is_file() and path.suffix not in (".pem", ".crt", ".key")
        }

    def stop(self):
        """Stop the relay; fail when it did not exit cleanly or a sanitizer reported a problem.

        A clean stop is exit status 0 after SIGTERM. In the sanitizer build,
        AddressSanitizer, LeakSanitizer and UBSan write their reports to the
        relay's stderr, which is the log checked here.
        """
        if not self.process:
            return
        self.process.stop()
        log = self.log_text()
        for marker in ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:"):
            if marker in log:
                raise AssertionError(f"tlsrelay's log has a sanitizer report ({marker}):\n{tail(self.log_path, 60)}")
        status = self.process.popen.returncode
        if status != 0:
            raise AssertionError(f"expected tlsrelay to exit with status 0 after SIGTERM.\n{self.process.describe_exit()}")


# ---------------------------------------------------------------------------
# Test messages


def attachment_bytes(size=3000):
    """Return deterministic binary data that contains every byte value."""
    generator = random.Random(20240101)
    return bytes(range(256)) + bytes(generator.randrange(256) for _ in range(size - 256))


def build_mime_message(sender, recipient, subject, marker):
    """Return a multipart/mixed message as bytes with CRLF line endings.

    Parts: an 8-bit UTF-8 text part (Content-Transfer-Encoding: 8bit) that
    contains marker and a line starting with a dot, which tests SMTP dot
    stuffing on both hops, and a base64 binary attachment.
    """
    boundary = "=_tlsrelay-e2e-boundary-7f3a"
    encoded = base64.encodebytes(attachment_bytes()).decode("ascii")
    text_lines = [
        "Grüße aus Köln — ½ €",
        "",
        f"Marker: {marker}",
        ". A line that starts with a dot.",
        "Straße, naïve café, 東京, emoji 📨.",
    ]
    lines = [
        f"From: Sender <{sender}>",
        f"To: <{recipient}>",
        f"Subject: {subject}",
        "Date: Thu, 04 Dec 2025 10:00:00 +0000",
        f"Message-ID: <{marker}@client.test>",
        "MIME-Version: 1.0",
        f'Content-Type: multipart/mixed; boundary="{boundary}"',
        "",
        "This is a multi-part message in MIME format.",
        "",
        f"--{boundary}",
        "Content-Type: text/plain; charset=utf-8",
        "Content-Transfer-Encoding: 8bit",
        "",
        *text_lines,
        "",
        f"--{boundary}",
        'Content-Type: application/octet-stream; name="payload.bin"',
        "Content-Transfer-Encoding: base64",
        'Content-Disposition: attachment; filename="payload.bin"',
        "",
        *encoded.splitlines(),
        "",
        f"--{boundary}--",
        "",
    ]
    return "\r\n".join(lines).encode("utf-8")


# ---------------------------------------------------------------------------
# SMTP client


class SwaksResult:
    """A finished swaks run with its SMTP transcript parsed into (command, reply) pairs."""

    def __init__(self, completed):
        self.returncode = completed.returncode
        self.stdout = completed.stdout
        self.stderr = completed.stderr
        self.exchanges = self._parse(completed.stdout)

    @staticmethod
    def _parse(transcript):
        # swaks marks client lines with "->" (plain) or "~>" (TLS), server
        # lines with "<-", "<~", "<**" or "<~*" (error replies).
        exchanges = []
        command = None
        reply_lines = []
        for line in transcript.splitlines():
            stripped = line.strip()
            client = re.match(r"^[-~]> (.*)$", stripped)
            server = re.match(r"^<[-~]?\*{0,2}\s+(\d{3}[ -].*|\d{3})$", stripped)
            if client:
                if reply_lines:
                    exchanges.append((command, reply_lines))
                    reply_lines = []
                command = client.group(1)
            elif server:
                reply_lines.append(server.group(1))
                if re.match(r"^\d{3}( |$)", server.group(1)):
                    exchanges.append((command, reply_lines))
                    reply_lines = []
        return exchanges

    def reply_to(self, command_prefix):
        """Return the last reply line to the first command starting with command_prefix, or None."""
        for command, reply_lines in self.exchanges:
            if command is not None and command.upper().startswith(command_prefix.upper()):
                return reply_lines[-1]
        return None

    def data_reply(self):
        """Return the last line of the reply to the message content (after DATA's 354), or None.

        With --suppress-data swaks prints "N lines sent" in place of the content.
        """
        for index, (command, _) in enumerate(self.exchanges[:-1]):
            if command is not None and command.upper() == "DATA":
                return self.exchanges[index + 1][1][-1]
        return None

    def describe(self):
        return f"swaks exit status {self.returncode}\n--- stdout:\n{self.stdout}\n--- stderr:\n{self.stderr}"


def write_swaks_data_file(path, message):
    """Write message (bytes ending in CRLF) as a swaks --data file and return the path.

    swaks 20201014 terminates the last line of the data itself before the
    final dot, so the file omits the final CRLF and the message on the wire
    equals message exactly. LabSelfCheck.test_swaks_to_receiver_byte_exact
    checks this.
    """
    if not message.endswith(b"\r\n"):
        raise ValueError("message must end with CRLF")
    Path(path).write_bytes(message[:-2])
    return path


def swaks(server, port, sender, recipients, data_file=None, tls=True, local_interface=None, extra=()):
    """Send one message with swaks and return a SwaksResult."""
    args = [
        "swaks", "--server", f"{server}:{port}",
        "--helo", "client.test",
        "--from", sender,
        "--to", ",".join(recipients),
        "--timeout", "30",
        "--suppress-data",
    ]
    if tls:
        args.append("--tls")
    if data_file is not None:
        args += ["--data", f"@{data_file}"]
    if local_interface:
        args += ["--local-interface", local_interface]
    args += list(extra)
    return SwaksResult(run_command(args))


# ---------------------------------------------------------------------------
# Test case base


class LabTestCase(unittest.TestCase):
    """Base class: one lab directory, CA and Unbound per class, a work directory per test.

    Subclasses set ZONES (see UnboundServer).
    """

    ZONES = {}

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.lab_dir = Path(tempfile.mkdtemp(prefix=f"tlsrelay-e2e-{cls.__name__}-"))
        if KEEP_LAB:
            print(f"\nlab directory for {cls.__name__}: {cls.lab_dir}", file=sys.stderr)
        else:
            cls.addClassCleanup(shutil.rmtree, cls.lab_dir, ignore_errors=True)
        cls.ca = CertificateAuthority(cls.lab_dir / "ca")
        cls.dns = UnboundServer(cls.lab_dir / "unbound", cls.ZONES)
        cls.addClassCleanup(cls.dns.stop)
        cls.dns.start()

    def setUp(self):
        super().setUp()
        self.work_dir = self.lab_dir / self._testMethodName
        self.work_dir.mkdir()

    def start_receiver(self, name, host, port, **options):
        receiver = Receiver(self.work_dir, name, host, port, **options)
        self.addCleanup(receiver.stop)
        receiver.wait_ready()
        return receiver

    def start_relay(self, mx_port, **options):
        relay = Relay(
            self.work_dir / "relay",
            relay_binary(),
            nameserver_port=self.dns.port,
            ca_file=self.ca.cert_path,
            mx_port=mx_port,
            **options,
        )
        self.addCleanup(relay.stop)
        relay.start()
        return relay
