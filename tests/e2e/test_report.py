"""End-to-end tests of the delivery counters: `tlsrelay report`, the
Prometheus endpoint, and the JSON log format.

Three receiving MTAs on loopback: verified.test has a certificate from the
test CA for its MX name (tls=verified), plain.test offers no STARTTLS
(tls=none), and strict.test has a CA certificate for another name under a
verify policy entry, so its mail is deferred for TLS reasons. The counters
are compared with the relay's own delivery log lines and the messages the
receivers stored.
"""

import json
import re
import urllib.request

import lab

SENDER = "sender@client.test"
DELIVERY_TIMEOUT = 30.0

MX_ADDRESSES = {
    "verified.test": "127.0.0.60",
    "plain.test": "127.0.0.61",
    "strict.test": "127.0.0.62",
}

DELIVERY_LINE = re.compile(
    r"(?P<queue_id>[0-9A-F]+): to=<(?P<to>[^>]*)>, relay=(?P<relay>[^,]+), delay=[^,]+, "
    r"tls=(?P<tls>\w+), dsn=(?P<dsn>[\d.]+), status=(?P<status>\w+) "
)


def mx_zone(domain):
    return [f"{domain}. MX 10 mx.{domain}.", f"mx.{domain}. A {MX_ADDRESSES[domain]}"]


def fetch(url):
    """GET url and return (status, body text); HTTP errors are returned, not raised."""
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.read().decode("utf-8")
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode("utf-8")


def metric_value(text, name, **labels):
    """Return the value of the sample `name{labels}` in exposition text, or None."""
    label_text = ",".join(f'{key}="{value}"' for key, value in labels.items())
    sample = f"{name}{{{label_text}}}" if labels else name
    for line in text.splitlines():
        if line.startswith(sample + " "):
            return float(line.split(" ")[-1])
    return None


