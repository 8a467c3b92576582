"""End-to-end checks of the inbound server with real clients (smtplib,
swaks, Python's ssl module): STARTTLS injection, AUTH over TLS, implicit
TLS, SNI certificate choice and pipelining. Deliveries go through Unbound
to an aiosmtpd receiver, as in test_relay.
"""

import email
import os
import re
import signal
import smtplib
import socket
import ssl
import subprocess

import lab

SENDER = "sender@client.test"
DOMAIN = "inbound.test"
MX_ADDRESS = "127.0.0.40"
DELIVERY_TIMEOUT = 30.0


def unverified_context():
    # The relay's default inbound certificate is self-signed, made at start.
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def relay_command_environment():
    """Return this process's environment without TLSRELAY_* variables, which
    would override the relay's configuration (TLSRELAY_BIN among them)."""
    return {name: value for name, value in os.environ.items() if not name.startswith("TLSRELAY_")}


def read_reply(sock_file):
    """Read one SMTP reply from a file object; return its lines as text."""
    lines = []
    while True:
        line = sock_file.readline().decode("utf-8", "replace")
        if not line:
            return lines
        lines.append(line.rstrip("\r\n"))
        if len(line) < 4 or line[3] != "-":
            return lines


class InboundTest(lab.LabTestCase):
    # The UTF-8 domain bücher.test is published as its A-label, as it is stored in DNS.
    ZONES = {
        DOMAIN: [f"{DOMAIN}. MX 10 mx.{DOMAIN}.", f"mx.{DOMAIN}. A {MX_ADDRESS}"],
        "xn--bcher-kva.test": ["xn--bcher-kva.test. MX 10 mx.inbound.test."],
    }

    def start_lab_relay(self, **options):
        port = lab.free_port(MX_ADDRESS)
        cert, key = self.ca.issue(f"mx.{DOMAIN}")
        receiver = self.start_receiver("mx", MX_ADDRESS, port, cert=cert, key=key, hostname=f"mx.{DOMAIN}")
        relay = self.start_relay(port, **options)
        return relay, receiver

    def create_users_file(self, user, password):
        users = self.work_dir / "users"
        completed = subprocess.run(
            [lab.relay_binary(), "passwd", user, "--file", str(users)],
            input=password + "\n", capture_output=True, text=True, timeout=30, env=relay_command_environment(),
        )
        self.assertEqual(completed.returncode, 0, f"tlsrelay passwd failed: {completed.stderr}")
        self.assertTrue(users.read_text().startswith(f"{user}:$y$"), "expected a yescrypt hash in the users file")
        return users

    def test_starttls_injection_is_discarded(self):
        relay, _ = self.start_lab_relay()
        with socket.create_connection(("127.0.0.1", relay.port), timeout=10) as raw:
            plain = raw.makefile("rb")
            self.assertTrue(read_reply(plain)[0].startswith("220"))
            raw.sendall(b"EHLO client.test\r\n")
            read_reply(plain)
            # The injected RSET arrives in the same write as STARTTLS.
            raw.sendall(b"STARTTLS\r\nRSET\r\n")
            self.assertEqual(read_reply(plain), ["220 2.0.0 Ready to start TLS"])
            with unverified_context().wrap_socket(raw, server_hostname="relay.example.net") as tls:
                encrypted = tls.makefile("rb")
                tls.sendall(b"NOOP\r\n")
                # Had the RSET survived, its 250 would come first, then the NOOP's.
                self.assertEqual(read_reply(encrypted), ["250 2.0.0 Ok"])
                tls.sendall(b"MAIL FROM:<a@client.test>\r\n")
                self.assertEqual(read_reply(encrypted)[0][:3], "503", "expected EHLO to be required again after TLS")
        self.assertRegex(relay.log_text(), r"discarding plaintext pipelined after STARTTLS")

    def test_auth_over_starttls_opens_relay(self):
        users = self.create_users_file("bob", "s3cret pass")
        relay, receiver = self.start_lab_relay(
            mynetworks=["127.0.0.1/32"], smtpd_extra=[f"auth_users_file = {lab.toml_string(users)}"],
        )
        recipient = f"user@{DOMAIN}"
        with smtplib.SMTP("127.0.0.1", relay.port, local_hostname="client.test", timeout=30,
                          source_address=("127.0.0.2", 0)) as client:
            client.ehlo()
            self.assertFalse(client.has_extn("auth"), "AUTH must not be offered before TLS")
            client.starttls(context=unverified_context())
            client.ehlo()
            self.assertIn("PLAIN", client.esmtp_features.get("auth", ""))
            code, _ = client.docmd("MAIL", f"FROM:<{SENDER}>")
            self.assertEqual(code, 250)
            code, reply = client.docmd("RCPT", f"TO:<{recipient}>")
            self.assertEqual(code, 554, f"expected relay access denied before AUTH, got {code} {reply!r}")
            client.rset()
            with self.assertRaises(smtplib.SMTPAuthenticationError):
                client.login("bob", "wrong")
            client.login("bob", "s3cret pass")
            client.sendmail(SENDER, [recipient], b"Subject: auth\r\n\r\nsent after AUTH\r\n")

        self.assertTrue(receiver.wait_for_messages(1, DELIVERY_TIMEOUT), "expected the message at the receiver")
        raw, _ = receiver.messages()[0]
        self.assertIn(b"with ESMTPSA id", raw, "expected the Received header to name ESMTPSA")
        log = relay.log_text()
        self.assertRegex(log, r"sasl_username=bob")
        self.assertRegex(log, r"SASL authentication failed for user bob")
        self.assertNotIn("s3cret", log, "the password must never be logged")
        self.assertNotIn("wrong", log.replace("wrong-name", ""), "a failed password must never be logged")

    def test_implicit_tls_listener(self):
        port = lab.free_port("127.0.0.1")
        relay, receiver = self.start_lab_relay(
            toml_tail=f'[[smtpd.listener]]\naddress = "127.0.0.1:{port}"\ntls = "implicit"\n',
        )
        lab.wait_until(lambda: relay.find_log(rf"listening on 127\.0\.0\.1:{port}"), 10)
        with smtplib.SMTP_SSL("127.0.0.1", port, local_hostname="client.test", timeout=30,
                              context=unverified_context()) as client:
            code, _ = client.ehlo()
            self.assertEqual(code, 250)
            self.assertFalse(client.has_extn("starttls"), "no STARTTLS inside implicit TLS")
            client.sendmail(SENDER, [f"user@{DOMAIN}"], b"Subject: implicit\r\n\r\nover port 465 style TLS\r\n")
        self.assertTrue(receiver.wait_for_messages(1, DELIVERY_TIMEOUT), "expected the message at the receiver")

    def test_sni_selects_the_certificate(self):
        cert, key = self.ca.issue("mail.customer.test", file_stem="sni-customer")
        relay, _ = self.start_lab_relay(
            toml_tail=(
                "[[smtpd.tls_sni]]\n"
                'name = "mail.customer.test"\n'
                f"cert_file = {lab.toml_string(cert)}\n"
                f"key_file = {lab.toml_string(key)}\n"
            ),
        )
        for server_name, expected in (("mail.customer.test", "mail.customer.test"), ("other.test", "relay.example.net")):
            with socket.create_connection(("127.0.0.1", relay.port), timeout=10) as raw:
                plain = raw.makefile("rb")
                read_reply(plain)
                raw.sendall(b"EHLO client.test\r\n")
                read_reply(plain)
                raw.sendall(b"STARTTLS\r\n")
                self.assertEqual(read_reply(plain)[0][:3], "220")
                with unverified_context().wrap_socket(raw, server_hostname=server_name) as tls:
                    pem = ssl.DER_cert_to_PEM_cert(tls.getpeercert(binary_form=True))
            subject = subprocess.run(
                ["openssl", "x509", "-noout", "-subject"], input=pem, capture_output=True, text=True, timeout=30,
            ).stdout
            self.assertIn(f"CN = {expected}", subject, f"SNI {server_name}: expected the certificate for {expected}")

    def test_swaks_pipelining(self):
        relay, receiver = self.start_lab_relay()
        result = lab.swaks("127.0.0.1", relay.port, SENDER, [f"a@{DOMAIN}", f"b@{DOMAIN}"],
                           tls=True, extra=["--pipeline"])
        self.assertEqual(result.returncode, 0, result.describe())
        self.assertTrue(receiver.wait_for_messages(1, DELIVERY_TIMEOUT), "expected the message at the receiver")
        _, metadata = receiver.messages()[0]
        self.assertEqual(sorted(metadata["rcpt_tos"]), [f"a@{DOMAIN}", f"b@{DOMAIN}"])

    def test_sendmail_command_submits_from_stdin(self):
        relay, receiver = self.start_lab_relay()
        message = (
            f"To: Alice <alice@{DOMAIN}>, bob@{DOMAIN}\n"
            f"Bcc: hidden@{DOMAIN}\n"
            "Subject: from cron\n"
            "\n"
            "first line\n"
            ".leading dot stays\n"
        )
        completed = subprocess.run(
            [lab.relay_binary(), "sendmail", "-t", "-i", "-f", "cron@client.test", "--config", str(relay.config_path)],
            input=message, capture_output=True, text=True, timeout=60, env=relay_command_environment(),
        )
        self.assertEqual(completed.returncode, 0, f"tlsrelay sendmail failed: {completed.stderr}")
        self.assertTrue(receiver.wait_for_messages(1, DELIVERY_TIMEOUT), "expected the message at the receiver")
        raw, metadata = receiver.messages()[0]
        self.assertEqual(sorted(metadata["rcpt_tos"]), sorted([f"alice@{DOMAIN}", f"bob@{DOMAIN}", f"hidden@{DOMAIN}"]))
        self.assertEqual(metadata["mail_from"], "cron@client.test")
        headers = raw.split(b"\r\n\r\n", 1)[0]
        self.assertIn(b"\r\nDate: ", headers, "expected sendmail to add a Date header")
        self.assertIn(b"\r\nMessage-ID: <", headers, "expected sendmail to add a Message-ID header")
        self.assertIn(b"From: cron@client.test", headers, "expected sendmail to add a From header")
        self.assertNotIn(b"Bcc:", headers, "the Bcc header must be removed")
        self.assertIn(b"\r\n.leading dot stays\r\n", raw)

    def test_healthcheck_follows_the_relay(self):
        relay, _ = self.start_lab_relay()
        command = [lab.relay_binary(), "healthcheck", "--config", str(relay.config_path)]
        environment = relay_command_environment()
        self.assertEqual(subprocess.run(command, capture_output=True, timeout=30, env=environment).returncode, 0)
        relay.stop()
        stopped = subprocess.run(command, capture_output=True, text=True, timeout=30, env=environment)
        self.assertEqual(stopped.returncode, 1)
        self.assertIn("cannot connect to the relay", stopped.stderr)


    def test_smtputf8_relayed_unchanged_via_a_label_route(self):
        relay, receiver = self.start_lab_relay()
        sender = "jürgen@client.test"
        recipient = "jörg@bücher.test"
        message = "Subject: =?utf-8?q?Gr=C3=BC=C3=9Fe?=\r\nFrom: jürgen@client.test\r\n\r\nHallo Jörg\r\n".encode("utf-8")
        with smtplib.SMTP("127.0.0.1", relay.port, local_hostname="client.test", timeout=30) as client:
            client.ehlo()
            self.assertTrue(client.has_extn("smtputf8"))
            client.sendmail(sender, [recipient], message, mail_options=["SMTPUTF8", "BODY=8BITMIME"])
        self.assertTrue(receiver.wait_for_messages(1, DELIVERY_TIMEOUT), "expected the message at the receiver")
        raw, metadata = receiver.messages()[0]
        self.assertEqual(metadata["rcpt_tos"], [recipient], "the UTF-8 address must arrive unchanged")
        self.assertEqual(metadata["mail_from"], sender)
        self.assertIn("SMTPUTF8", metadata.get("mail_options", []))
        self.assertTrue(raw.endswith(message), "the content after the Received header must arrive unchanged")

    def test_bdat_message_is_relayed(self):
        relay, receiver = self.start_lab_relay()
        chunks = [b"Subject: chunked\r\n\r\n", b".first line, not stuffed\r\nsecond line\r\n"]
        with socket.create_connection(("127.0.0.1", relay.port), timeout=10) as raw:
            replies = raw.makefile("rb")
            read_reply(replies)
            raw.sendall(b"EHLO client.test\r\n")
            self.assertIn("250 CHUNKING", read_reply(replies))
            raw.sendall(f"MAIL FROM:<{SENDER}>\r\nRCPT TO:<user@{DOMAIN}>\r\n".encode())
            read_reply(replies)
            read_reply(replies)
            raw.sendall(b"BDAT %d\r\n" % len(chunks[0]) + chunks[0])
            self.assertEqual(read_reply(replies)[0][:3], "250")
            raw.sendall(b"BDAT %d LAST\r\n" % len(chunks[1]) + chunks[1])
            self.assertRegex(read_reply(replies)[0], r"^250 2\.0\.0 Ok: queued as ")
        self.assertTrue(receiver.wait_for_messages(1, DELIVERY_TIMEOUT), "expected the message at the receiver")
        message, _ = receiver.messages()[0]
        self.assertTrue(message.endswith(b"".join(chunks)), f"unexpected content: {message!r}")

    def test_quoted_local_part_with_angle_bracket_is_relayed(self):
        # RFC 5321 section 4.1.2: a quoted local part may contain '>'.
        relay, receiver = self.start_lab_relay()
        sender = '"a>b"@client.test'
        recipient = f'"c>d"@{DOMAIN}'
        with socket.create_connection(("127.0.0.1", relay.port), timeout=10) as raw:
            replies = raw.makefile("rb")
            read_reply(replies)
            raw.sendall(b"EHLO client.test\r\n")
            read_reply(replies)
            raw.sendall(f"MAIL FROM:<{sender}> SIZE=100\r\n".encode())
            self.assertEqual(read_reply(replies), ["250 2.1.0 Ok"])
            raw.sendall(f"RCPT TO:<{recipient}>\r\n".encode())
            self.assertEqual(read_reply(replies), ["250 2.1.5 Ok"])
            # A quote left open still gets a 501 that shows the address read.
            raw.sendall(f'RCPT TO:<"e>f@{DOMAIN}>\r\n'.encode())
            self.assertEqual(read_reply(replies), ['501 5.1.3 Bad address syntax <"e>'])
            raw.sendall(b"DATA\r\n")
            self.assertEqual(read_reply(replies)[0][:3], "354")
            raw.sendall(b"Subject: quoted\r\n\r\nbody\r\n.\r\n")
            self.assertRegex(read_reply(replies)[0], r"^250 2\.0\.0 Ok: queued as ")
            raw.sendall(b"QUIT\r\n")
            read_reply(replies)
        self.assertTrue(receiver.wait_for_messages(1, DELIVERY_TIMEOUT), "expected the message at the receiver")
        _, metadata = receiver.messages()[0]
        self.assertEqual(metadata["mail_from"], sender)
        self.assertEqual(metadata["rcpt_tos"], [recipient])
        relay.wait_for_log(re.escape(f"to=<{recipient}>") + r".*status=sent", DELIVERY_TIMEOUT)

    def test_control_characters_are_escaped_in_the_log(self):
        relay, _ = self.start_lab_relay()
        with socket.create_connection(("127.0.0.1", relay.port), timeout=10) as raw:
            replies = raw.makefile("rb")
            read_reply(replies)
            raw.sendall(b"EHLO client\x7f.test\r\n")
            self.assertEqual(read_reply(replies)[-1], "250 CHUNKING")
            raw.sendall(b"MAIL FROM:<a\x7fb\x1b[2J\xc2\x9b@client.test>\r\n")
            self.assertEqual(read_reply(replies)[0][:10], "501 5.1.3 ")
            raw.sendall(b"QUIT\r\n")
            read_reply(replies)
        line = relay.wait_for_log(r"NOQUEUE: reject: MAIL from .*", DELIVERY_TIMEOUT).group(0)
        self.assertIn(r"MAIL FROM:<a\x7Fb\x1B[2J\xC2\x9B@client.test>", line)
        self.assertIn(r"helo=<client\x7F.test>", line)
        log = relay.log_path.read_bytes()
        for raw_bytes in (b"\x7f", b"\x1b", b"\xc2\x9b"):
            self.assertNotIn(raw_bytes, log, f"the log must not contain the raw bytes {raw_bytes!r}")

    def test_relay_domain_uses_its_transport(self):
        port = lab.free_port(MX_ADDRESS)
        cert, key = self.ca.issue(f"mx.{DOMAIN}")
        receiver = self.start_receiver("mx", MX_ADDRESS, port, cert=cert, key=key, hostname=f"mx.{DOMAIN}")
        # hosted.test has no DNS records at all: only the transport entry names its next hop.
        relay = self.start_relay(
            port, mynetworks=["127.0.0.1/32"],
            toml_head='relay_domains = ["hosted.test"]',
            toml_tail=f'[[transport]]\ndomain = "hosted.test"\nnexthop = "[{MX_ADDRESS}]:{port}"\n',
        )
        with smtplib.SMTP("127.0.0.1", relay.port, local_hostname="client.test", timeout=30,
                          source_address=("127.0.0.2", 0)) as client:
            client.ehlo()
            code, _ = client.docmd("MAIL", f"FROM:<{SENDER}>")
            self.assertEqual(code, 250)
            code, reply = client.docmd("RCPT", f"TO:<user@{DOMAIN}>")
            self.assertEqual(code, 554, f"expected relay access denied for a domain outside relay_domains: {reply!r}")
            code, reply = client.docmd("RCPT", "TO:<user@hosted.test>")
            self.assertEqual(code, 250, f"expected relay_domains to accept the recipient: {reply!r}")
            code, _ = client.data(b"Subject: hosted\r\n\r\nfor a relay domain\r\n")
            self.assertEqual(code, 250)
        self.assertTrue(receiver.wait_for_messages(1, DELIVERY_TIMEOUT), "expected delivery through the transport")
        line = relay.wait_for_log(r"to=<user@hosted\.test>.*status=sent.*", DELIVERY_TIMEOUT)
        self.assertIn(f"relay={MX_ADDRESS}[{MX_ADDRESS}]:{port}", line.group(0))


    def test_sighup_reloads_or_keeps_the_configuration(self):
        relay, receiver = self.start_lab_relay()
        lab.swaks("127.0.0.1", relay.port, SENDER, [f"before@{DOMAIN}"], tls=False)
        self.assertTrue(receiver.wait_for_messages(1, DELIVERY_TIMEOUT), "expected delivery before the reload")

        def rcpt_reply():
            def accepting():
                try:
                    with socket.create_connection(("127.0.0.1", relay.port), timeout=1):
                        return True
                except OSError:
                    return False
            self.assertTrue(lab.wait_until(accepting, 10), "the relay stopped accepting connections")
            with smtplib.SMTP("127.0.0.1", relay.port, local_hostname="client.test", timeout=30) as client:
                client.ehlo()
                client.docmd("MAIL", f"FROM:<{SENDER}>")
                return client.docmd("RCPT", f"TO:<after@{DOMAIN}>")[0]

        # A valid new configuration takes effect: 127.0.0.1 may no longer relay.
        original = relay.config_path.read_text()
        relay.config_path.write_text(original.replace('mynetworks = ["127.0.0.0/8", "[::1]/128"]',
                                                      'mynetworks = ["127.0.0.9/32"]'))
        os.kill(relay.process.pid, signal.SIGHUP)
        relay.wait_for_log(r"received SIGHUP, reloading the configuration", 10)
        self.assertTrue(lab.wait_until(lambda: rcpt_reply() == 554, 10), "expected the new mynetworks to apply")

        # An invalid one is reported and the running configuration stays.
        relay.config_path.write_text(original.replace('tls_security_level = "may"', 'tls_security_level = "sometimes"', 1))
        os.kill(relay.process.pid, signal.SIGHUP)
        relay.wait_for_log(r"reload failed, keeping the running configuration: .*sometimes", 10)
        self.assertEqual(rcpt_reply(), 554, "expected the configuration before the failed reload to stay")
        self.assertTrue(relay.process.running(), "the relay must keep running after a failed reload")


