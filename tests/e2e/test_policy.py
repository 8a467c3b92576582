"""Outbound TLS policy matrix: eight server set-ups under six security levels.

Real components on loopback: NSD serves dane.test signed at test time (and
unsigned.test unsigned), Unbound validates it, and aiosmtpd receivers listen
on their own 127.0.0.x addresses with certificates from a test CA. One relay
per level sends one message to a recipient in each scenario domain, so each
relay run fills one column of the matrix. Only the first delivery attempt is
checked.

Every TLSA digest in the zone is computed with the openssl command, and the
relay's result must agree with it.
"""

import shutil
import subprocess
import sys
import tempfile
import unittest
from pathlib import Path

import dnssec_lab
import lab
from test_relay import delivery_pattern, tls_session_pattern

SENDER = "sender@client.test"
DELIVERY_TIMEOUT = 40.0
ZONE = "dane.test"
UNSIGNED_ZONE = "unsigned.test"

# Scenario -> (domain, MX address).
SCENARIOS = {
    "correct 3 1 1": ("ok311." + ZONE, "127.0.0.40"),
    "wrong TLSA hash": ("wronghash." + ZONE, "127.0.0.41"),
    "2 0 1 on issuing CA": ("ta." + ZONE, "127.0.0.42"),
    "expired cert, matching 3 1 1": ("expired." + ZONE, "127.0.0.43"),
    "no STARTTLS": ("nostarttls." + ZONE, "127.0.0.44"),
    "CA cert, wrong name": ("wrongname." + ZONE, "127.0.0.45"),
    "TLSA SERVFAIL": ("servfail." + ZONE, "127.0.0.46"),
    "unsigned zone": ("plain." + UNSIGNED_ZONE, "127.0.0.47"),
}

LEVELS = ["none", "may", "encrypt", "verify", "dane", "dane-only"]

# Expected first-attempt result of every cell: "sent/<tls>" or "deferred".
EXPECTED = {
    #                                   none         may               encrypt           verify            dane              dane-only
    "correct 3 1 1":                   ["sent/none", "sent/verified",  "sent/verified",  "sent/verified",  "sent/verified",  "sent/verified"],
    "wrong TLSA hash":                 ["sent/none", "sent/verified",  "sent/verified",  "sent/verified",  "deferred",       "deferred"],
    "2 0 1 on issuing CA":             ["sent/none", "sent/verified",  "sent/verified",  "sent/verified",  "sent/verified",  "sent/verified"],
    "expired cert, matching 3 1 1":    ["sent/none", "sent/untrusted", "sent/untrusted", "deferred",       "sent/verified",  "sent/verified"],
    "no STARTTLS":                     ["sent/none", "sent/none",      "deferred",       "deferred",       "deferred",       "deferred"],
    "CA cert, wrong name":             ["sent/none", "sent/trusted",   "sent/trusted",   "deferred",       "sent/trusted",   "deferred"],
    "TLSA SERVFAIL":                   ["sent/none", "sent/verified",  "sent/verified",  "sent/verified",  "deferred",       "deferred"],
    "unsigned zone":                   ["sent/none", "sent/verified",  "sent/verified",  "sent/verified",  "sent/verified",  "deferred"],
}

# Words the deferral reason must contain, per scenario and level. The TLSA
# owner name carries the receivers' port (RFC 6698 section 3), which the lab
# picks at run time.
DEFER_REASONS = {
    ("wrong TLSA hash", "dane"): "DANE authentication failed for mx.wronghash.dane.test: no TLSA record matched",
    ("wrong TLSA hash", "dane-only"): "DANE authentication failed for mx.wronghash.dane.test: no TLSA record matched",
    ("expired cert, matching 3 1 1", "verify"): "server certificate not trusted: certificate has expired",
    ("no STARTTLS", "encrypt"): "TLS is required, but was not offered by host mx.nostarttls.dane.test",
    ("CA cert, wrong name", "verify"): "certificate name mx.other.test does not match mx.wrongname.dane.test",
    ("CA cert, wrong name", "dane-only"): "no TLSA records for _{port}._tcp.mx.wrongname.dane.test, and the policy is dane-only",
    ("TLSA SERVFAIL", "dane"): "TLSA lookup failed for _{port}._tcp.mx.servfail.dane.test: SERVFAIL",
    ("TLSA SERVFAIL", "dane-only"): "TLSA lookup failed for _{port}._tcp.mx.servfail.dane.test: SERVFAIL",
    ("unsigned zone", "dane-only"): "the address records of mx.plain.unsigned.test are not DNSSEC-signed",
}


