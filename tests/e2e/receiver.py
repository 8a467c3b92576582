"""Receiving MTA for the tlsrelay end-to-end tests, built on aiosmtpd.

Run with Debian's interpreter, which can import python3-aiosmtpd:

    /usr/bin/python3 receiver.py --listen 127.0.0.10:2525 --cert C --key K --maildir DIR

It offers STARTTLS (unless --no-tls), accepts every sender and recipient
except those rejected by --reject-rcpt-prefix, and stores message n as
DIR/<n>.eml (the DATA bytes exactly as received, after dot-unstuffing) and
DIR/<n>.json (envelope and TLS details). The .json file is written last and
renamed into place, so its presence means both files are complete. With
--auth USER:PASSWORD it requires SMTP AUTH and appends each attempt's
mechanism and result to DIR/auth.log. --implicit-tls starts TLS at connect.
--idle-timeout closes sessions that stay silent that long, with a 421.
Prints "ready" to stdout once listening and exits on SIGTERM or SIGINT.
"""

import argparse
import itertools
import json
import logging
import os
import signal
import ssl
import sys
import threading

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword


class MaildirHandler:
    """aiosmtpd handler that stores each message and can reject recipients by prefix."""

    def __init__(self, maildir, reject_rcpt_prefix, server_names):
        self.maildir = maildir
        self.reject_rcpt_prefix = reject_rcpt_prefix
        self.server_names = server_names
        self.numbers = itertools.count(1)
        self.session_numbers = itertools.count(1)
        self.lock = threading.Lock()

    def number_session(self, session):
        # aiosmtpd makes one Session object per connection; the number,
        # given at the session's first RCPT, shows which messages one
        # connection carried, rejected ones included.
        with self.lock:
            if not hasattr(session, "receiver_session_number"):
                session.receiver_session_number = next(self.session_numbers)

    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        # aiosmtpd reads pipelined commands correctly but does not announce
        # PIPELINING. Announcing it makes the relay's client pipeline, as it
        # does with Postfix. This hook form must also record the EHLO name.
        session.host_name = hostname
        return responses[:-1] + ["250-PIPELINING"] + responses[-1:]

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        self.number_session(session)
        local_part = address.rsplit("@", 1)[0]
        if self.reject_rcpt_prefix and local_part.startswith(self.reject_rcpt_prefix):
            return f"550 5.1.1 <{address}>: Recipient address rejected: User unknown"
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server, session, envelope):
        self.number_session(session)
        with self.lock:
            number = next(self.numbers)
        metadata = {
            "session": session.receiver_session_number,
            "mail_from": envelope.mail_from,
            "rcpt_tos": list(envelope.rcpt_tos),
            "mail_options": list(envelope.mail_options),
            "rcpt_options": list(envelope.rcpt_options),
            "helo": session.host_name,
            "peer": list(session.peer) if session.peer else None,
            "tls": session.ssl is not None,
            "tls_version": None,
            "tls_cipher": None,
            "tls_server_name": None,
        }
        if session.ssl is not None:
            ssl_object = session.ssl.get("ssl_object")
            cipher = session.ssl.get("cipher")
            if ssl_object is not None:
                metadata["tls_version"] = ssl_object.version()
                metadata["tls_server_name"] = self.server_names.get(id(ssl_object))
            if cipher:
                metadata["tls_cipher"] = cipher[0]

        eml_path = os.path.join(self.maildir, f"{number}.eml")
        json_path = os.path.join(self.maildir, f"{number}.json")
        with open(eml_path, "wb") as eml:
            eml.write(envelope.original_content)
        with open(json_path + ".tmp", "w") as metadata_file:
            json.dump(metadata, metadata_file, indent=2)
        os.rename(json_path + ".tmp", json_path)
        logging.info("stored message %d from %s to %s", number, envelope.mail_from, envelope.rcpt_tos)
        return f"250 2.0.0 OK: stored as message {number}"


class PasswordAuthenticator:
    """aiosmtpd authenticator accepting one user and password, recording every attempt's outcome."""

    def __init__(self, user, password, maildir):
        self.user = user.encode()
        self.password = password.encode()
        self.log_path = os.path.join(maildir, "auth.log")

    def __call__(self, server, session, envelope, mechanism, auth_data):
        success = (isinstance(auth_data, LoginPassword)
                   and auth_data.login == self.user and auth_data.password == self.password)
        with open(self.log_path, "a") as log:
            log.write(f"{mechanism} {'success' if success else 'failure'} tls={session.ssl is not None}\n")
        # handled=False makes aiosmtpd send its 535 reply on failure.
        return AuthResult(success=success, handled=False)


