"""Outbound edge cases: swaks -> tlsrelay -> a receiver that misbehaves.

- A server that replies 220 to STARTTLS and then resets the connection
  failed TLS, so at level may the relay retries in plaintext instead of
  deferring. A small in-process fake plays that server, because no real
  MTA resets on purpose.
- Every recipient rejected on a reused session: the relay ends the open
  transaction with RSET, so the next message on the session is accepted.
- Mail to an address literal sends no TLS SNI (RFC 6066 section 3).
- A server that offers PIPELINING gets MAIL, RCPT and DATA in one go
  (RFC 2920): the fake server answers none of them before it has read
  DATA, so a client that waited for each reply would time out.
"""

import re
import socket
import struct
import threading

import lab

SENDER = "app@client.test"
RELAY_ADDRESS = "127.0.0.1"
DELIVERY_TIMEOUT = 30.0
RESET_ADDRESS = "127.0.0.33"
REJECT_ADDRESS = "127.0.0.34"
LITERAL_ADDRESS = "127.0.0.35"
PIPELINING_ADDRESS = "127.0.0.36"



class FakeServer:
    """One-thread SMTP server on a loopback address; subclasses define
    _session(connection), which runs once per connection."""

    SOCKET_TIMEOUT = 10

    def __init__(self, address, port):
        self.listener = socket.create_server((address, port))
        self.listener.settimeout(0.2)
        self.messages = []
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def stop(self):
        self.stopping.set()
        self.thread.join(timeout=5)
        self.listener.close()

    def _serve(self):
        while not self.stopping.is_set():
            try:
                connection, _ = self.listener.accept()
            except socket.timeout:
                continue
            with connection:
                connection.settimeout(self.SOCKET_TIMEOUT)
                try:
                    self._session(connection)
                except OSError:
                    pass


class ResetAfterStarttlsServer(FakeServer):
    """SMTP server that offers STARTTLS, replies 220 to it and resets the
    connection. Without STARTTLS it accepts one message per session."""

    def __init__(self, address, port):
        self.starttls_resets = 0
        super().__init__(address, port)

    def _session(self, connection):
        reader = connection.makefile("rb")
        connection.sendall(b"220 reset.test ESMTP fake\r\n")
        data = None
        for raw in reader:
            line = raw.rstrip(b"\r\n")
            verb = line.split(b" ", 1)[0].upper()
            if data is not None:
                if line == b".":
                    self.messages.append(b"\r\n".join(data))
                    data = None
                    connection.sendall(b"250 2.0.0 stored\r\n")
                else:
                    data.append(line)
                continue
            if verb == b"EHLO":
                connection.sendall(b"250-reset.test\r\n250-8BITMIME\r\n250 STARTTLS\r\n")
            elif verb == b"STARTTLS":
                connection.sendall(b"220 2.0.0 go ahead\r\n")
                # SO_LINGER with a zero timeout turns close() into a reset.
                connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                self.starttls_resets += 1
                return
            elif verb == b"DATA":
                data = []
                connection.sendall(b"354 go on\r\n")
            elif verb == b"QUIT":
                connection.sendall(b"221 bye\r\n")
                return
            else:
                connection.sendall(b"250 2.0.0 ok\r\n")


class PipeliningServer(FakeServer):
    """SMTP server that offers PIPELINING and delays its replies to MAIL and
    RCPT until DATA arrives, recording the command groups it read."""

    SOCKET_TIMEOUT = 5

    def __init__(self, address, port, data_reply=b"354 go on"):
        self.groups = []
        self.data_reply = data_reply
        super().__init__(address, port)

    def _session(self, connection):
        reader = connection.makefile("rb")
        connection.sendall(b"220 pipelining.test ESMTP fake\r\n")
        pending_verbs = []  # MAIL and RCPT not yet replied to
        for raw in reader:
            line = raw.rstrip(b"\r\n")
            verb = line.split(b" ", 1)[0].upper()
            if verb == b"EHLO":
                connection.sendall(b"250-pipelining.test\r\n250-PIPELINING\r\n250 8BITMIME\r\n")
            elif verb in (b"MAIL", b"RCPT"):
                pending_verbs.append(verb.decode())
            elif verb == b"DATA":
                self.groups.append(pending_verbs + ["DATA"])
                replies = b"250 2.1.0 ok\r\n" * len(pending_verbs) + self.data_reply + b"\r\n"
                connection.sendall(replies)
                pending_verbs = []
                if not self.data_reply.startswith(b"354"):
                    continue
                data = []
                for content in reader:
                    if content.rstrip(b"\r\n") == b".":
                        break
                    data.append(content)
                self.messages.append(b"".join(data))
                connection.sendall(b"250 2.0.0 stored\r\n")
            elif verb == b"QUIT":
                connection.sendall(b"221 bye\r\n")
                return
            else:
                connection.sendall(b"250 2.0.0 ok\r\n")