def openssl_digest(certificate, selector):
    """Return the SHA-256 TLSA data (hex) of certificate, computed by openssl."""
    if selector == 1:
        command = (f"openssl x509 -in {certificate} -pubkey -noout | openssl pkey -pubin -outform DER"
                   " | openssl dgst -sha256 -hex")
    else:
        command = f"openssl x509 -in {certificate} -outform DER | openssl dgst -sha256 -hex"
    output = subprocess.run(command, shell=True, check=True, capture_output=True, text=True, timeout=30).stdout
    return output.strip().split()[-1]


class PolicyMatrix(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.lab_dir = Path(tempfile.mkdtemp(prefix="tlsrelay-e2e-policy-"))
        if lab.KEEP_LAB:
            print(f"\nlab directory for {cls.__name__}: {cls.lab_dir}", file=sys.stderr)
        else:
            cls.addClassCleanup(shutil.rmtree, cls.lab_dir, ignore_errors=True)
        cls.ca = lab.CertificateAuthority(cls.lab_dir / "ca")
        cls.mx_port = lab.free_port(*[address for _, address in SCENARIOS.values()])

        certificates = cls._issue_certificates()
        cls.dns = dnssec_lab.DnssecLab(
            cls.lab_dir / "dns",
            signed={ZONE: cls._zone_records(ZONE, certificates)},
            unsigned={UNSIGNED_ZONE: cls._zone_records(UNSIGNED_ZONE, certificates)},
            bogus_tlsa=[f"_{cls.mx_port}._tcp.mx.{SCENARIOS['TLSA SERVFAIL'][0]}"],
        )
        cls.addClassCleanup(cls.dns.stop)
        cls.dns.start()

        cls.receivers = {}
        for scenario, (domain, address) in SCENARIOS.items():
            cert, key = certificates[scenario]
            receiver = lab.Receiver(cls.lab_dir / "receivers", scenario.replace(" ", "_").replace(",", ""),
                                    address, cls.mx_port, cert=cert, key=key,
                                    starttls=scenario != "no STARTTLS", hostname=f"mx.{domain}")
            cls.addClassCleanup(receiver.stop)
            receiver.wait_ready()
            cls.receivers[scenario] = receiver

    @classmethod
    def _issue_certificates(cls):
        """Return scenario -> (certificate chain file, key file)."""
        certificates = {}
        for scenario, (domain, _) in SCENARIOS.items():
            host = f"mx.{domain}"
            if scenario == "expired cert, matching 3 1 1":
                certificates[scenario] = cls.ca.issue(host, expired=True)
            elif scenario == "CA cert, wrong name":
                certificates[scenario] = cls.ca.issue("mx.other.test", file_stem="wrongname")
            else:
                certificates[scenario] = cls.ca.issue(host)
        # DANE-TA needs the anchor in the chain the server sends.
        leaf, key = certificates["2 0 1 on issuing CA"]
        chain = cls.lab_dir / "ca" / "ta-chain.pem"
        chain.write_text(Path(leaf).read_text() + cls.ca.cert_path.read_text())
        certificates["2 0 1 on issuing CA"] = (chain, key)
        cls.certificates = certificates
        return certificates

    @classmethod
    def _zone_records(cls, zone, certificates):
        records = []
        for scenario, (domain, address) in SCENARIOS.items():
            if not domain.endswith("." + zone):
                continue
            relative = domain[: -len(zone) - 1]
            cert, _ = certificates[scenario]
            records += [f"{relative} MX 10 mx.{relative}", f"mx.{relative} A {address}"]
            tlsa = None
            if scenario in ("correct 3 1 1", "expired cert, matching 3 1 1", "TLSA SERVFAIL", "unsigned zone",
                            "no STARTTLS"):
                tlsa = "3 1 1 " + openssl_digest(cert, 1)
            elif scenario == "wrong TLSA hash":
                digest = openssl_digest(cert, 1)
                tlsa = "3 1 1 " + ("0" if digest[0] != "0" else "1") + digest[1:]
            elif scenario == "2 0 1 on issuing CA":
                tlsa = "2 0 1 " + openssl_digest(cls.ca.cert_path, 0)
            if tlsa:
                records.append(f"_{cls.mx_port}._tcp.mx.{relative} TLSA {tlsa}")
        if zone == ZONE:
            # The relay listens on 127.0.0.1, so this MX points back at it.
            records += ["loop MX 10 mx.loop", "mx.loop A 127.0.0.1"]
        return records

    def run_level(self, level):
        column = LEVELS.index(level)
        work_dir = self.lab_dir / f"relay-{level}"
        relay = lab.Relay(work_dir, lab.relay_binary(), nameserver_port=self.dns.port, ca_file=self.ca.cert_path,
                          mx_port=self.mx_port, outbound_level=level)
        self.addCleanup(relay.stop)
        relay.start()

        recipients = {scenario: f"{level}@{domain}" for scenario, (domain, _) in SCENARIOS.items()}
        result = lab.swaks("127.0.0.1", relay.port, SENDER, list(recipients.values()), tls=False)
        self.assertEqual(result.returncode, 0, result.describe())

        for scenario, recipient in recipients.items():
            with self.subTest(scenario=scenario, level=level):
                expected = EXPECTED[scenario][column]
                match = relay.wait_for_log(delivery_pattern(recipient), DELIVERY_TIMEOUT)
                line = match.group(0)
                actual = match.group("status")
                if actual == "sent":
                    actual += "/" + match.group("tls")
                self.assertEqual(actual, expected, f"{scenario} under {level}: {line}")
                reason = DEFER_REASONS.get((scenario, level))
                if reason:
                    self.assertIn(reason.format(port=self.mx_port), match.group("reason"))
                if expected.startswith("sent/") and expected != "sent/none":
                    domain, address = SCENARIOS[scenario]
                    trust = expected.split("/")[1].capitalize()
                    relay.wait_for_log(tls_session_pattern(trust, f"mx.{domain}", address, self.mx_port), 5)

        # Nothing arrives where the policy deferred, and a message arrived
        # over TLS exactly when the log reports TLS.
        for scenario, recipient in recipients.items():
            with self.subTest(scenario=scenario, level=level, check="receiver"):
                expected = EXPECTED[scenario][column]
                stored = [metadata for _, metadata in self.receivers[scenario].messages()
                          if recipient in metadata["rcpt_tos"]]
                if expected == "deferred":
                    self.assertEqual(stored, [], f"{scenario} under {level}: message arrived although deferred")
                    continue
                self.assertEqual(len(stored), 1, f"{scenario} under {level}: expected one stored message")
                self.assertEqual(stored[0]["tls"], expected != "sent/none")
                if level in ("dane", "dane-only") and stored[0]["tls"]:
                    domain, _ = SCENARIOS[scenario]
                    self.assertEqual(stored[0]["tls_server_name"], f"mx.{domain}")
        return relay

    def test_level_none(self):
        self.run_level("none")

    def test_level_may(self):
        self.run_level("may")

    def test_level_encrypt(self):
        self.run_level("encrypt")

    def test_level_verify(self):
        self.run_level("verify")

    def test_level_dane(self):
        relay = self.run_level("dane")
        # A chain the CA store trusts counts for nothing when the TLSA
        # records do not match it.
        relay.wait_for_log(tls_session_pattern("Untrusted", "mx.wronghash.dane.test", "127.0.0.41", self.mx_port), 5)
        relay.wait_for_log(r"TLS trust for mx\.ok311\.dane\.test\[127\.0\.0\.40\]:\d+: verified, "
                           r"DANE TLSA 3 1 1 matched the leaf certificate", 5)
        relay.wait_for_log(r"TLS trust for mx\.ta\.dane\.test\[127\.0\.0\.42\]:\d+: verified, "
                           r"DANE TLSA 2 0 1 matched the trust anchor", 5)

    def test_mail_loop_bounces(self):
        relay = lab.Relay(self.lab_dir / "relay-loop", lab.relay_binary(), nameserver_port=self.dns.port,
                          ca_file=self.ca.cert_path, mx_port=self.mx_port)
        # A real loop: the MX (127.0.0.1) on the SMTP port is the relay's own listener.
        config = relay.config_path.read_text()
        relay.config_path.write_text(config.replace(f"port = {self.mx_port}\n", f"port = {relay.port}\n"))
        self.addCleanup(relay.stop)
        relay.start()
        result = lab.swaks("127.0.0.1", relay.port, SENDER, [f"user@loop.{ZONE}"], tls=False)
        self.assertEqual(result.returncode, 0, result.describe())
        match = relay.wait_for_log(delivery_pattern(f"user@loop.{ZONE}"), DELIVERY_TIMEOUT)
        self.assertEqual(match.group("status"), "bounced", match.group(0))
        self.assertEqual(match.group("dsn"), "5.4.6")
        self.assertEqual(match.group("reason"), f"mail for loop.{ZONE} loops back to myself")

    def test_level_dane_only(self):
        self.run_level("dane-only")


if __name__ == "__main__":
    unittest.main()
