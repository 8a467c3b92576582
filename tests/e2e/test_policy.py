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

import unittest

import lab
import policy_lab
from policy_lab import DEFER_REASONS, EXPECTED, LEVELS, SCENARIOS, ZONE
from test_relay import tls_session_pattern

SENDER = "sender@client.test"
DELIVERY_TIMEOUT = 40.0


class PolicyMatrix(policy_lab.PolicyLab):
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
                match = relay.wait_for_log(lab.delivery_pattern(recipient), DELIVERY_TIMEOUT)
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
        match = relay.wait_for_log(lab.delivery_pattern(f"user@loop.{ZONE}"), DELIVERY_TIMEOUT)
        self.assertEqual(match.group("status"), "bounced", match.group(0))
        self.assertEqual(match.group("dsn"), "5.4.6")
        self.assertEqual(match.group("reason"), f"mail for loop.{ZONE} loops back to myself")

    def test_level_dane_only(self):
        self.run_level("dane-only")


if __name__ == "__main__":
    unittest.main()
