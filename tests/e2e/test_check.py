"""`tlsrelay check` against the TLS policy lab (policy_lab.py).

For every server set-up under every level, the verdict of `tlsrelay check`
(exit status, status and TLS trust) must equal EXPECTED, the first delivery
attempt's result that test_policy checks against real deliveries. The
fields the report shows are checked against openssl and the lab's zone, and
no message may reach a receiver, because check quits before MAIL.
"""

import json
import os
import unittest

import lab
import policy_lab
from policy_lab import DEFER_REASONS, EXPECTED, LEVELS, SCENARIOS, ZONE, openssl_digest

CA_NAME = "CN=tlsrelay e2e test CA"


class CheckCommand(policy_lab.PolicyLab):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.config = cls.write_config("may", level="may")

    @classmethod
    def write_config(cls, name, level="may", smtp_extra=(), toml_tail=""):
        """Write a relay configuration for the lab and return its path."""
        relay = lab.Relay(cls.lab_dir / f"check-{name}", lab.relay_binary(), nameserver_port=cls.dns.port,
                          ca_file=cls.ca.cert_path, mx_port=cls.mx_port, outbound_level=level,
                          smtp_extra=smtp_extra, toml_tail=toml_tail)
        return relay.config_path

    def tearDown(self):
        # check ends every session with QUIT before MAIL, so nothing may arrive.
        for scenario, receiver in self.receivers.items():
            self.assertEqual(receiver.messages(), [], f"{scenario}: a message arrived during check")

    def run_check(self, domain, *options, config=None, extra_environment=None):
        # TLSRELAY_* variables override configuration keys, so the harness's
        # own (TLSRELAY_BIN) must not reach the command.
        environment = {name: value for name, value in os.environ.items() if not name.startswith("TLSRELAY_")}
        environment.update(extra_environment or {})
        return lab.run_command([lab.relay_binary(), "check", domain, "--config", config or self.config, *options],
                               env=environment)

    def check_json(self, domain, *options, config=None, extra_environment=None):
        """Run check --json; return (exit status, report dict)."""
        result = self.run_check(domain, "--json", *options, config=config, extra_environment=extra_environment)
        try:
            report = json.loads(result.stdout)
        except json.JSONDecodeError as error:
            self.fail(f"check {domain} printed no JSON ({error}); status {result.returncode}\n"
                      f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}")
        return result.returncode, report

    def host_probe(self, report):
        """Return the one probe of a one-address destination."""
        self.assertEqual(len(report["hosts"]), 1, json.dumps(report, indent=2))
        return report["hosts"][0]

    def test_verdicts_match_delivery_matrix(self):
        for level in LEVELS:
            column = LEVELS.index(level)
            for scenario, (domain, _) in SCENARIOS.items():
                with self.subTest(scenario=scenario, level=level):
                    status, report = self.check_json(domain, "--level", level)
                    verdict = report["verdict"]
                    expected = EXPECTED[scenario][column]
                    actual = "sent/" + verdict["trust"] if verdict["deliver"] else verdict["status"]
                    self.assertEqual(actual, expected, f"{scenario} under {level}: {verdict}")
                    self.assertEqual(status, 0 if expected.startswith("sent/") else 1)
                    self.assertEqual(report["policy"]["level"], level)
                    reason = DEFER_REASONS.get((scenario, level))
                    if reason:
                        self.assertIn(reason.format(port=self.mx_port), verdict["reason"])

    def test_global_default_level(self):
        config = self.write_config("verify", level="verify")
        status, report = self.check_json(SCENARIOS["CA cert, wrong name"][0], config=config)
        self.assertEqual(status, 1)
        self.assertEqual(report["policy"]["level"], "verify")
        self.assertIsNone(report["policy"]["configured_level"])
        self.assertEqual(report["policy"]["origin"], f"[smtp] tls_security_level in {config} (global default)")
        self.assertEqual(report["verdict"]["dsn"], "4.7.5")

        # --level replaces the configured level, and the report names the configured one.
        status, report = self.check_json(SCENARIOS["CA cert, wrong name"][0], "--level", "may", config=config)
        self.assertEqual(status, 0)
        self.assertEqual(report["policy"]["configured_level"], "verify")
        self.assertEqual(report["verdict"]["trust"], "trusted")

    def test_certificate_details(self):
        domain, address = SCENARIOS["correct 3 1 1"]
        status, report = self.check_json(domain, "--level", "verify")
        self.assertEqual(status, 0)
        probe = self.host_probe(report)
        self.assertEqual(probe["host"], f"mx.{domain}")
        self.assertEqual(probe["address"], address)
        self.assertEqual(probe["port"], self.mx_port)
        self.assertTrue(probe["starttls_offered"])
        self.assertRegex(probe["protocol"], r"^TLSv1\.[23]$")
        self.assertRegex(probe["cipher"], r"^TLS_[A-Z0-9_]+$")
        self.assertTrue(probe["ca_valid"])
        self.assertEqual(probe["verify_error"], "")
        self.assertTrue(probe["name_match"])
        self.assertEqual(probe["matched_name"], f"mx.{domain}")
        self.assertIsNone(probe["dane_match"])
        self.assertEqual(probe["trust"], "verified")
        self.assertEqual(probe["verdict"], "deliver")

        self.assertEqual(len(probe["chain"]), 1)
        leaf = probe["chain"][0]
        cert, _ = self.certificates["correct 3 1 1"]
        self.assertEqual(leaf["subject"], f"CN=mx.{domain}")
        self.assertEqual(leaf["issuer"], CA_NAME)
        self.assertEqual(leaf["dns_names"], [f"mx.{domain}"])
        self.assertEqual(leaf["spki_sha256"], openssl_digest(cert, 1))
        self.assertLess(leaf["not_before"], leaf["not_after"])

    def test_rejected_peer_still_shows_chain(self):
        # The policy rejects these peers, but the report still has the chain
        # it judged and why it failed.
        domain, _ = SCENARIOS["expired cert, matching 3 1 1"]
        status, report = self.check_json(domain, "--level", "verify")
        self.assertEqual(status, 1)
        probe = self.host_probe(report)
        self.assertEqual(probe["verdict"], "rejected")
        self.assertFalse(probe["ca_valid"])
        self.assertIn("expired", probe["verify_error"])
        self.assertEqual(probe["chain"][0]["not_after"], "2020-02-01T00:00:00Z")
        self.assertEqual(probe["chain"][0]["not_before"], "2020-01-01T00:00:00Z")

        domain, _ = SCENARIOS["CA cert, wrong name"]
        status, report = self.check_json(domain, "--level", "verify")
        self.assertEqual(status, 1)
        probe = self.host_probe(report)
        self.assertTrue(probe["ca_valid"])
        self.assertFalse(probe["name_match"])
        self.assertEqual(probe["reference_names"], [f"mx.{domain}"])
        self.assertEqual(probe["chain"][0]["dns_names"], ["mx.other.test"])
        self.assertEqual(probe["trust"], "trusted")

        # The DANE-TA server sends its anchor too.
        domain, _ = SCENARIOS["2 0 1 on issuing CA"]
        status, report = self.check_json(domain, "--level", "dane")
        self.assertEqual(status, 0)
        probe = self.host_probe(report)
        self.assertEqual([certificate["subject"] for certificate in probe["chain"]], [f"CN=mx.{domain}", CA_NAME])
        self.assertTrue(probe["dane_match"]["matched"])
        self.assertTrue(probe["dane_match"]["how"].startswith("DANE TLSA 2 0 1 matched the trust anchor"),
                        probe["dane_match"]["how"])

    def test_tlsa_records_and_usable_flags(self):
        domain, _ = SCENARIOS["correct 3 1 1"]
        cert, _ = self.certificates["correct 3 1 1"]
        status, report = self.check_json(domain, "--level", "dane")
        self.assertEqual(status, 0)
        self.assertEqual(report["mx"]["status"], "ok")
        self.assertTrue(report["mx"]["secure"])
        self.assertEqual(report["mx"]["records"], [{"preference": 10, "exchange": f"mx.{domain}"}])
        host = report["mx"]["hosts"][0]
        self.assertEqual(host["preference"], 10)
        self.assertTrue(host["secure"])
        tlsa = host["tlsa"]
        self.assertEqual(tlsa["status"], "found")
        self.assertEqual(tlsa["name"], f"_{self.mx_port}._tcp.mx.{domain}")
        self.assertTrue(tlsa["used"])
        self.assertTrue(tlsa["usable"])
        self.assertEqual(tlsa["records"], [{"usage": 3, "selector": 1, "matching_type": 1,
                                            "data": openssl_digest(cert, 1), "usable": True}])
        self.assertEqual(host["plan"]["level"], "dane")
        probe = self.host_probe(report)
        self.assertTrue(probe["dane_match"]["matched"])
        self.assertEqual(probe["dane_match"]["how"], "DANE TLSA 3 1 1 matched the leaf certificate")

        # Under verify the records are shown but not used.
        status, report = self.check_json(domain, "--level", "verify")
        tlsa = report["mx"]["hosts"][0]["tlsa"]
        self.assertEqual(tlsa["status"], "found")
        self.assertFalse(tlsa["used"])

        status, report = self.check_json(SCENARIOS["wrong TLSA hash"][0], "--level", "dane")
        self.assertEqual(status, 1)
        probe = self.host_probe(report)
        self.assertFalse(probe["dane_match"]["matched"])
        self.assertTrue(probe["ca_valid"])
        self.assertEqual(probe["trust"], "untrusted")

        status, report = self.check_json(SCENARIOS["TLSA SERVFAIL"][0], "--level", "dane")
        self.assertEqual(report["mx"]["hosts"][0]["tlsa"]["status"], "failed")
        self.assertEqual(report["hosts"], [], "a host whose TLSA lookup failed must not be contacted")

        status, report = self.check_json(SCENARIOS["unsigned zone"][0], "--level", "dane")
        self.assertFalse(report["mx"]["secure"])
        self.assertFalse(report["mx"]["hosts"][0]["secure"])
        self.assertEqual(report["mx"]["hosts"][0]["tlsa"]["status"], "not looked up")
        self.assertIn("not DNSSEC-signed: using level may", report["mx"]["hosts"][0]["plan"]["note"])

        # Only a PKIX-EE record: unusable for SMTP, so dane becomes encrypt.
        status, report = self.check_json("direct." + ZONE, "--level", "dane")
        self.assertEqual(status, 0)
        tlsa = report["mx"]["hosts"][0]["tlsa"]
        self.assertEqual([record["usable"] for record in tlsa["records"]], [False])
        self.assertFalse(tlsa["usable"])
        self.assertEqual(report["mx"]["hosts"][0]["plan"]["level"], "encrypt")
        self.assertEqual(report["verdict"]["trust"], "trusted")

    def test_policy_origin(self):
        maps = self.lab_dir / "tls_policy"
        maps.write_text(f"# per-destination TLS\n{SCENARIOS['correct 3 1 1'][0]} verify\n")
        toml_tail = "\n".join([
            "[[smtp.tls_policy]]",
            f'domain = "{SCENARIOS["2 0 1 on issuing CA"][0]}"',
            'level = "dane-only"',
            "[[smtp.tls_policy]]",
            f'domain = ".{ZONE}"',
            'level = "verify"',
        ])
        config = self.write_config("origin", smtp_extra=[f"tls_policy_maps = {lab.toml_string(maps)}"],
                                   toml_tail=toml_tail)
        config_lines = config.read_text().splitlines()
        second_entry_line = [i for i, line in enumerate(config_lines, 1) if line == "[[smtp.tls_policy]]"][1]

        status, report = self.check_json(SCENARIOS["correct 3 1 1"][0], config=config)
        self.assertEqual(status, 0)
        self.assertEqual(report["policy"], {"level": "verify", "origin": f"{maps}:2",
                                            "key": SCENARIOS["correct 3 1 1"][0], "configured_level": None})

        status, report = self.check_json(SCENARIOS["CA cert, wrong name"][0], config=config)
        self.assertEqual(status, 1)
        self.assertEqual(report["policy"]["level"], "verify")
        self.assertEqual(report["policy"]["origin"], f"{config}:{second_entry_line} [[smtp.tls_policy]] #2")

        status, report = self.check_json(SCENARIOS["2 0 1 on issuing CA"][0], config=config)
        self.assertEqual(status, 0)
        self.assertEqual(report["policy"]["level"], "dane-only")
        self.assertTrue(report["policy"]["origin"].endswith(" [[smtp.tls_policy]] #1"))

        # A global level set by an environment variable names the variable.
        status, report = self.check_json(SCENARIOS["correct 3 1 1"][0], config=self.config,
                                         extra_environment={"TLSRELAY_SMTP__TLS_SECURITY_LEVEL": '"encrypt"'})
        self.assertEqual(report["policy"]["level"], "encrypt")
        self.assertEqual(report["policy"]["origin"],
                         "TLSRELAY_SMTP__TLS_SECURITY_LEVEL in the environment (global default)")

    def test_null_mx_nxdomain_and_implicit_mx(self):
        status, report = self.check_json("nullmx." + ZONE)
        self.assertEqual(status, 1)
        self.assertEqual(report["mx"]["status"], "null")
        self.assertTrue(report["mx"]["secure"])
        self.assertEqual(report["verdict"]["status"], "bounced")
        self.assertEqual(report["verdict"]["dsn"], "5.1.10")
        self.assertEqual(report["verdict"]["reason"], f"Domain nullmx.{ZONE} does not accept mail (null MX)")

        status, report = self.check_json("nosuch." + ZONE)
        self.assertEqual(status, 1)
        self.assertEqual(report["mx"]["status"], "nxdomain")
        self.assertEqual(report["verdict"]["status"], "bounced")
        self.assertEqual(report["verdict"]["dsn"], "5.1.2")

        status, report = self.check_json("direct." + ZONE)
        self.assertEqual(status, 0)
        self.assertEqual(report["mx"]["status"], "implicit")
        host = report["mx"]["hosts"][0]
        self.assertEqual(host["name"], "direct." + ZONE)
        self.assertIsNone(host["preference"])
        self.assertEqual(host["addresses"], [SCENARIOS["correct 3 1 1"][1]])

    def test_starttls_not_offered(self):
        domain, _ = SCENARIOS["no STARTTLS"]
        status, report = self.check_json(domain, "--level", "may")
        self.assertEqual(status, 0)
        probe = self.host_probe(report)
        self.assertIs(probe["starttls_offered"], False)
        self.assertIsNone(probe["protocol"])
        self.assertEqual(probe["chain"], [])
        self.assertIn("8BITMIME", probe["extensions"])
        self.assertNotIn("STARTTLS", probe["extensions"])
        self.assertEqual(report["verdict"]["trust"], "none")

        # The policy rejects the host, but the EHLO reply it judged is still listed.
        status, report = self.check_json(domain, "--level", "encrypt")
        self.assertEqual(status, 1)
        probe = self.host_probe(report)
        self.assertIs(probe["starttls_offered"], False)
        self.assertEqual(probe["dsn"], "4.7.4")
        self.assertEqual(probe["verdict"], "rejected")
        self.assertIn("8BITMIME", probe["extensions"])
        self.assertNotIn("STARTTLS", probe["extensions"])

        # The server offers STARTTLS, so the failure came later.
        status, report = self.check_json(SCENARIOS["CA cert, wrong name"][0], "--level", "verify")
        self.assertIs(self.host_probe(report)["starttls_offered"], True)

    def test_plaintext_retry_at_may(self):
        # The server negotiates TLSv1.3, which this entry excludes, so level
        # may gives up TLS and delivery connects again without STARTTLS.
        domain, address = SCENARIOS["correct 3 1 1"]
        toml_tail = "\n".join(["[[smtp.tls_policy]]", f'domain = "{domain}"', 'level = "may"',
                               'protocols = "TLSv1.2"'])
        config = self.write_config("retry", toml_tail=toml_tail)
        status, report = self.check_json(domain, config=config)
        self.assertEqual(status, 0)
        first, retry = report["hosts"]
        self.assertEqual(first["verdict"], "deliver in clear")
        self.assertEqual(first["protocol"], "TLSv1.3")
        self.assertIn("TLS protocol TLSv1.3 is excluded by protocols=TLSv1.2", first["reason"])
        self.assertFalse(first["plaintext_retry"])
        self.assertTrue(retry["plaintext_retry"])
        self.assertEqual(retry["verdict"], "deliver")
        self.assertIsNone(retry["protocol"])
        self.assertIs(retry["starttls_offered"], True)
        self.assertIn("STARTTLS", retry["extensions"])
        self.assertIn("8BITMIME", retry["extensions"])
        self.assertEqual(report["verdict"], {"deliver": True, "status": "sent", "trust": "none",
                                             "relay": f"mx.{domain}[{address}]:{self.mx_port}", "dsn": "",
                                             "reason": ""})

    def test_level_none_reports_starttls(self):
        status, report = self.check_json(SCENARIOS["correct 3 1 1"][0], "--level", "none")
        self.assertEqual(status, 0)
        probe = self.host_probe(report)
        self.assertIs(probe["starttls_offered"], True)
        self.assertIsNone(probe["protocol"])
        self.assertEqual(probe["trust"], "none")
        self.assertIn("STARTTLS", probe["extensions"])
        self.assertIn("8BITMIME", probe["extensions"])

    def test_mail_loop(self):
        # The MX of loop.dane.test is 127.0.0.1, where the relay's listener is.
        listener_port = int(self.config.read_text().split('listen = ["127.0.0.1:')[1].split('"')[0])
        status, report = self.check_json("loop." + ZONE, "--port", str(listener_port))
        self.assertEqual(status, 1)
        self.assertEqual(report["verdict"]["status"], "bounced")
        self.assertEqual(report["verdict"]["dsn"], "5.4.6")

    def test_text_report(self):
        domain, address = SCENARIOS["correct 3 1 1"]
        cert, _ = self.certificates["correct 3 1 1"]
        result = self.run_check(domain, "--level", "dane")
        self.assertEqual(result.returncode, 0, result.stderr)
        text = result.stdout
        self.assertIn("\nPolicy\n  level:  dane (from --level; the configuration says may)\n", text)
        self.assertIn(f"MX records of {domain}: DNSSEC secure\n  10 mx.{domain}\n", text)
        self.assertIn(f"SPKI SHA-256: {openssl_digest(cert, 1)}", text)
        self.assertIn("DANE match:    DANE TLSA 3 1 1 matched the leaf certificate", text)
        self.assertIn(f"Verdict: mail would be sent to mx.{domain}[{address}]:{self.mx_port} with TLS trust verified",
                      text)

        result = self.run_check(SCENARIOS["no STARTTLS"][0], "--level", "encrypt")
        self.assertEqual(result.returncode, 1)
        self.assertIn("STARTTLS:      not offered", result.stdout)
        self.assertIn("Verdict: mail would be deferred: 4.7.4 TLS is required, but was not offered by host",
                      result.stdout)

    def test_usage_errors(self):
        result = lab.run_command([lab.relay_binary(), "check"])
        self.assertEqual(result.returncode, 2)
        self.assertIn("missing DOMAIN", result.stderr)
        result = self.run_check("example.test", "--level", "sometimes")
        self.assertEqual(result.returncode, 2)
        self.assertIn('invalid --level "sometimes"', result.stderr)
        result = self.run_check("example.test", config=self.lab_dir / "missing.toml")
        self.assertEqual(result.returncode, 2)
        self.assertIn("missing.toml", result.stderr)
        for domain in ("bad domain", "user@example.test"):
            with self.subTest(domain=domain):
                result = self.run_check(domain)
                self.assertEqual(result.returncode, 2)
                self.assertIn(f'invalid DOMAIN "{domain}"', result.stderr)
                self.assertEqual(result.stdout, "")
        result = self.run_check("example.test", "--sender", "not an address")
        self.assertEqual(result.returncode, 2)
        self.assertIn('invalid --sender "not an address"', result.stderr)
        result = lab.run_command([lab.relay_binary(), "check", "--help"])
        self.assertEqual(result.returncode, 0)
        self.assertIn("usage: tlsrelay check DOMAIN", result.stdout)


if __name__ == "__main__":
    unittest.main()
