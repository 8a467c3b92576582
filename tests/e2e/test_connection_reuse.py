"""Outbound connection reuse: swaks -> tlsrelay -> relayhost (aiosmtpd with STARTTLS).

After a transaction the relay keeps the session open for
connection_cache_time_limit and sends the next message for the same next
hop on it. The receiver numbers its sessions and records the number with
each message.
"""

import re
import time

import lab

SENDER = "app@client.test"
RELAY_ADDRESS = "127.0.0.1"
PROVIDER_ADDRESS = "127.0.0.32"
PROVIDER_HOST = "smtp.reuse-provider.test"
DELIVERY_TIMEOUT = 30.0



class ConnectionReuseTest(lab.LabTestCase):
    ZONES = {
        "reuse-provider.test": [f"{PROVIDER_HOST}. A {PROVIDER_ADDRESS}"],
    }

    def start_provider(self, **options):
        port = lab.free_port(PROVIDER_ADDRESS)
        cert, key = self.ca.issue(PROVIDER_HOST)
        receiver = self.start_receiver("provider", PROVIDER_ADDRESS, port, cert=cert, key=key,
                                       hostname=PROVIDER_HOST, **options)
        return receiver, port

    def start_reuse_relay(self, port, cache_time_limit):
        relayhost = f"[{PROVIDER_HOST}]:{port}"
        tail = "\n".join(["[[smtp.tls_policy]]", f"domain = {lab.toml_string(relayhost)}", 'level = "verify"'])
        return self.start_relay(25, relayhost=relayhost,
                                smtp_extra=[f"connection_cache_time_limit = {lab.toml_string(cache_time_limit)}"],
                                toml_tail=tail)

    def send_and_wait(self, relay, recipient, marker):
        message = lab.build_mime_message(SENDER, recipient, f"reuse {marker}", marker)
        data_file = lab.write_swaks_data_file(self.work_dir / f"{marker}.eml", message)
        result = lab.swaks(RELAY_ADDRESS, relay.port, SENDER, [recipient], data_file=data_file)
        self.assertEqual(result.returncode, 0, "expected swaks to succeed; " + result.describe())
        line = relay.wait_for_log(lab.delivery_pattern(recipient), DELIVERY_TIMEOUT)
        self.assertEqual(line["status"], "sent", line.string)
        self.assertEqual(line["tls"], "verified", "a reused session keeps its trust level; " + line.string)
        return line

    def session_numbers(self, receiver, count):
        messages = receiver.wait_for_messages(count, DELIVERY_TIMEOUT)
        self.assertEqual(len(messages), count)
        for _, metadata in messages:
            self.assertTrue(metadata["tls"], "every message must arrive over TLS: " + repr(metadata))
        return [metadata["session"] for _, metadata in messages]

    def test_messages_share_one_session(self):
        receiver, port = self.start_provider()
        relay = self.start_reuse_relay(port, "30s")

        for number in range(3):
            self.send_and_wait(relay, f"user{number}@elsewhere.test", f"shared-{number}")

        sessions = self.session_numbers(receiver, 3)
        self.assertEqual(sessions, [1, 1, 1], "expected one session to carry all three messages")
        handshakes = re.findall(r"Verified TLS connection established to ", relay.log_text())
        self.assertEqual(len(handshakes), 1, "expected one TLS handshake for three messages")

    def test_cache_time_limit_zero_closes_sessions(self):
        receiver, port = self.start_provider()
        relay = self.start_reuse_relay(port, "0")

        for number in range(2):
            self.send_and_wait(relay, f"user{number}@elsewhere.test", f"closed-{number}")

        sessions = self.session_numbers(receiver, 2)
        self.assertEqual(sessions, [1, 2], "expected a new session per message")

    def test_session_closed_by_server_is_replaced(self):
        # The receiver sends 421 and closes a session that stays silent for
        # one second, while the relay would keep it for 30.
        receiver, port = self.start_provider(idle_timeout=1)
        relay = self.start_reuse_relay(port, "30s")

        self.send_and_wait(relay, "first@elsewhere.test", "before-timeout")
        time.sleep(2.5)
        self.send_and_wait(relay, "second@elsewhere.test", "after-timeout")

        sessions = self.session_numbers(receiver, 2)
        self.assertEqual(sessions, [1, 2], "expected a new session after the server closed the old one")
        self.assertNotIn("status=deferred", relay.log_text(),
                         "a session closed while idle must not defer the next message")
