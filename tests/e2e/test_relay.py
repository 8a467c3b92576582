"""End-to-end scenarios: swaks or smtplib -> tlsrelay -> Unbound MX lookup -> aiosmtpd.

Every test starts its own relay (config from the test) and receivers; the
CA and Unbound are shared by the class. Only the first delivery attempt is
tested, so no test depends on the relay's retry schedule.
"""

import re
import smtplib
import ssl
import time

import lab

SENDER = "sender@client.test"
RELAY_ADDRESS = "127.0.0.1"
DELIVERY_TIMEOUT = 30.0
# How long a test watches for a message that must not arrive.
NO_DELIVERY_WAIT = 3.0

# One receiving MX address per domain, so no test can reach another's receiver.
MX_ADDRESSES = {
    "relay.test": "127.0.0.10",
    "wrongname.test": "127.0.0.11",
    "expired.test": "127.0.0.12",
    "plain.test": "127.0.0.13",
    "remote.test": "127.0.0.14",
    "bounce.test": "127.0.0.15",
    "arecord.test": "127.0.0.16",
    "starttls.test": "127.0.0.17",
}


def mx_zone(domain):
    """Return local-data records for domain: MX 10 mx.<domain>, and its A record."""
    return [f"{domain}. MX 10 mx.{domain}.", f"mx.{domain}. A {MX_ADDRESSES[domain]}"]



def tls_session_pattern(level, host, address, port):
    """Return a regex for the log line of an outbound TLS session."""
    return (
        rf"{level} TLS connection established to {re.escape(host)}\[{re.escape(address)}\]:{port}: "
        r"(?P<version>TLSv1\.\d) with cipher (?P<cipher>TLS_[A-Z0-9_]+)"
    )


HEADER_LINE = re.compile(rb"^(?:[!-9;-~]+:|[ \t])")


def split_prepended_lines(raw, original):
    """Split raw into (lines before original's first line, the rest of raw)."""
    first_line = original.split(b"\r\n", 1)[0] + b"\r\n"
    prepended = []
    offset = 0
    while not raw.startswith(first_line, offset):
        end = raw.find(b"\r\n", offset)
        if end < 0:
            break
        prepended.append(raw[offset:end + 2])
        offset = end + 2
    return prepended, raw[offset:]


def describe_difference(actual, expected):
    """Return a message that locates the first byte where actual differs from expected."""
    limit = min(len(actual), len(expected))
    offset = next((index for index in range(limit) if actual[index] != expected[index]), limit)
    return (
        f"expected the delivered message to equal the sent message byte for byte "
        f"({len(expected)} bytes); delivered {len(actual)} bytes, first difference at offset {offset}: "
        f"delivered {actual[max(0, offset - 30):offset + 30]!r}, "
        f"sent {expected[max(0, offset - 30):offset + 30]!r}"
    )


