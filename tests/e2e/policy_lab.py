"""The TLS policy lab: eight mail servers with DNS for them on loopback.

NSD serves dane.test signed at test time (and unsigned.test unsigned),
Unbound validates it, and aiosmtpd receivers listen on their own 127.0.0.x
addresses with certificates from a test CA. SCENARIOS names each server
set-up, and EXPECTED contains the first delivery attempt's result for each
set-up under each security level, which test_policy checks against real
deliveries and test_check against `tlsrelay check`.

Every TLSA digest in the zone is computed with the openssl command.
"""

import shutil
import subprocess
import sys
import tempfile
import unittest
from pathlib import Path

import dnssec_lab
import lab

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


class PolicyLab(unittest.TestCase):
    """Starts the lab once per test class; the tests are in the subclasses."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.lab_dir = Path(tempfile.mkdtemp(prefix=f"tlsrelay-e2e-{cls.__name__}-"))
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
            # For `tlsrelay check`: an RFC 7505 null MX, and a domain without
            # MX records, so it is its own mail host, with an unusable
            # PKIX-EE TLSA record (RFC 7672 section 3.1.3).
            ok311_cert, _ = certificates["correct 3 1 1"]
            records += [
                "nullmx MX 0 .",
                "direct A " + SCENARIOS["correct 3 1 1"][1],
                f"_{cls.mx_port}._tcp.direct TLSA 1 1 1 " + openssl_digest(ok311_cert, 1),
            ]
        return records
