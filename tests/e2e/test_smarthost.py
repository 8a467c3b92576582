"""End-to-end smarthost scenarios: swaks -> tlsrelay -> relayhost (aiosmtpd with AUTH).

The relayhost is smtp.provider.test, found by its A record in the lab's
Unbound. Each test writes its own sasl_password_file and checks that the
password reaches the relayhost but never the relay's log.
"""

import base64
import os
import re
import subprocess

import lab

SENDER = "app@client.test"
RELAY_ADDRESS = "127.0.0.1"
DELIVERY_TIMEOUT = 30.0

PROVIDER_ADDRESS = "127.0.0.30"
OTHER_PROVIDER_ADDRESS = "127.0.0.31"
USER = "relay-user@client.test"
PASSWORD = "Secr3t:pass-4711"



def certificate_fingerprint(cert_path):
    """Return the SHA-256 fingerprint of the PEM certificate as "AB:CD:..."."""
    output = subprocess.run(["openssl", "x509", "-in", str(cert_path), "-noout", "-fingerprint", "-sha256"],
                            check=True, capture_output=True, text=True).stdout
    return output.strip().split("=", 1)[1]


class SmarthostTest(lab.LabTestCase):
    ZONES = {
        "provider.test": [
            f"smtp.provider.test. A {PROVIDER_ADDRESS}",
            f"smtp.other-provider.test. A {OTHER_PROVIDER_ADDRESS}",
        ],
    }

    def setUp(self):
        super().setUp()
        self.relay_binary = lab.relay_binary()

    def write_password_file(self, lines, mode=0o600):
        path = self.work_dir / "sasl_passwd"
        path.write_text("".join(line + "\n" for line in lines))
        os.chmod(path, mode)
        return path

    def start_provider(self, name, address, host, **options):
        port = lab.free_port(address)
        cert, key = self.ca.issue(host)
        self.provider_cert = cert
        receiver = self.start_receiver(name, address, port, cert=cert, key=key, hostname=host, **options)
        return receiver, port

    def start_smarthost_relay(self, relayhost, password_file, extra_smtp=(), policies=(), toml_tail=""):
        """Start a relay that sends everything to relayhost with the given policy entries.

        policies holds (domain, level) or (domain, level, fingerprints) tuples.
        """
        smtp_extra = [f"sasl_password_file = {lab.toml_string(password_file)}", *extra_smtp]
        tail = [toml_tail]
        for domain, level, *fingerprints in policies:
            tail += ["[[smtp.tls_policy]]", f"domain = {lab.toml_string(domain)}", f"level = {lab.toml_string(level)}"]
            if fingerprints:
                tail.append(f"fingerprints = {lab.toml_string_array(fingerprints[0])}")
        return self.start_relay(25, relayhost=relayhost, smtp_extra=smtp_extra, toml_tail="\n".join(tail))

    def send(self, relay, recipient, marker, sender=SENDER):
        message = lab.build_mime_message(sender, recipient, f"smarthost {marker}", marker)
        data_file = lab.write_swaks_data_file(self.work_dir / f"{marker}.eml", message)
        result = lab.swaks(RELAY_ADDRESS, relay.port, sender, [recipient], data_file=data_file)
        self.assertEqual(result.returncode, 0, "expected swaks to succeed; " + result.describe())
        return message

    def assert_no_secret_in_log(self, relay):
        log = relay.log_text()
        plain_response = base64.b64encode(b"\0" + USER.encode() + b"\0" + PASSWORD.encode()).decode()
        for secret in (PASSWORD, base64.b64encode(PASSWORD.encode()).decode(), plain_response):
            self.assertNotIn(secret, log, "the relay's log contains the SMTP AUTH password")

    def auth_log(self, receiver):
        path = receiver.maildir / "auth.log"
        return path.read_text().splitlines() if path.exists() else []

    def test_relayhost_auth_plain_over_starttls(self):
        receiver, port = self.start_provider("provider", PROVIDER_ADDRESS, "smtp.provider.test",
                                             auth=f"{USER}:{PASSWORD}")
        relayhost = f"[smtp.provider.test]:{port}"
        password_file = self.write_password_file([f"{relayhost} {USER}:{PASSWORD}"])
        relay = self.start_smarthost_relay(relayhost, password_file, policies=[(relayhost, "verify")])

        self.send(relay, "someone@elsewhere.test", "plain")
        line = relay.wait_for_log(lab.delivery_pattern("someone@elsewhere.test"), DELIVERY_TIMEOUT)
        self.assertEqual(line["status"], "sent", line.string)
        self.assertEqual(line["tls"], "verified", "the policy entry for the relayhost sets verify; " + line.string)
        self.assertEqual(line["relay"], f"smtp.provider.test[{PROVIDER_ADDRESS}]:{port}")

        messages = receiver.wait_for_messages(1, DELIVERY_TIMEOUT)
        self.assertEqual(len(messages), 1)
        self.assertEqual(messages[0][1]["rcpt_tos"], ["someone@elsewhere.test"])
        self.assertEqual(self.auth_log(receiver), ["PLAIN success tls=True"])
        self.assertIsNotNone(relay.find_log(r"SMTP AUTH PLAIN with smtp\.provider\.test\[.*\]:\d+ succeeded"))
        self.assert_no_secret_in_log(relay)

    def test_relayhost_auth_login(self):
        receiver, port = self.start_provider("provider", PROVIDER_ADDRESS, "smtp.provider.test",
                                             auth=f"{USER}:{PASSWORD}", auth_mechanisms="LOGIN")
        relayhost = f"[smtp.provider.test]:{port}"
        password_file = self.write_password_file([f"{relayhost} {USER}:{PASSWORD}"])
        relay = self.start_smarthost_relay(relayhost, password_file, policies=[(relayhost, "verify")])

        self.send(relay, "someone@elsewhere.test", "login")
        line = relay.wait_for_log(lab.delivery_pattern("someone@elsewhere.test"), DELIVERY_TIMEOUT)
        self.assertEqual(line["status"], "sent", line.string)
        self.assertEqual(self.auth_log(receiver), ["LOGIN success tls=True"])
        self.assert_no_secret_in_log(relay)

    def test_implicit_tls_relayhost_with_wrappermode(self):
        receiver, port = self.start_provider("provider", PROVIDER_ADDRESS, "smtp.provider.test",
                                             auth=f"{USER}:{PASSWORD}", implicit_tls=True)
        relayhost = f"[smtp.provider.test]:{port}"
        password_file = self.write_password_file([f"{relayhost} {USER}:{PASSWORD}"])
        relay = self.start_smarthost_relay(relayhost, password_file, extra_smtp=["tls_wrappermode = true"],
                                           policies=[(relayhost, "verify")])

        self.send(relay, "someone@elsewhere.test", "implicit")
        line = relay.wait_for_log(lab.delivery_pattern("someone@elsewhere.test"), DELIVERY_TIMEOUT)
        self.assertEqual(line["status"], "sent", line.string)
        self.assertEqual(line["tls"], "verified", line.string)
        receiver.wait_for_messages(1, DELIVERY_TIMEOUT)
        self.assertEqual(self.auth_log(receiver), ["PLAIN success tls=False"],
                         "aiosmtpd 1.4 reports implicit TLS sessions as tls=False; the relay log shows TLS")
        self.assertIsNone(relay.find_log(r"STARTTLS"), "no STARTTLS is sent under implicit TLS")
        self.assert_no_secret_in_log(relay)

    def test_relayhost_fingerprint_pinning(self):
        receiver, port = self.start_provider("provider", PROVIDER_ADDRESS, "smtp.provider.test",
                                             auth=f"{USER}:{PASSWORD}")
        relayhost = f"[smtp.provider.test]:{port}"
        password_file = self.write_password_file([f"{relayhost} {USER}:{PASSWORD}"])
        pin = certificate_fingerprint(self.provider_cert)
        wrong_pin = ":".join(["00"] * 32)
        relay = self.start_smarthost_relay(relayhost, password_file,
                                           policies=[(relayhost, "fingerprint", [wrong_pin, pin])])

        self.send(relay, "someone@elsewhere.test", "pinned")
        line = relay.wait_for_log(lab.delivery_pattern("someone@elsewhere.test"), DELIVERY_TIMEOUT)
        self.assertEqual(line["status"], "sent", line.string)
        self.assertEqual(line["tls"], "verified", "a matching pin counts as verified; " + line.string)
        self.assertEqual(len(receiver.wait_for_messages(1, DELIVERY_TIMEOUT)), 1)

    def test_relayhost_wrong_pin_defers_before_auth(self):
        receiver, port = self.start_provider("provider", PROVIDER_ADDRESS, "smtp.provider.test",
                                             auth=f"{USER}:{PASSWORD}")
        relayhost = f"[smtp.provider.test]:{port}"
        password_file = self.write_password_file([f"{relayhost} {USER}:{PASSWORD}"])
        wrong_pin = ":".join(["00"] * 32)
        relay = self.start_smarthost_relay(relayhost, password_file,
                                           policies=[(relayhost, "fingerprint", [wrong_pin])])

        self.send(relay, "someone@elsewhere.test", "wrong-pin")
        line = relay.wait_for_log(lab.delivery_pattern("someone@elsewhere.test"), DELIVERY_TIMEOUT)
        self.assertEqual(line["status"], "deferred", line.string)
        self.assertEqual(self.auth_log(receiver), [], "credentials must not go to a host whose pin did not match")
        self.assertEqual(receiver.messages(), [])

    def test_wrong_password_defers_without_logging_it(self):
        receiver, port = self.start_provider("provider", PROVIDER_ADDRESS, "smtp.provider.test",
                                             auth=f"{USER}:{PASSWORD}")
        relayhost = f"[smtp.provider.test]:{port}"
        password_file = self.write_password_file([f"{relayhost} {USER}:{PASSWORD}-old"])
        relay = self.start_smarthost_relay(relayhost, password_file, policies=[(relayhost, "verify")])

        self.send(relay, "someone@elsewhere.test", "wrong")
        line = relay.wait_for_log(lab.delivery_pattern("someone@elsewhere.test"), DELIVERY_TIMEOUT)
        self.assertEqual(line["status"], "deferred", line.string)
        self.assertTrue(line["dsn"].startswith("4."), line.string)
        self.assertIn("SMTP AUTH PLAIN failed", line["reason"])
        self.assertEqual(self.auth_log(receiver), ["PLAIN failure tls=True"])
        self.assertEqual(receiver.messages(), [])
        self.assert_no_secret_in_log(relay)

    def test_credentials_never_sent_in_clear(self):
        receiver, port = self.start_provider("provider", PROVIDER_ADDRESS, "smtp.provider.test",
                                             auth=f"{USER}:{PASSWORD}", starttls=False)
        relayhost = f"[smtp.provider.test]:{port}"
        password_file = self.write_password_file([f"{relayhost} {USER}:{PASSWORD}"])
        relay = self.start_smarthost_relay(relayhost, password_file, policies=[(relayhost, "may")])

        self.send(relay, "someone@elsewhere.test", "clear")
        line = relay.wait_for_log(lab.delivery_pattern("someone@elsewhere.test"), DELIVERY_TIMEOUT)
        self.assertEqual(line["status"], "deferred", line.string)
        self.assertIn("not sent over a connection without TLS", line["reason"])
        self.assertEqual(self.auth_log(receiver), [])
        self.assert_no_secret_in_log(relay)

    def test_password_file_readable_by_others_stops_start(self):
        password_file = self.write_password_file([f"[smtp.provider.test]:587 {USER}:{PASSWORD}"], mode=0o644)
        relay = lab.Relay(self.work_dir / "relay", self.relay_binary, nameserver_port=self.dns.port,
                          ca_file=self.ca.cert_path, mx_port=25, relayhost="[smtp.provider.test]:587",
                          smtp_extra=[f"sasl_password_file = {lab.toml_string(password_file)}"])
        # TLSRELAY_* variables would override the configuration, and the
        # harness's own TLSRELAY_BIN is not a configuration key.
        environment = {name: value for name, value in os.environ.items() if not name.startswith("TLSRELAY_")}
        completed = lab.run_command([self.relay_binary, "serve", "--config", relay.config_path], env=environment)
        self.assertEqual(completed.returncode, 1)
        self.assertIn("is accessible by group or others", completed.stderr)
        self.assertNotIn(PASSWORD, completed.stderr + completed.stdout)

    def test_sender_dependent_relayhost(self):
        default_receiver, default_port = self.start_provider("provider", PROVIDER_ADDRESS, "smtp.provider.test",
                                                             auth=f"{USER}:{PASSWORD}")
        other_receiver, other_port = self.start_provider("other", OTHER_PROVIDER_ADDRESS,
                                                         "smtp.other-provider.test",
                                                         auth=f"other-user:{PASSWORD}x")
        relayhost = f"[smtp.provider.test]:{default_port}"
        other_hop = f"[smtp.other-provider.test]:{other_port}"
        password_file = self.write_password_file([
            f"{relayhost} {USER}:{PASSWORD}",
            f"{other_hop} other-user:{PASSWORD}x",
        ])
        toml_tail = "\n".join([
            "[[smtp.sender_relayhost]]",
            'sender = "@shop.test"',
            f"nexthop = {lab.toml_string(other_hop)}",
        ])
        relay = self.start_smarthost_relay(relayhost, password_file, toml_tail=toml_tail,
                                           policies=[(relayhost, "verify"), (other_hop, "verify")])

        self.send(relay, "first@elsewhere.test", "default-sender")
        self.send(relay, "second@elsewhere.test", "shop-sender", sender="orders@Shop.test")
        first = relay.wait_for_log(lab.delivery_pattern("first@elsewhere.test"), DELIVERY_TIMEOUT)
        second = relay.wait_for_log(lab.delivery_pattern("second@elsewhere.test"), DELIVERY_TIMEOUT)
        self.assertEqual(first["status"], "sent", first.string)
        self.assertEqual(first["relay"], f"smtp.provider.test[{PROVIDER_ADDRESS}]:{default_port}")
        self.assertEqual(second["status"], "sent", second.string)
        self.assertEqual(second["relay"], f"smtp.other-provider.test[{OTHER_PROVIDER_ADDRESS}]:{other_port}")
        self.assertEqual(len(default_receiver.wait_for_messages(1, DELIVERY_TIMEOUT)), 1)
        self.assertEqual(len(other_receiver.wait_for_messages(1, DELIVERY_TIMEOUT)), 1)
        self.assert_no_secret_in_log(relay)