class RelayTest(lab.LabTestCase):
    ZONES = {
        **{domain: mx_zone(domain) for domain in MX_ADDRESSES if domain != "arecord.test"},
        "arecord.test": [f"arecord.test. A {MX_ADDRESSES['arecord.test']}"],
    }

    def setUp(self):
        super().setUp()
        # Fails (not skips) every scenario when the binary is not built.
        self.relay_binary = lab.relay_binary()

    def send_message(self, relay, recipients, marker, **swaks_options):
        """Send a MIME test message through relay with swaks; return (message bytes, SwaksResult)."""
        message = lab.build_mime_message(SENDER, recipients[0], f"e2e {marker}", marker)
        data_file = lab.write_swaks_data_file(self.work_dir / f"{marker}.eml", message)
        result = lab.swaks(RELAY_ADDRESS, relay.port, SENDER, recipients, data_file=data_file, **swaks_options)
        return message, result

    def assert_accepted(self, result):
        """Assert that swaks succeeded and the relay replied 250 to the message content."""
        self.assertEqual(result.returncode, 0, "expected swaks to succeed; " + result.describe())
        self.assertRegex(result.data_reply() or "", r"^250 ", "expected 250 after DATA; " + result.describe())

    def test_verified_tls_delivery(self):
        domain = "relay.test"
        mx_address = MX_ADDRESSES[domain]
        port = lab.free_port(mx_address)
        cert, key = self.ca.issue(f"mx.{domain}")
        receiver = self.start_receiver("mx", mx_address, port, cert=cert, key=key, hostname=f"mx.{domain}")
        relay = self.start_relay(port, outbound_level="verify")

        message, result = self.send_message(relay, [f"user@{domain}"], "verified")

        self.assert_accepted(result)
        queue_id_in_reply = result.data_reply().split()[-1]
        delivery = relay.wait_for_log(lab.delivery_pattern(f"user@{domain}"), DELIVERY_TIMEOUT)
        line = delivery.group(0)
        self.assertEqual(delivery["status"], "sent", f"expected status=sent in: {line}")
        self.assertEqual(delivery["tls"], "verified", f"expected tls=verified in: {line}")
        self.assertEqual(delivery["dsn"], "2.0.0", f"expected dsn=2.0.0 in: {line}")
        self.assertEqual(delivery["relay"], f"mx.{domain}[{mx_address}]:{port}", f"unexpected relay= in: {line}")
        self.assertRegex(delivery["reason"], r"^250 ", f"expected the receiver's 250 reply in: {line}")
        self.assertEqual(
            delivery["queue_id"], queue_id_in_reply,
            f"expected the log's queue id to be the last word of the DATA reply {result.data_reply()!r}",
        )

        session = relay.wait_for_log(tls_session_pattern("Verified", f"mx.{domain}", mx_address, port), 5)

        messages = receiver.messages()
        self.assertEqual(len(messages), 1, "expected exactly one message at the receiver")
        raw, metadata = messages[0]
        self.assertTrue(metadata["tls"], f"expected the receiver to see a TLS session: {metadata}")
        self.assertEqual(
            metadata["tls_version"], session["version"],
            "expected the TLS version in the relay's log to match the receiver's session",
        )
        self.assertEqual(metadata["mail_from"], SENDER)
        self.assertEqual(metadata["rcpt_tos"], [f"user@{domain}"])

        prepended, body = split_prepended_lines(raw, message)
        for prepended_line in prepended:
            self.assertRegex(prepended_line, HEADER_LINE, "expected only header lines before the original message")
        self.assertTrue(body == message, describe_difference(body, message))

    def verify_failure_defers(self, domain, cert, key, marker):
        """Send to domain with level verify and a receiver cert that must fail verification."""
        mx_address = MX_ADDRESSES[domain]
        port = lab.free_port(mx_address)
        receiver = self.start_receiver("mx", mx_address, port, cert=cert, key=key, hostname=f"mx.{domain}")
        relay = self.start_relay(port, outbound_level="verify")
        files_before = relay.queue_files()

        _, result = self.send_message(relay, [f"user@{domain}"], marker)

        self.assert_accepted(result)
        delivery = relay.wait_for_log(lab.delivery_pattern(f"user@{domain}"), DELIVERY_TIMEOUT)
        line = delivery.group(0)
        self.assertEqual(delivery["status"], "deferred", f"expected status=deferred in: {line}")
        self.assertRegex(delivery["dsn"], r"^4\.", f"expected a 4.x.x dsn in: {line}")
        self.assertRegex(
            delivery["reason"], r"(?i)certificate|verif|name",
            f"expected the reason to mention the certificate or name in: {line}",
        )

        time.sleep(NO_DELIVERY_WAIT)
        self.assertEqual(receiver.messages(), [], "expected no message at the receiver")
        queued = relay.queue_files() - files_before
        self.assertTrue(queued, f"expected the message to stay in {relay.queue_directory}")
        return delivery

    def test_verify_wrong_name_defers(self):
        cert, key = self.ca.issue("mx.elsewhere.test")

        self.verify_failure_defers("wrongname.test", cert, key, "wrong-name")

    def test_verify_expired_certificate_defers(self):
        cert, key = self.ca.issue("mx.expired.test", expired=True)

        self.verify_failure_defers("expired.test", cert, key, "expired")

    def test_may_without_starttls(self):
        domain = "plain.test"
        mx_address = MX_ADDRESSES[domain]
        port = lab.free_port(mx_address)
        receiver = self.start_receiver("mx", mx_address, port, starttls=False, hostname=f"mx.{domain}")
        relay = self.start_relay(port, outbound_level="may")

        _, result = self.send_message(relay, [f"user@{domain}"], "plain")

        self.assert_accepted(result)
        delivery = relay.wait_for_log(lab.delivery_pattern(f"user@{domain}"), DELIVERY_TIMEOUT)
        line = delivery.group(0)
        self.assertEqual(delivery["status"], "sent", f"expected status=sent in: {line}")
        self.assertEqual(delivery["tls"], "none", f"expected tls=none in: {line}")
        self.assertEqual(delivery["relay"], f"mx.{domain}[{mx_address}]:{port}", f"unexpected relay= in: {line}")
        self.assertIsNone(
            relay.find_log(rf"TLS connection established to mx\.{re.escape(domain)}"),
            "expected no TLS session log line for a receiver without STARTTLS",
        )
        messages = receiver.messages()
        self.assertEqual(len(messages), 1, "expected exactly one message at the receiver")
        self.assertFalse(messages[0][1]["tls"], "expected the receiver to see a session without TLS")

    def test_relay_access_denied(self):
        domain = "remote.test"
        relay = self.start_relay(lab.free_port(MX_ADDRESSES[domain]), mynetworks=["127.0.0.1/32"])
        files_before = relay.queue_files()

        _, denied = self.send_message(relay, [f"user@{domain}"], "denied", local_interface="127.0.0.2")

        rcpt_reply = denied.reply_to(f"RCPT TO:<user@{domain}>")
        self.assertIsNotNone(rcpt_reply, "expected a reply to RCPT; " + denied.describe())
        self.assertRegex(rcpt_reply, r"^554 5\.7\.1", "expected 554 5.7.1 for a client outside mynetworks")
        queued = lab.wait_until(lambda: not (relay.queue_files() - files_before), timeout=2.0)
        self.assertTrue(queued, f"expected no new files in {relay.queue_directory}: {relay.queue_files() - files_before}")

        # Control: the same relay accepts the recipient from inside mynetworks.
        allowed = lab.swaks(RELAY_ADDRESS, relay.port, SENDER, [f"user@{domain}"], extra=["--quit-after", "RCPT"])
        self.assertRegex(
            allowed.reply_to(f"RCPT TO:<user@{domain}>") or "", r"^250 ",
            "expected 250 to RCPT from 127.0.0.1; " + allowed.describe(),
        )

    def test_rejected_recipient_bounces(self):
        domain = "bounce.test"
        mx_address = MX_ADDRESSES[domain]
        port = lab.free_port(mx_address)
        cert, key = self.ca.issue(f"mx.{domain}")
        receiver = self.start_receiver(
            "mx", mx_address, port, cert=cert, key=key, hostname=f"mx.{domain}", reject_rcpt_prefix="bad"
        )
        relay = self.start_relay(port, outbound_level="may")

        _, result = self.send_message(relay, [f"bad@{domain}", f"good@{domain}"], "bounce")

        self.assert_accepted(result)
        bounced = relay.wait_for_log(lab.delivery_pattern(f"bad@{domain}"), DELIVERY_TIMEOUT)
        self.assertEqual(bounced["status"], "bounced", f"expected status=bounced in: {bounced.group(0)}")
        self.assertEqual(bounced["dsn"], "5.1.1", f"expected dsn=5.1.1 in: {bounced.group(0)}")
        self.assertIn("550 5.1.1", bounced["reason"], f"expected the receiver's reply in: {bounced.group(0)}")
        sent = relay.wait_for_log(lab.delivery_pattern(f"good@{domain}"), DELIVERY_TIMEOUT)
        self.assertEqual(sent["status"], "sent", f"expected status=sent in: {sent.group(0)}")
        self.assertEqual(sent["queue_id"], bounced["queue_id"], "expected one queue id for both recipients")

        messages = receiver.messages()
        self.assertEqual(len(messages), 1, "expected exactly one message at the receiver")
        self.assertEqual(messages[0][1]["rcpt_tos"], [f"good@{domain}"])

    def test_a_record_fallback(self):
        domain = "arecord.test"
        mx_address = MX_ADDRESSES[domain]
        port = lab.free_port(mx_address)
        cert, key = self.ca.issue(domain)
        receiver = self.start_receiver("mx", mx_address, port, cert=cert, key=key, hostname=domain)
        relay = self.start_relay(port, outbound_level="may")

        _, result = self.send_message(relay, [f"user@{domain}"], "a-record")

        self.assert_accepted(result)
        delivery = relay.wait_for_log(lab.delivery_pattern(f"user@{domain}"), DELIVERY_TIMEOUT)
        line = delivery.group(0)
        self.assertEqual(delivery["status"], "sent", f"expected status=sent in: {line}")
        self.assertEqual(delivery["relay"], f"{domain}[{mx_address}]:{port}", f"unexpected relay= in: {line}")
        messages = receiver.messages()
        self.assertEqual(len(messages), 1, "expected exactly one message at the receiver")
        self.assertEqual(messages[0][1]["rcpt_tos"], [f"user@{domain}"])

    def test_inbound_starttls(self):
        domain = "starttls.test"
        mx_address = MX_ADDRESSES[domain]
        port = lab.free_port(mx_address)
        cert, key = self.ca.issue(f"mx.{domain}")
        self.start_receiver("mx", mx_address, port, cert=cert, key=key, hostname=f"mx.{domain}")
        relay = self.start_relay(port, outbound_level="may", inbound_level="may")
        recipient = f"user@{domain}"
        message = lab.build_mime_message(SENDER, recipient, "e2e smtplib", "smtplib")
        # The relay's inbound certificate is self-signed, generated at start.
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE

        with smtplib.SMTP(RELAY_ADDRESS, relay.port, local_hostname="client.test", timeout=30) as client:
            client.ehlo()
            self.assertTrue(client.has_extn("starttls"), f"expected STARTTLS in the EHLO reply: {client.ehlo_resp!r}")
            code, reply = client.starttls(context=context)
            self.assertEqual(code, 220, f"expected 220 to STARTTLS, got {code} {reply!r}")
            self.assertRegex(client.sock.version() or "", r"^TLSv1\.[23]$")
            client.ehlo()
            self.assertFalse(client.has_extn("starttls"), "expected no STARTTLS in the EHLO reply inside TLS")
            code, reply = client.mail(SENDER)
            self.assertEqual(code, 250, f"expected 250 to MAIL, got {code} {reply!r}")
            code, reply = client.rcpt(recipient)
            self.assertEqual(code, 250, f"expected 250 to RCPT, got {code} {reply!r}")
            code, reply = client.data(message)
            self.assertEqual(code, 250, f"expected 250 after DATA, got {code} {reply!r}")

        queue_id_in_reply = reply.decode("utf-8", "replace").split()[-1]
        delivery = relay.wait_for_log(lab.delivery_pattern(recipient), DELIVERY_TIMEOUT)
        self.assertEqual(
            delivery["queue_id"], queue_id_in_reply,
            f"expected the DATA reply {reply!r} to end with the queue id of: {delivery.group(0)}",
        )
