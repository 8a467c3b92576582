#!/usr/bin/python3
"""Show tlsrelay delivering one message with a verified TLS session, on loopback only.

Run from the repository root after building (`./dev test` installs the
packages it needs: unbound, python3-aiosmtpd, openssl):

    tools/demo.py                          # uses build/tlsrelay
    TLSRELAY_BIN=other/tlsrelay tools/demo.py
    tools/demo.py --keep                   # keep the lab folder to look around

The demo starts a lab on 127.0.0.0/8: a throwaway CA, Unbound serving the
zone demo.test (MX mx.demo.test at 127.0.0.53), an aiosmtpd receiver with
a certificate from that CA, and tlsrelay with [smtp] tls_security_level =
"verify". It submits one message with `tlsrelay sendmail`, prints the
relay's log and the delivered message, and stops every process it started.
"""

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPOSITORY / "tests" / "e2e"))

import lab  # noqa: E402  (the path above must be set first)

DOMAIN = "demo.test"
MX_ADDRESS = "127.0.0.53"
DELIVERY_TIMEOUT = 30.0


def parse_arguments():
    parser = argparse.ArgumentParser(description="Deliver one message through tlsrelay in a loopback lab.")
    parser.add_argument("--keep", action="store_true", help="keep the lab folder (configs, logs, maildir)")
    return parser.parse_args()


def find_binary():
    if not os.environ.get("TLSRELAY_BIN"):
        os.environ["TLSRELAY_BIN"] = str(REPOSITORY / "build" / "tlsrelay")
    try:
        return lab.relay_binary()
    except AssertionError as error:
        sys.exit(f"demo: {error}\n(build it with ./dev run or ./dev test first)")


def check_tools():
    missing = [tool for tool in ("unbound", "unbound-checkconf", "openssl") if shutil.which(tool) is None]
    try:
        import aiosmtpd  # noqa: F401  (only checked for presence)
    except ImportError:
        missing.append("python3-aiosmtpd")
    if missing:
        sys.exit("demo: missing " + ", ".join(missing) + "; install them with ./dev test or apt-get install")


def submit(binary, relay, work_dir):
    """Submit a message the way cron or PHP would, through `tlsrelay sendmail -t`."""
    message = (
        f"To: newcomer@{DOMAIN}\n"
        "Subject: Hello from the tlsrelay demo\n"
        "\n"
        "This message went through tlsrelay with a verified TLS session.\n"
    )
    environment = {name: value for name, value in os.environ.items() if not name.startswith("TLSRELAY_")}
    completed = lab.run_command(
        [binary, "sendmail", "-t", "-f", "demo@example.net", "--config", relay.config_path],
        input=message,
        env=environment,
        cwd=work_dir,
    )
    if completed.returncode != 0:
        raise RuntimeError(f"tlsrelay sendmail failed with status {completed.returncode}: {completed.stderr}")


def run_demo(binary, lab_dir):
    print(f"lab folder: {lab_dir}")
    ca = lab.CertificateAuthority(lab_dir / "ca", name="tlsrelay demo CA")
    dns = lab.UnboundServer(lab_dir / "unbound", {
        DOMAIN: [f"{DOMAIN}. MX 10 mx.{DOMAIN}.", f"mx.{DOMAIN}. A {MX_ADDRESS}"],
    })
    stoppers = []
    try:
        dns.start()
        stoppers.append(dns.stop)
        print(f"DNS:      Unbound on 127.0.0.1:{dns.port}, {DOMAIN} MX 10 mx.{DOMAIN} ({MX_ADDRESS})")

        mx_port = lab.free_port(MX_ADDRESS)
        cert, key = ca.issue(f"mx.{DOMAIN}")
        receiver = lab.Receiver(lab_dir, "receiver", MX_ADDRESS, mx_port, cert=cert, key=key,
                                hostname=f"mx.{DOMAIN}")
        stoppers.append(receiver.stop)
        receiver.wait_ready()
        print(f"receiver: aiosmtpd on {MX_ADDRESS}:{mx_port} with a certificate for mx.{DOMAIN}")

        relay = lab.Relay(lab_dir / "relay", binary, nameserver_port=dns.port, ca_file=ca.cert_path,
                          mx_port=mx_port, outbound_level="verify")
        stoppers.append(relay.stop)
        relay.start()
        print(f"relay:    tlsrelay on 127.0.0.1:{relay.port}, config {relay.config_path}")

        submit(binary, relay, lab_dir)
        line = relay.wait_for_log(r"to=<newcomer@demo\.test>.*status=(?P<status>\w+)", DELIVERY_TIMEOUT)
        print("\n--- tlsrelay log ---")
        print(relay.log_text().rstrip())
        if line["status"] != "sent" or "tls=verified" not in line.string:
            print("\ndemo: the message was not delivered with a verified TLS session; see the log above")
            return 1

        messages = receiver.wait_for_messages(1, DELIVERY_TIMEOUT)
        print("\n--- message as the receiver stored it ---")
        print(messages[0][0].decode(errors="replace").rstrip())
        print("\nVerified delivery: the log line with tls=verified, status=sent is the relay's proof.")
        return 0
    finally:
        for stop in reversed(stoppers):
            stop()


def main():
    arguments = parse_arguments()
    check_tools()
    binary = find_binary()
    lab_dir = Path(tempfile.mkdtemp(prefix="tlsrelay-demo-"))
    try:
        return run_demo(binary, lab_dir)
    finally:
        if arguments.keep:
            print(f"\nkept the lab folder {lab_dir}")
        else:
            shutil.rmtree(lab_dir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
