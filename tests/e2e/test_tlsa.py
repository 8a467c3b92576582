"""`tlsrelay tlsa` and the TLSA check that `serve` runs after start and reload.

The command's records are compared with digests the openssl command
computes from the same files. For the check, NSD serves tlsa.test signed at
test time and Unbound validates it. Each relay gets a myhostname in that
zone whose TLSA records match its certificate, match another one, or do
not exist, and its log must report which.
"""

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import unittest
from pathlib import Path

import dnssec_lab
import lab

ZONE = "tlsa.test"
CHECK_TIMEOUT = 15.0


def openssl_spki_sha256(certificate):
    """Return the SHA-256 of the certificate's SubjectPublicKeyInfo (the "x 1 1" data), by openssl."""
    command = (f"openssl x509 -in {certificate} -pubkey -noout | openssl pkey -pubin -outform DER"
               " | openssl dgst -sha256 -hex")
    output = subprocess.run(command, shell=True, check=True, capture_output=True, text=True,
                            timeout=30).stdout
    return output.strip().split()[-1]


def make_ec_self_signed(directory, name):
    """Create a self-signed EC P-256 certificate for name; return (cert path, key path)."""
    cert = Path(directory) / f"{name}-ec.pem"
    key = Path(directory) / f"{name}-ec.key"
    result = lab.run_command([
        "openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-days", "30", "-subj", f"/CN={name}", "-addext", f"subjectAltName=DNS:{name}",
        "-keyout", key, "-out", cert,
    ])
    if result.returncode != 0:
        raise RuntimeError(f"openssl req failed:\n{result.stderr}")
    return cert, key


def relay_environment():
    """Return this process's environment without TLSRELAY_* variables, which would override the relay's config."""
    return {name: value for name, value in os.environ.items() if not name.startswith("TLSRELAY_")}


def run_tlsa(*arguments):
    return lab.run_command([lab.relay_binary(), "tlsa", *map(str, arguments)], env=relay_environment())


def records_of(output):
    """Return the non-comment, non-empty lines of the command's output."""
    return [line for line in output.splitlines() if line and not line.startswith(";")]


