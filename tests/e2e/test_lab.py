"""Checks of the test lab itself (CA, Unbound, receiver, swaks), without tlsrelay.

When a relay scenario fails, these tell whether the lab or the relay is at fault.
"""

import unittest
from unittest import mock

import lab

MX_ADDRESS = "127.0.0.20"
SENDER = "sender@client.test"


class LabSelfCheck(lab.LabTestCase):
    ZONES = {
        "relay.test": ["relay.test. MX 10 mx.relay.test.", f"mx.relay.test. A {MX_ADDRESS}"],
        "arecord.test": ["arecord.test. A 127.0.0.21"],
    }

    def issue_receiver_certificate(self):
        return self.ca.issue("mx.relay.test")

    def test_ca_certificate_verifies(self):
        cert, _ = self.issue_receiver_certificate()

        result = lab.run_command(
            ["openssl", "verify", "-CAfile", self.ca.cert_path, "-verify_hostname", "mx.relay.test", cert]
        )

        self.assertEqual(result.returncode, 0, f"expected openssl verify to accept {cert}: {result.stderr}")

    def test_ca_certificate_wrong_name(self):
        cert, _ = self.ca.issue("mx.elsewhere.test")

        result = lab.run_command(
            ["openssl", "verify", "-CAfile", self.ca.cert_path, "-verify_hostname", "mx.relay.test", cert]
        )

        self.assertNotEqual(result.returncode, 0, "expected a host name mismatch for mx.relay.test")
        self.assertIn("hostname mismatch", result.stdout + result.stderr)

    def test_ca_expired_certificate(self):
        cert, _ = self.ca.issue("mx.relay.test", expired=True)

        result = lab.run_command(["openssl", "verify", "-CAfile", self.ca.cert_path, cert])

        self.assertNotEqual(result.returncode, 0, "expected openssl verify to reject the expired certificate")
        self.assertIn("certificate has expired", result.stdout + result.stderr)

    def test_unbound_mx_record(self):
        rcode, answers = self.dns.query("relay.test", "MX")

        self.assertEqual(rcode, "NOERROR")
        self.assertEqual(answers, [("relay.test.", "MX", (10, "mx.relay.test."))])

    def test_unbound_a_record(self):
        rcode, answers = self.dns.query("mx.relay.test", "A")

        self.assertEqual(rcode, "NOERROR")
        self.assertEqual(answers, [("mx.relay.test.", "A", MX_ADDRESS)])

    def test_unbound_a_only_domain(self):
        mx_rcode, mx_answers = self.dns.query("arecord.test", "MX")
        a_rcode, a_answers = self.dns.query("arecord.test", "A")

        self.assertEqual(mx_rcode, "NOERROR", "expected NODATA (NOERROR, no answers) for MX")
        self.assertEqual(mx_answers, [], "expected no MX record for arecord.test")
        self.assertEqual(a_rcode, "NOERROR")
        self.assertEqual(a_answers, [("arecord.test.", "A", "127.0.0.21")])

    def test_unbound_other_names_nxdomain(self):
        for name in ("client.test", "example.com"):
            with self.subTest(name=name):
                rcode, answers = self.dns.query(name, "MX")

                self.assertEqual(rcode, "NXDOMAIN", f"expected NXDOMAIN for {name}, not recursion")
                self.assertEqual(answers, [])

    def test_receiver_starttls_from_swaks(self):
        cert, key = self.issue_receiver_certificate()
        port = lab.free_port(MX_ADDRESS)
        receiver = self.start_receiver("mx", MX_ADDRESS, port, cert=cert, key=key, hostname="mx.relay.test")
        message = lab.build_mime_message(SENDER, "user@relay.test", "lab check", "lab-starttls")
        data_file = lab.write_swaks_data_file(self.work_dir / "message.eml", message)

        result = lab.swaks(
            MX_ADDRESS, port, SENDER, ["user@relay.test"], data_file=data_file,
            extra=["--tls-verify", "--tls-ca-path", self.ca.cert_path, "--tls-sni", "mx.relay.test"],
        )

        self.assertEqual(result.returncode, 0, result.describe())
        self.assertRegex(result.data_reply() or "", r"^250 ", result.describe())
        messages = receiver.wait_for_messages(1, timeout=5)
        self.assertEqual(len(messages), 1, "expected one stored message")
        _, metadata = messages[0]
        self.assertTrue(metadata["tls"], f"expected a TLS session: {metadata}")
        self.assertRegex(metadata["tls_version"] or "", r"^TLSv1\.[23]$")
        self.assertEqual(metadata["tls_server_name"], "mx.relay.test")
        self.assertEqual(metadata["mail_from"], SENDER)
        self.assertEqual(metadata["rcpt_tos"], ["user@relay.test"])

    def test_swaks_to_receiver_byte_exact(self):
        cert, key = self.issue_receiver_certificate()
        port = lab.free_port(MX_ADDRESS)
        receiver = self.start_receiver("mx", MX_ADDRESS, port, cert=cert, key=key)
        message = lab.build_mime_message(SENDER, "user@relay.test", "lab check", "lab-byte-exact")
        data_file = lab.write_swaks_data_file(self.work_dir / "message.eml", message)

        result = lab.swaks(MX_ADDRESS, port, SENDER, ["user@relay.test"], data_file=data_file)

        self.assertEqual(result.returncode, 0, result.describe())
        messages = receiver.wait_for_messages(1, timeout=5)
        self.assertEqual(len(messages), 1, "expected one stored message")
        raw, _ = messages[0]
        self.assertIn(b"\r\n. A line that starts with a dot.\r\n", raw, "expected the dot line unstuffed")
        self.assertEqual(raw, message, "expected the stored message to equal the sent message byte for byte")

    def test_receiver_without_starttls(self):
        port = lab.free_port(MX_ADDRESS)
        receiver = self.start_receiver("mx", MX_ADDRESS, port, starttls=False)
        message = lab.build_mime_message(SENDER, "user@relay.test", "lab check", "lab-plain")
        data_file = lab.write_swaks_data_file(self.work_dir / "message.eml", message)

        result = lab.swaks(MX_ADDRESS, port, SENDER, ["user@relay.test"], data_file=data_file, tls=False)

        self.assertEqual(result.returncode, 0, result.describe())
        ehlo_reply = next(lines for command, lines in result.exchanges if command == "EHLO client.test")
        self.assertFalse(any("STARTTLS" in line for line in ehlo_reply), f"expected no STARTTLS in {ehlo_reply}")
        messages = receiver.wait_for_messages(1, timeout=5)
        self.assertEqual(len(messages), 1, "expected one stored message")
        self.assertFalse(messages[0][1]["tls"], "expected a session without TLS")

    def test_receiver_rejects_prefix(self):
        cert, key = self.issue_receiver_certificate()
        port = lab.free_port(MX_ADDRESS)
        receiver = self.start_receiver("mx", MX_ADDRESS, port, cert=cert, key=key, reject_rcpt_prefix="bad")
        message = lab.build_mime_message(SENDER, "good@relay.test", "lab check", "lab-reject")
        data_file = lab.write_swaks_data_file(self.work_dir / "message.eml", message)

        result = lab.swaks(
            MX_ADDRESS, port, SENDER, ["bad@relay.test", "good@relay.test"], data_file=data_file
        )

        self.assertRegex(result.reply_to("RCPT TO:<bad@relay.test>") or "", r"^550 5\.1\.1 ", result.describe())
        self.assertRegex(result.reply_to("RCPT TO:<good@relay.test>") or "", r"^250 ", result.describe())
        messages = receiver.wait_for_messages(1, timeout=5)
        self.assertEqual(len(messages), 1, "expected one stored message")
        self.assertEqual(messages[0][1]["rcpt_tos"], ["good@relay.test"])

    def test_receiver_stops_on_sigterm(self):
        port = lab.free_port(MX_ADDRESS)
        receiver = self.start_receiver("mx", MX_ADDRESS, port, starttls=False)

        receiver.stop()

        self.assertEqual(receiver.process.popen.returncode, 0, receiver.process.describe_exit())

    def test_relay_binary_unset_fails(self):
        with mock.patch.dict("os.environ", {"TLSRELAY_BIN": ""}):
            with self.assertRaisesRegex(AssertionError, "TLSRELAY_BIN is not set"):
                lab.relay_binary()

    def test_relay_binary_missing_fails(self):
        missing = self.work_dir / "no-such-tlsrelay"
        with mock.patch.dict("os.environ", {"TLSRELAY_BIN": str(missing)}):
            with self.assertRaisesRegex(AssertionError, "file not found"):
                lab.relay_binary()


if __name__ == "__main__":
    unittest.main()