class ReportTest(lab.LabTestCase):
    ZONES = {domain: mx_zone(domain) for domain in MX_ADDRESSES}

    def start_lab(self, toml_tail=""):
        """Start the three receivers and a relay; return (relay, receivers by domain)."""
        port = lab.free_port(*MX_ADDRESSES.values())
        verified_cert, verified_key = self.ca.issue("mx.verified.test")
        strict_cert, strict_key = self.ca.issue("mx.strict.test", dns_names=["other.test"], file_stem="strict-wrong")
        receivers = {
            "verified.test": self.start_receiver("verified", MX_ADDRESSES["verified.test"], port,
                                                 cert=verified_cert, key=verified_key, hostname="mx.verified.test"),
            "plain.test": self.start_receiver("plain", MX_ADDRESSES["plain.test"], port, starttls=False,
                                              hostname="mx.plain.test"),
            "strict.test": self.start_receiver("strict", MX_ADDRESSES["strict.test"], port,
                                               cert=strict_cert, key=strict_key, hostname="mx.strict.test"),
        }
        policy = "\n".join(["[[smtp.tls_policy]]", 'domain = "strict.test"', 'level = "verify"', ""])
        relay = self.start_relay(port, outbound_level="may", toml_tail=policy + toml_tail)
        return relay, receivers

    def send(self, relay, recipient, marker):
        message = lab.build_mime_message(SENDER, recipient, f"report {marker}", marker)
        data_file = lab.write_swaks_data_file(self.work_dir / f"{marker}.eml", message)
        result = lab.swaks("127.0.0.1", relay.port, SENDER, [recipient], data_file=data_file)
        self.assertEqual(result.returncode, 0, "expected swaks to succeed; " + result.describe())

    def wait_for_messages(self, receiver, count):
        stored = receiver.wait_for_messages(count, DELIVERY_TIMEOUT)
        self.assertEqual(len(stored), count, f"expected {count} message(s) at receiver {receiver.name}")

    def delivery_lines(self, relay):
        return [match.groupdict() for match in map(DELIVERY_LINE.search, relay.log_text().splitlines()) if match]

    def logged_counts(self, relay):
        """Count the relay's delivery log lines as {(domain, status, tls): n}."""
        counts = {}
        for line in self.delivery_lines(relay):
            key = (line["to"].rsplit("@", 1)[1], line["status"], line["tls"])
            counts[key] = counts.get(key, 0) + 1
        return counts

    def report(self, relay, *options):
        environment = {name: value for name, value in lab.os.environ.items() if not name.startswith("TLSRELAY_")}
        completed = lab.run_command(
            [relay.binary, "report", "--config", relay.config_path, *options], env=environment
        )
        self.assertEqual(completed.returncode, 0, f"tlsrelay report failed:\n{completed.stdout}\n{completed.stderr}")
        return completed.stdout

    def report_domains(self, relay):
        return {entry["domain"]: entry for entry in json.loads(self.report(relay, "--json"))["domains"]}

    def wait_for_deferral(self, relay, recipient):
        return relay.wait_for_log(r"to=<" + re.escape(recipient) + r">, .*status=deferred", DELIVERY_TIMEOUT)

    def test_report_counts_match_deliveries(self):
        metrics_port = lab.free_port("127.0.0.1")
        relay, receivers = self.start_lab(f'\n[metrics]\nlisten = "127.0.0.1:{metrics_port}"\n')

        for number in range(3):
            self.send(relay, f"user{number}@verified.test", f"verified-{number}")
        for number in range(2):
            self.send(relay, f"user{number}@plain.test", f"plain-{number}")
        self.send(relay, "user@strict.test", "strict")
        self.wait_for_messages(receivers["verified.test"], 3)
        self.wait_for_messages(receivers["plain.test"], 2)
        deferral = self.wait_for_deferral(relay, "user@strict.test")
        self.assertRegex(deferral.group(0), r"dsn=4\.7\.5", "expected the verify policy to defer with 4.7.5")
        self.assertEqual(receivers["strict.test"].messages(), [], "expected no message at strict.test")

        logged = self.logged_counts(relay)
        self.assertEqual(logged, {
            ("verified.test", "sent", "verified"): 3,
            ("plain.test", "sent", "none"): 2,
            # The session reached Trusted (a CA chain, another name), which verify refuses.
            ("strict.test", "deferred", "trusted"): 1,
        }, "expected these delivery log lines")

        # The endpoint shows the counts while the relay runs.
        status, metrics = fetch(f"http://127.0.0.1:{metrics_port}/metrics")
        self.assertEqual(status, 200, metrics)
        self.assertEqual(metric_value(metrics, "tlsrelay_delivery_messages_total",
                                      domain="verified.test", tls="verified"), 3, metrics)
        self.assertEqual(metric_value(metrics, "tlsrelay_delivery_messages_total",
                                      domain="plain.test", tls="none"), 2, metrics)
        self.assertEqual(metric_value(metrics, "tlsrelay_delivery_deferrals_total",
                                      domain="strict.test", reason="tls_required"), 1, metrics)
        self.assertGreaterEqual(metric_value(metrics, "tlsrelay_delivery_sessions_total",
                                             domain="verified.test", tls="verified") or 0, 1, metrics)
        self.assertEqual(metric_value(metrics, "tlsrelay_queue_messages"), 1,
                         "expected the deferred message in the queue gauge")
        self.assertGreater(metric_value(metrics, "tlsrelay_queue_oldest_message_age_seconds"), 0, metrics)
        # Six messages, and the lab's probe that waited for the listener.
        self.assertEqual(metric_value(metrics, "tlsrelay_smtpd_sessions_total"), 7, metrics)
        self.assertIsNotNone(metric_value(metrics, "tlsrelay_errors_total"), metrics)
        self.assertIn("# TYPE tlsrelay_delivery_messages_total counter", metrics)
        status, _ = fetch(f"http://127.0.0.1:{metrics_port}/other")
        self.assertEqual(status, 404, "expected 404 for a path other than /metrics")

        # A stop saves the counters; the report reads them from the file.
        relay.stop()
        domains = self.report_domains(relay)
        self.assertEqual(set(domains), {"verified.test", "plain.test", "strict.test"}, domains)
        verified = domains["verified.test"]
        self.assertEqual(verified["messages"]["verified"], 3, verified)
        self.assertEqual(verified["messages"]["total"], 3, verified)
        self.assertGreaterEqual(verified["sessions"]["verified"], 1, verified)
        self.assertLessEqual(verified["sessions"]["total"], 3, verified)
        self.assertEqual(verified["suggestion"], "verify", verified)
        self.assertEqual(verified["policy"]["level"], "may", verified)
        plain = domains["plain.test"]
        self.assertEqual(plain["messages"]["none"], 2, plain)
        self.assertEqual(plain["messages"]["total"], 2, plain)
        self.assertIsNone(plain["suggestion"], plain)
        strict = domains["strict.test"]
        self.assertEqual(strict["messages"]["total"], 0, strict)
        self.assertEqual(strict["deferrals"]["tls_required"], 1, strict)
        self.assertEqual(strict["policy"]["level"], "verify", strict)
        self.assertEqual(strict["sessions"]["trusted"], 1, strict)
        self.assertEqual(len(strict["warnings"]), 1, strict)

        text = self.report(relay)
        self.assertIn(
            "verified.test: 3 messages over 30 days, all Verified → `verify` would have delivered all of them", text)
        self.assertIn("plain.test: 2 messages over 30 days, all none (no TLS)\n", text)
        self.assertRegex(text, r"warning: strict\.test: level `verify` \(.*\) caused 1 deferral because")

        # After a restart the counters continue from the file.
        relay.start()
        self.send(relay, "user3@verified.test", "verified-3")
        self.wait_for_messages(receivers["verified.test"], 4)
        relay.wait_for_log(r"to=<user3@verified\.test>, .*status=sent", DELIVERY_TIMEOUT)
        status, metrics = fetch(f"http://127.0.0.1:{metrics_port}/metrics")
        self.assertEqual(metric_value(metrics, "tlsrelay_delivery_messages_total",
                                      domain="verified.test", tls="verified"), 1,
                         "expected the endpoint to count from the restart on")
        relay.stop()
        domains = self.report_domains(relay)
        self.assertEqual(domains["verified.test"]["messages"]["verified"], 4, domains["verified.test"])
        self.assertEqual(domains["plain.test"]["messages"]["none"], 2, domains["plain.test"])
        self.assertEqual(domains["strict.test"]["deferrals"]["tls_required"], 1, domains["strict.test"])

        one_day = json.loads(self.report(relay, "--json", "--days", "1"))
        self.assertEqual(one_day["days"], 1)
        self.assertEqual(one_day["first_day"], one_day["last_day"])

    def test_json_log_lines(self):
        relay, receivers = self.start_lab('\n[log]\nformat = "json"\n')
        self.send(relay, "json@verified.test", "json")
        self.wait_for_messages(receivers["verified.test"], 1)

        def delivery_record():
            for line in relay.log_text().splitlines():
                try:
                    record = json.loads(line)
                except ValueError:
                    continue
                if record.get("to") == "json@verified.test":
                    return record
            return None

        record = lab.wait_until(delivery_record, DELIVERY_TIMEOUT)
        self.assertIsNotNone(record, f"expected a JSON delivery line:\n{lab.tail(relay.log_path)}")
        relay.stop()

        lines = relay.log_text().splitlines()
        self.assertTrue(lines, "expected log lines")
        for line in lines:
            try:
                parsed = json.loads(line)
            except ValueError as error:
                self.fail(f"log line is not JSON ({error}): {line!r}")
            for key in ("time", "level", "program", "pid", "message"):
                self.assertIn(key, parsed, f"expected {key!r} in {line}")

        # The fields repeat what the message contains, as in the text line.
        self.assertEqual(record["status"], "sent", record)
        self.assertEqual(record["tls"], "verified", record)
        self.assertEqual(record["dsn"], "2.0.0", record)
        self.assertRegex(record["relay"], r"^mx\.verified\.test\[127\.0\.0\.60\]:\d+$", record)
        self.assertEqual(record["program"], "tlsrelay", record)
        self.assertEqual(record["level"], "info", record)
        match = DELIVERY_LINE.search(record["message"])
        self.assertIsNotNone(match, f"expected the text line's message in {record['message']!r}")
        self.assertEqual(match["queue_id"], record["queue_id"], record)
        self.assertEqual(match["relay"], record["relay"], record)
        self.assertEqual(match["tls"], record["tls"], record)
        self.assertTrue(record["reason"].startswith("250"), record)

        # The inbound line of the same message carries the client fields.
        inbound = [json.loads(line) for line in lines if '"nrcpt":' in line]
        self.assertEqual(len(inbound), 1, "expected one queued-message line")
        self.assertEqual(inbound[0]["from"], SENDER, inbound[0])
        self.assertEqual(inbound[0]["nrcpt"], "1", inbound[0])
        self.assertEqual(inbound[0]["queue_id"], record["queue_id"], inbound[0])


if __name__ == "__main__":
    import unittest

    unittest.main()