class ClientEdgesTest(lab.LabTestCase):
    ZONES = {
        "reset.test": ["reset.test. MX 10 mx.reset.test.", f"mx.reset.test. A {RESET_ADDRESS}"],
        "reject.test": ["reject.test. MX 10 mx.reject.test.", f"mx.reject.test. A {REJECT_ADDRESS}"],
        "pipelining.test": ["pipelining.test. MX 10 mx.pipelining.test.",
                            f"mx.pipelining.test. A {PIPELINING_ADDRESS}"],
    }

    def send(self, relay, recipient, marker):
        message = lab.build_mime_message(SENDER, recipient, f"edges {marker}", marker)
        data_file = lab.write_swaks_data_file(self.work_dir / f"{marker}.eml", message)
        result = lab.swaks(RELAY_ADDRESS, relay.port, SENDER, [recipient], data_file=data_file)
        self.assertEqual(result.returncode, 0, "expected swaks to succeed; " + result.describe())

    def test_reset_after_starttls_retries_in_plaintext(self):
        port = lab.free_port(RESET_ADDRESS)
        server = ResetAfterStarttlsServer(RESET_ADDRESS, port)
        self.addCleanup(server.stop)
        relay = self.start_relay(port)

        self.send(relay, "user@reset.test", "reset")
        line = relay.wait_for_log(lab.delivery_pattern("user@reset.test"), DELIVERY_TIMEOUT)
        self.assertEqual(line["status"], "sent", "level may must retry in plaintext; " + line.string)
        self.assertEqual(line["tls"], "none", line.string)
        self.assertEqual(server.starttls_resets, 1)
        self.assertEqual(len(server.messages), 1)
        self.assertIsNotNone(relay.find_log(r"retrying in plaintext as level may allows"))

    def test_rejected_recipients_leave_session_usable(self):
        port = lab.free_port(REJECT_ADDRESS)
        cert, key = self.ca.issue("mx.reject.test")
        receiver = self.start_receiver("reject", REJECT_ADDRESS, port, cert=cert, key=key,
                                       hostname="mx.reject.test", reject_rcpt_prefix="bad")
        relay = self.start_relay(port, smtp_extra=['connection_cache_time_limit = "30s"'])

        self.send(relay, "bad1@reject.test", "rejected")
        line = relay.wait_for_log(lab.delivery_pattern("bad1@reject.test"), DELIVERY_TIMEOUT)
        self.assertEqual(line["status"], "bounced", line.string)
        self.send(relay, "good@reject.test", "accepted")
        line = relay.wait_for_log(lab.delivery_pattern("good@reject.test"), DELIVERY_TIMEOUT)

        self.assertEqual(line["status"], "sent", "the next message on the session must be accepted; " + line.string)
        # Queue ids and millisecond timestamps may contain "503"; a remote
        # reply reads "said: 503".
        self.assertNotIn("said: 503", relay.log_text())
        delivered = [metadata for _, metadata in receiver.messages() if metadata["rcpt_tos"] == ["good@reject.test"]]
        self.assertEqual(len(delivered), 1)
        self.assertEqual(delivered[0]["session"], 1, "the session of the rejected message must carry the next one")

    def test_pipelining_server_gets_one_command_group(self):
        port = lab.free_port(PIPELINING_ADDRESS)
        server = PipeliningServer(PIPELINING_ADDRESS, port)
        self.addCleanup(server.stop)
        relay = self.start_relay(port)

        recipients = ["one@pipelining.test", "two@pipelining.test"]
        message = lab.build_mime_message(SENDER, recipients[0], "edges pipelining", "pipelining")
        data_file = lab.write_swaks_data_file(self.work_dir / "pipelining.eml", message)
        result = lab.swaks(RELAY_ADDRESS, relay.port, SENDER, recipients, data_file=data_file)
        self.assertEqual(result.returncode, 0, "expected swaks to succeed; " + result.describe())
        for recipient in recipients:
            line = relay.wait_for_log(lab.delivery_pattern(recipient), DELIVERY_TIMEOUT)
            self.assertEqual(line["status"], "sent", "the pipelined transaction must deliver; " + line.string)

        self.assertEqual(server.groups, [["MAIL", "RCPT", "RCPT", "DATA"]])
        self.assertEqual(len(server.messages), 1)
        self.assertIn(b"pipelining", server.messages[0])

    def test_success_reply_to_data_is_not_delivery(self):
        # A server that replies 250 to DATA got no content: counting that
        # as delivery would lose the message.
        port = lab.free_port(PIPELINING_ADDRESS)
        server = PipeliningServer(PIPELINING_ADDRESS, port, data_reply=b"250 2.0.0 ok")
        self.addCleanup(server.stop)
        relay = self.start_relay(port)

        self.send(relay, "user@pipelining.test", "broken-data")
        line = relay.wait_for_log(lab.delivery_pattern("user@pipelining.test"), DELIVERY_TIMEOUT)
        self.assertEqual(line["status"], "deferred", line.string)
        self.assertIn("unexpected reply to DATA", line.string)
        self.assertEqual(server.messages, [])

    def test_address_literal_sends_no_sni(self):
        port = lab.free_port(LITERAL_ADDRESS)
        cert, key = self.ca.issue("mx.literal.test")
        receiver = self.start_receiver("literal", LITERAL_ADDRESS, port, cert=cert, key=key,
                                       hostname="mx.literal.test")
        relay = self.start_relay(port)

        recipient = f"user@[{LITERAL_ADDRESS}]"
        self.send(relay, recipient, "literal")
        line = relay.wait_for_log(lab.delivery_pattern(recipient), DELIVERY_TIMEOUT)
        self.assertEqual(line["status"], "sent", line.string)

        messages = receiver.wait_for_messages(1, DELIVERY_TIMEOUT)
        self.assertTrue(messages[0][1]["tls"], "the session must use TLS")
        self.assertIsNone(messages[0][1]["tls_server_name"], "no SNI may name an address literal")