def parse_listen(value):
    host, separator, port = value.rpartition(":")
    if not separator or not host or not port.isdigit():
        raise argparse.ArgumentTypeError(f"invalid --listen value {value!r}: expected HOST:PORT")
    return host, int(port)


def parse_arguments():
    parser = argparse.ArgumentParser(description="aiosmtpd receiving MTA for tlsrelay tests")
    parser.add_argument("--listen", type=parse_listen, required=True, help="address and port, HOST:PORT")
    parser.add_argument("--maildir", required=True, help="directory for <n>.eml and <n>.json files")
    parser.add_argument("--cert", help="PEM certificate (chain) offered after STARTTLS")
    parser.add_argument("--key", help="PEM private key of --cert")
    parser.add_argument("--no-tls", action="store_true", help="do not offer STARTTLS")
    parser.add_argument("--reject-rcpt-prefix", default="",
                        help="reply 550 5.1.1 to RCPT for local parts starting with this text")
    parser.add_argument("--hostname", default="mx.test", help="host name in the greeting and EHLO reply")
    parser.add_argument("--seven-bit", action="store_true",
                        help="offer neither 8BITMIME nor SMTPUTF8, like an old MTA")
    parser.add_argument("--auth", metavar="USER:PASSWORD",
                        help="require SMTP AUTH (offered only over TLS) with this user and password")
    parser.add_argument("--auth-mechanisms", default="PLAIN,LOGIN",
                        help="comma-separated AUTH mechanisms to offer with --auth")
    parser.add_argument("--implicit-tls", action="store_true",
                        help="start TLS at connect (port 465 style) instead of offering STARTTLS")
    parser.add_argument("--idle-timeout", type=float, default=300.0,
                        help="seconds of client silence after which the server sends 421 and closes")
    arguments = parser.parse_args()
    if not arguments.no_tls and not (arguments.cert and arguments.key):
        parser.error("--cert and --key are required unless --no-tls is given")
    if arguments.implicit_tls and arguments.no_tls:
        parser.error("--implicit-tls and --no-tls exclude each other")
    if arguments.auth is not None and ":" not in arguments.auth:
        parser.error("--auth expects USER:PASSWORD")
    return arguments


def make_tls_context(cert, key, server_names):
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)

    def record_server_name(ssl_object, server_name, _context):
        server_names[id(ssl_object)] = server_name

    context.sni_callback = record_server_name
    return context


def main():
    arguments = parse_arguments()
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    os.makedirs(arguments.maildir, exist_ok=True)

    # Block the stop signals before the server thread starts, so that the
    # thread inherits the mask and sigwait below receives them.
    stop_signals = {signal.SIGTERM, signal.SIGINT}
    signal.pthread_sigmask(signal.SIG_BLOCK, stop_signals)

    server_names = {}
    handler = MaildirHandler(arguments.maildir, arguments.reject_rcpt_prefix, server_names)
    host, port = arguments.listen
    tls_options = {}
    if arguments.implicit_tls:
        tls_options["ssl_context"] = make_tls_context(arguments.cert, arguments.key, server_names)
    elif not arguments.no_tls:
        tls_options["tls_context"] = make_tls_context(arguments.cert, arguments.key, server_names)
    if arguments.auth is not None:
        user, _, password = arguments.auth.partition(":")
        offered = {name.strip().upper() for name in arguments.auth_mechanisms.split(",")}
        tls_options["authenticator"] = PasswordAuthenticator(user, password, arguments.maildir)
        tls_options["auth_required"] = True
        # Over implicit TLS the session is encrypted from the start; aiosmtpd
        # 1.4 still treats it as "not TLS" for auth_require_tls, so allow it.
        tls_options["auth_require_tls"] = not arguments.implicit_tls
        tls_options["auth_exclude_mechanism"] = [name for name in ("PLAIN", "LOGIN") if name not in offered]
    controller = Controller(
        handler,
        hostname=host,
        port=port,
        server_hostname=arguments.hostname,
        require_starttls=False,
        # aiosmtpd offers 8BITMIME only when it does not decode the data.
        decode_data=arguments.seven_bit,
        enable_SMTPUTF8=not arguments.seven_bit,
        timeout=arguments.idle_timeout,
        **tls_options,
    )
    controller.start()
    print("ready", flush=True)

    received = signal.sigwait(stop_signals)
    logging.info("received signal %d, stopping", received)
    controller.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