class LabDirectory(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.lab_dir = Path(tempfile.mkdtemp(prefix=f"tlsrelay-e2e-{cls.__name__}-"))
        if lab.KEEP_LAB:
            print(f"\nlab directory for {cls.__name__}: {cls.lab_dir}", file=sys.stderr)
        else:
            cls.addClassCleanup(shutil.rmtree, cls.lab_dir, ignore_errors=True)
        cls.ca = lab.CertificateAuthority(cls.lab_dir / "ca")


class TlsaCommand(LabDirectory):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.rsa_cert, cls.rsa_key = cls.ca.issue("mail.example.org")
        cls.chain = cls.lab_dir / "chain.pem"
        cls.chain.write_text(Path(cls.rsa_cert).read_text() + cls.ca.cert_path.read_text())
        cls.reversed_chain = cls.lab_dir / "reversed-chain.pem"
        cls.reversed_chain.write_text(cls.ca.cert_path.read_text() + Path(cls.rsa_cert).read_text())
        cls.ec_cert, cls.ec_key = make_ec_self_signed(cls.lab_dir, "mail.example.org")

    def test_rsa_leaf_record_matches_openssl(self):
        result = run_tlsa("--cert", self.rsa_cert, "--host", "mail.example.org")

        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertEqual(records_of(result.stdout),
                         [f"_25._tcp.mail.example.org. IN TLSA 3 1 1 {openssl_spki_sha256(self.rsa_cert)}"])

    def test_ec_leaf_record_matches_openssl(self):
        result = run_tlsa("--cert", self.ec_cert, "--host", "MAIL.example.org.", "--port", "465")

        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertEqual(records_of(result.stdout),
                         [f"_465._tcp.mail.example.org. IN TLSA 3 1 1 {openssl_spki_sha256(self.ec_cert)}"])

    def test_chain_and_next_cert(self):
        result = run_tlsa("--cert", self.chain, "--next-cert", self.ec_cert, "--host", "mail.example.org")

        self.assertEqual(result.returncode, 0, result.stderr)
        owner = "_25._tcp.mail.example.org."
        self.assertEqual(records_of(result.stdout), [
            f"{owner} IN TLSA 3 1 1 {openssl_spki_sha256(self.rsa_cert)}",
            f"{owner} IN TLSA 2 1 1 {openssl_spki_sha256(self.ca.cert_path)}",
            f"{owner} IN TLSA 3 1 1 {openssl_spki_sha256(self.ec_cert)}",
        ])
        self.assertIn("; 2 1 1: key of the issuer CN=tlsrelay e2e test CA, the last certificate in "
                      f"{self.chain}", result.stdout)
        self.assertIn("; next certificate:", result.stdout)

    def test_renewal_with_same_key_prints_record_once(self):
        result = run_tlsa("--cert", self.rsa_cert, "--next-cert", self.chain, "--host", "mail.example.org")

        self.assertEqual(result.returncode, 0, result.stderr)
        leaf_record = f"_25._tcp.mail.example.org. IN TLSA 3 1 1 {openssl_spki_sha256(self.rsa_cert)}"
        self.assertEqual(records_of(result.stdout).count(leaf_record), 1)
        self.assertIn(";   same record as above", result.stdout)

    def test_defaults_from_config(self):
        config = self.lab_dir / "tlsrelay.toml"
        config.write_text("\n".join([
            'myhostname = "mx.bücher.example"',
            f"queue_directory = {lab.toml_string(self.lab_dir / 'queue')}",
            "[smtpd]",
            f"tls_cert_file = {lab.toml_string(self.chain)}",
            f"tls_key_file = {lab.toml_string(self.rsa_key)}",
            f"tls_next_cert_file = {lab.toml_string(self.ec_cert)}",
            "",
        ]))

        result = run_tlsa("--config", config)

        self.assertEqual(result.returncode, 0, result.stderr)
        owner = "_25._tcp.mx.xn--bcher-kva.example."
        self.assertEqual(records_of(result.stdout), [
            f"{owner} IN TLSA 3 1 1 {openssl_spki_sha256(self.rsa_cert)}",
            f"{owner} IN TLSA 2 1 1 {openssl_spki_sha256(self.ca.cert_path)}",
            f"{owner} IN TLSA 3 1 1 {openssl_spki_sha256(self.ec_cert)}",
        ])

    def test_errors(self):
        cases = [
            (["--host", "mail.example.org"], 2, "missing --cert FILE"),
            (["--cert", self.lab_dir / "missing.pem"], 1, f"cannot open {self.lab_dir / 'missing.pem'}"),
            (["--cert", self.rsa_key, "--host", "a.example"], 1, "no certificate found"),
            (["--cert", self.rsa_cert, "--port", "70000"], 2, 'invalid --port "70000"'),
            (["--cert", self.rsa_cert, "--host", "bad host"], 2, 'invalid host name "bad host"'),
            (["--cert"], 2, "--cert needs a value"),
            (["--bogus"], 2, 'unexpected argument "--bogus"'),
            (["--cert", self.reversed_chain, "--host", "a.example"], 1, "did not issue certificate 1"),
            (["--cert", self.rsa_cert, "--host", "127.0.0.1"], 2, 'invalid host name "127.0.0.1"'),
            (["--cert", self.rsa_cert, "--host", "-x.example"], 2, 'invalid host name "-x.example"'),
            (["--cert", self.rsa_cert, "--host", ""], 2, "--host needs a host name"),
        ]
        for arguments, status, message in cases:
            with self.subTest(arguments=arguments):
                result = run_tlsa(*arguments)
                self.assertEqual(result.returncode, status, result.stderr)
                self.assertIn(message, result.stderr)
                self.assertEqual(len(result.stderr.splitlines()), 1, result.stderr)
                self.assertEqual(result.stdout, "")

    def test_help_lists_options(self):
        result = run_tlsa("--help")

        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertTrue(result.stdout.startswith("usage: tlsrelay tlsa "), result.stdout)
        for option in ("--cert FILE", "--next-cert FILE", "--host NAME", "--port N", "--config FILE"):
            self.assertIn(option, result.stdout)


class StartupTlsaCheck(LabDirectory):
    """One relay per myhostname; the zone contains that host's TLSA records."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.current_cert, cls.current_key = cls.ca.issue("relay.tlsa.test", file_stem="current")
        cls.next_cert, _ = make_ec_self_signed(cls.lab_dir, "next.relay.tlsa.test")
        cls.other_cert, _ = cls.ca.issue("other.tlsa.test", file_stem="other")
        cls.sni_cert, cls.sni_key = cls.ca.issue("sni.tlsa.test", file_stem="sni")
        current = openssl_spki_sha256(cls.current_cert)
        cls.current_digest = current
        cls.sni_digest = openssl_spki_sha256(cls.sni_cert)
        records = [
            f"_25._tcp.match TLSA 3 1 1 {current}",
            f"_25._tcp.sni TLSA 3 1 1 {cls.sni_digest}",
            f"_25._tcp.sniother TLSA 3 1 1 {cls.sni_digest}",
            f"_25._tcp.mismatch TLSA 3 1 1 {openssl_spki_sha256(cls.other_cert)}",
            f"_25._tcp.rollover TLSA 3 1 1 {current}",
            f"_25._tcp.rollover TLSA 3 1 1 {openssl_spki_sha256(cls.next_cert)}",
            f"_25._tcp.nextonly TLSA 3 1 1 {openssl_spki_sha256(cls.next_cert)}",
            f"_25._tcp.bogus TLSA 3 1 1 {openssl_spki_sha256(cls.other_cert)}",
            "none A 127.0.0.1",
        ]
        cls.dns = dnssec_lab.DnssecLab(cls.lab_dir / "dns", signed={ZONE: records}, unsigned={},
                                       bogus_tlsa=[f"_25._tcp.bogus.{ZONE}"])
        cls.addClassCleanup(cls.dns.stop)
        cls.dns.start()

    def start_relay(self, name, next_cert=None, nameserver_port=None, sni_name=None):
        toml_tail = ""
        if sni_name:
            toml_tail = "\n".join([
                "[[smtpd.tls_sni]]",
                f"name = {lab.toml_string(sni_name)}",
                f"cert_file = {lab.toml_string(self.sni_cert)}",
                f"key_file = {lab.toml_string(self.sni_key)}",
                "",
            ])
        relay = lab.Relay(self.lab_dir / f"relay-{name}", lab.relay_binary(),
                          nameserver_port=nameserver_port or self.dns.port,
                          ca_file=self.ca.cert_path, mx_port=lab.free_port(), toml_tail=toml_tail)
        self.write_config(relay, f"{name}.{ZONE}", self.current_cert, self.current_key, next_cert)
        self.addCleanup(relay.stop)
        relay.start()
        return relay

    @staticmethod
    def write_config(relay, hostname, cert, key, next_cert):
        text = relay.config_path.read_text()
        replacements = {
            'myhostname = "relay.example.net"': f"myhostname = {lab.toml_string(hostname)}",
            'tls_cert_file = ""': f"tls_cert_file = {lab.toml_string(cert)}",
            'tls_key_file = ""': f"tls_key_file = {lab.toml_string(key)}"
                                 + (f"\ntls_next_cert_file = {lab.toml_string(next_cert)}" if next_cert else ""),
        }
        for old, new in replacements.items():
            if old not in text:
                raise AssertionError(f"{relay.config_path} has no line {old!r}; update the test")
            text = text.replace(old, new)
        relay.config_path.write_text(text)

    def tlsa_warnings(self, relay):
        return [line for line in relay.log_text().splitlines() if "warning: TLSA records at" in line]

    def test_mismatch_warns_with_record_to_publish(self):
        relay = self.start_relay("mismatch")

        match = relay.wait_for_log(r"warning: TLSA records at _25\._tcp\.mismatch\.tlsa\.test .*", CHECK_TIMEOUT)
        line = match.group(0)
        self.assertIn(f"do not match the certificate in {self.current_cert}, and no tls_next_cert_file is set", line)
        self.assertIn("peers that use DANE will defer mail to this host", line)
        self.assertIn(f"Publish: _25._tcp.mismatch.tlsa.test. IN TLSA 3 1 1 {self.current_digest}", line)

    def test_match_logs_info_line(self):
        relay = self.start_relay("match")

        relay.wait_for_log(r"TLSA records at _25\._tcp\.match\.tlsa\.test match the current certificate in "
                           + str(self.current_cert) + r": DANE TLSA 3 1 1 matched the leaf certificate",
                           CHECK_TIMEOUT)
        self.assertEqual(self.tlsa_warnings(relay), [])

    def test_rollover_matches_current_and_next(self):
        relay = self.start_relay("rollover", next_cert=self.next_cert)

        relay.wait_for_log(r"TLSA records at _25\._tcp\.rollover\.tlsa\.test match the current certificate in "
                           + str(self.current_cert) + r" and tls_next_cert_file", CHECK_TIMEOUT)
        self.assertEqual(self.tlsa_warnings(relay), [])

    def test_next_cert_only_warns(self):
        relay = self.start_relay("nextonly", next_cert=self.next_cert)

        match = relay.wait_for_log(r"warning: TLSA records at _25\._tcp\.nextonly\.tlsa\.test .*", CHECK_TIMEOUT)
        self.assertIn(f"match tls_next_cert_file ({self.next_cert}) but not the certificate in "
                      f"{self.current_cert}", match.group(0))

    def test_no_records_no_warning(self):
        relay = self.start_relay("none")

        relay.wait_for_log(r"no TLSA records at _25\._tcp\.none\.tlsa\.test \(DNSSEC-validated\)", CHECK_TIMEOUT)
        relay.wait_for_log(rf"no TLSA records at _{relay.port}\._tcp\.none\.tlsa\.test", CHECK_TIMEOUT)
        self.assertEqual(self.tlsa_warnings(relay), [])

    def test_mismatch_with_next_cert_names_both(self):
        relay = self.start_relay("mismatch", next_cert=self.next_cert)

        match = relay.wait_for_log(r"warning: TLSA records at _25\._tcp\.mismatch\.tlsa\.test .*", CHECK_TIMEOUT)
        self.assertIn(f"match neither the certificate in {self.current_cert} nor tls_next_cert_file "
                      f"({self.next_cert})", match.group(0))

    def test_sni_certificate_match_logs_info_line(self):
        # Peers that use DANE send sni.tlsa.test by SNI and get the
        # certificate of the wildcard entry, which the record matches.
        relay = self.start_relay("sni", sni_name="*.tlsa.test")

        relay.wait_for_log(r"TLSA records at _25\._tcp\.sni\.tlsa\.test match the certificate in "
                           + re.escape(f'{self.sni_cert} of [[smtpd.tls_sni]] name "*.tlsa.test"')
                           + r", which peers that send that name by SNI get: "
                           r"DANE TLSA 3 1 1 matched the leaf certificate", CHECK_TIMEOUT)
        self.assertEqual(self.tlsa_warnings(relay), [])

    def test_sni_entry_for_another_name_does_not_count(self):
        relay = self.start_relay("sniother", sni_name="mail.customer.test")

        match = relay.wait_for_log(r"warning: TLSA records at _25\._tcp\.sniother\.tlsa\.test .*", CHECK_TIMEOUT)
        self.assertIn(f"do not match the certificate in {self.current_cert}, and no tls_next_cert_file is set",
                      match.group(0))
        self.assertNotIn("tls_sni", match.group(0))

    def test_sni_mismatch_names_sni_certificate(self):
        relay = self.start_relay("mismatch", sni_name="mismatch.tlsa.test")

        match = relay.wait_for_log(r"warning: TLSA records at _25\._tcp\.mismatch\.tlsa\.test .*", CHECK_TIMEOUT)
        line = match.group(0)
        self.assertIn(f'nor the certificate in {self.sni_cert} of [[smtpd.tls_sni]] name "mismatch.tlsa.test"', line)
        # Peers that use DANE get the SNI certificate, so its record is the one to publish.
        self.assertIn(f"Publish: _25._tcp.mismatch.tlsa.test. IN TLSA 3 1 1 {self.sni_digest}", line)

    def test_bogus_signature_no_warning(self):
        relay = self.start_relay("bogus")

        relay.wait_for_log(r"TLSA check for _25\._tcp\.bogus\.tlsa\.test skipped: lookup failed: .*SERVFAIL",
                           CHECK_TIMEOUT)
        self.assertEqual(self.tlsa_warnings(relay), [])

    def test_silent_nameserver_does_not_delay_start(self):
        # A nameserver that never replies: the relay must accept connections
        # at once and give up on the lookup after its 5 s limit.
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
            silent.bind(("127.0.0.1", 0))
            started = time.monotonic()
            relay = self.start_relay("silent", nameserver_port=silent.getsockname()[1])
            self.assertLess(time.monotonic() - started, 5.0)
            self.assertIsNone(relay.find_log(r"TLSA check for _25\._tcp"))

            relay.wait_for_log(r"TLSA check for _25\._tcp\.silent\.tlsa\.test skipped: lookup timed out after 5000 ms",
                               CHECK_TIMEOUT)
        self.assertEqual(self.tlsa_warnings(relay), [])

    def test_reload_checks_again(self):
        relay = self.start_relay("match")
        relay.wait_for_log(r"TLSA records at _25\._tcp\.match\.tlsa\.test match the current certificate",
                           CHECK_TIMEOUT)

        # Serve another certificate: the published record no longer matches.
        other_key = Path(self.other_cert).with_suffix(".key")
        text = relay.config_path.read_text().replace(
            f"tls_cert_file = {lab.toml_string(self.current_cert)}", f"tls_cert_file = {lab.toml_string(self.other_cert)}"
        ).replace(f"tls_key_file = {lab.toml_string(self.current_key)}", f"tls_key_file = {lab.toml_string(other_key)}")
        relay.config_path.write_text(text)
        relay.process.popen.send_signal(signal.SIGHUP)

        match = relay.wait_for_log(r"warning: TLSA records at _25\._tcp\.match\.tlsa\.test .*", CHECK_TIMEOUT)
        self.assertIn(f"do not match the certificate in {self.other_cert}", match.group(0))

    def test_unreadable_next_cert_stops_start(self):
        relay = lab.Relay(self.lab_dir / "relay-badnext", lab.relay_binary(), nameserver_port=self.dns.port,
                          ca_file=self.ca.cert_path, mx_port=lab.free_port())
        self.write_config(relay, f"match.{ZONE}", self.current_cert, self.current_key, self.current_key)

        result = lab.run_command([lab.relay_binary(), "serve", "--config", relay.config_path],
                                 env=relay_environment())

        self.assertEqual(result.returncode, 1)
        self.assertIn(f"invalid smtpd.tls_next_cert_file: {self.current_key}: no certificate found", result.stderr)


if __name__ == "__main__":
    unittest.main()