class OldReceiverTest(lab.LabTestCase):
    """Relaying to a receiver that offers neither 8BITMIME nor SMTPUTF8."""

    ZONES = {DOMAIN: [f"{DOMAIN}. MX 10 mx.{DOMAIN}.", f"mx.{DOMAIN}. A {MX_ADDRESS}"]}

    def start_old_receiver_lab(self):
        port = lab.free_port(MX_ADDRESS)
        cert, key = self.ca.issue(f"mx.{DOMAIN}")
        receiver = self.start_receiver("mx", MX_ADDRESS, port, cert=cert, key=key, hostname=f"mx.{DOMAIN}",
                                       seven_bit=True)
        return self.start_relay(port), receiver

    def test_8bit_content_is_converted_to_quoted_printable(self):
        relay, receiver = self.start_old_receiver_lab()
        text = "Grüße aus Köln — ½ €\r\n" + "x" * 1200 + "\r\n"
        message = (
            "Subject: 8bit\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n"
            "Content-Transfer-Encoding: 8bit\r\n\r\n" + text
        ).encode("utf-8")
        with smtplib.SMTP("127.0.0.1", relay.port, local_hostname="client.test", timeout=30) as client:
            client.ehlo()
            client.sendmail(SENDER, [f"user@{DOMAIN}"], message, mail_options=["BODY=8BITMIME"])
        self.assertTrue(receiver.wait_for_messages(1, DELIVERY_TIMEOUT), "expected the message at the receiver")
        raw, _ = receiver.messages()[0]
        self.assertTrue(all(byte < 128 for byte in raw), "expected 7-bit content at a receiver without 8BITMIME")
        self.assertIn(b"Content-Transfer-Encoding: quoted-printable", raw)
        self.assertNotIn(b"Content-Transfer-Encoding: 8bit", raw)
        parsed = email.message_from_bytes(raw)
        self.assertEqual(parsed.get_payload(decode=True).decode("utf-8").replace("\r\n", "\n"), text.replace("\r\n", "\n"))

    def test_smtputf8_message_bounces_at_an_old_receiver(self):
        relay, receiver = self.start_old_receiver_lab()
        recipient = f"jörg@{DOMAIN}"
        with smtplib.SMTP("127.0.0.1", relay.port, local_hostname="client.test", timeout=30) as client:
            client.ehlo()
            client.sendmail(SENDER, [recipient], "Subject: utf8\r\n\r\nhi\r\n".encode("utf-8"),
                            mail_options=["SMTPUTF8"])
        line = relay.wait_for_log(r"to=<" + re.escape(recipient) + r">.*status=bounced.*", DELIVERY_TIMEOUT)
        self.assertIsNotNone(line, "expected the UTF-8 recipient to bounce")
        self.assertIn("dsn=5.6.7", line.group(0))
        self.assertIn("SMTPUTF8 is required, but was not offered by host", line.group(0))
        self.assertEqual(receiver.messages(), [])
