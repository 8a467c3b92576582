"""A DNSSEC lab on loopback: NSD serves zones, some signed at test time with
ldns-keygen and ldns-signzone, and Unbound validates with their DS records
as trust anchors.

Signatures over the TLSA records of the names in `bogus_tlsa` are
corrupted, so Unbound replies SERVFAIL for them. Names outside the lab's
zones go to a closed port on 127.0.0.1, so no query leaves the machine.
Both servers are stopped by PID (lab.ManagedProcess).
"""

from pathlib import Path

import lab


def _zone_text(zone, records):
    lines = [
        f"$ORIGIN {zone}.",
        "$TTL 300",
        "@ SOA ns hostmaster 1 3600 600 86400 60",
        "@ NS ns",
        "ns A 127.0.0.1",
    ]
    return "\n".join(lines + list(records)) + "\n"


def _corrupt_tlsa_signatures(signed_zone, owners):
    """Change one base64 character of each RRSIG over TLSA at owners.

    ldns-signzone writes one record per line with tab-separated fields and
    the signature last.
    """
    output = []
    for line in signed_zone.splitlines():
        fields = line.split()
        if len(fields) > 4 and fields[3] == "RRSIG" and fields[4] == "TLSA" and fields[0] in owners:
            index = len(line) - 20
            replacement = "B" if line[index] == "A" else "A"
            line = line[:index] + replacement + line[index + 1:]
        output.append(line)
    return "\n".join(output) + "\n"


def _run(args, directory):
    result = lab.run_command(args, cwd=directory)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, args))} failed with status {result.returncode}:\n{result.stderr}")
    return result.stdout


class DnssecLab:
    """NSD + validating Unbound. signed and unsigned map zone names to record lines."""

    def __init__(self, directory, signed, unsigned, bogus_tlsa=()):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.signed = signed
        self.unsigned = unsigned
        self.bogus_tlsa = {name.rstrip(".") + "." for name in bogus_tlsa}
        self.nsd = None
        self.unbound = None
        self.nsd_port = None
        self.port = None

    def start(self):
        anchors = []
        zone_files = {}
        for zone, records in self.signed.items():
            anchors.append(self._sign(zone, records))
            zone_files[zone] = f"{zone}.zone.signed"
        for zone, records in self.unsigned.items():
            (self.directory / f"{zone}.zone").write_text(_zone_text(zone, records))
            zone_files[zone] = f"{zone}.zone"
        (self.directory / "anchors.ds").write_text("".join(anchors))

        self.nsd_port = lab.free_port("127.0.0.1", udp=True)
        (self.directory / "nsd.conf").write_text(self._nsd_config(zone_files))
        self.nsd = lab.ManagedProcess("nsd", ["/usr/sbin/nsd", "-d", "-c", self.directory / "nsd.conf"],
                                      self.directory)
        probe = next(iter(zone_files))
        self._wait_for_answers(self.nsd, self.nsd_port, probe, "NSD")

        self.port = lab.free_port("127.0.0.1", udp=True)
        closed_port = lab.free_port("127.0.0.1", udp=True)
        (self.directory / "unbound.conf").write_text(self._unbound_config(zone_files, closed_port))
        checked = lab.run_command(["unbound-checkconf", self.directory / "unbound.conf"])
        if checked.returncode != 0:
            raise RuntimeError(f"unbound-checkconf rejected the lab config:\n{checked.stdout}{checked.stderr}")
        self.unbound = lab.ManagedProcess(
            "unbound", ["/usr/sbin/unbound", "-d", "-c", self.directory / "unbound.conf"], self.directory)
        self._wait_for_answers(self.unbound, self.port, probe, "Unbound")

    def _sign(self, zone, records):
        """Sign zone with a fresh KSK and ZSK; return the KSK's DS record text."""
        (self.directory / f"{zone}.zone").write_text(_zone_text(zone, records))
        ksk = _run(["ldns-keygen", "-a", "ECDSAP256SHA256", "-k", zone], self.directory).splitlines()[0]
        zsk = _run(["ldns-keygen", "-a", "ECDSAP256SHA256", zone], self.directory).splitlines()[0]
        _run(["ldns-signzone", "-o", zone, f"{zone}.zone", zsk, ksk], self.directory)
        signed_path = self.directory / f"{zone}.zone.signed"
        signed_path.write_text(_corrupt_tlsa_signatures(signed_path.read_text(), self.bogus_tlsa))
        return (self.directory / f"{ksk}.ds").read_text()

    def _wait_for_answers(self, process, port, name, label):
        def answers():
            if not process.running():
                raise RuntimeError(f"{label} exited during start.\n" + process.describe_exit())
            try:
                lab.dns_query("127.0.0.1", port, name, "SOA", timeout=0.5)
            except OSError:
                return False
            return True

        if not lab.wait_until(answers, lab.START_TIMEOUT, interval=0.1):
            process.stop()
            raise RuntimeError(f"{label} did not answer on 127.0.0.1:{port}.\n" + process.describe_exit())

    def _nsd_config(self, zone_files):
        directory = self.directory
        lines = [
            "server:",
            "    ip-address: 127.0.0.1",
            f"    port: {self.nsd_port}",
            "    do-ip6: no",
            "    server-count: 1",
            '    username: ""',
            '    chroot: ""',
            '    database: ""',
            f'    zonesdir: "{directory}"',
            f'    zonelistfile: "{directory}/zone.list"',
            f'    xfrdfile: "{directory}/xfrd.state"',
            f'    xfrdir: "{directory}"',
            f'    pidfile: "{directory}/nsd.pid"',
            f'    logfile: "{directory}/nsd.log"',
            "    verbosity: 1",
            "remote-control:",
            "    control-enable: no",
        ]
        for zone, path in zone_files.items():
            lines += ["zone:", f"    name: {zone}", f"    zonefile: {path}"]
        return "\n".join(lines) + "\n"

    def _unbound_config(self, zone_files, closed_port):
        directory = self.directory
        lines = [
            "server:",
            "    interface: 127.0.0.1",
            f"    port: {self.port}",
            "    do-ip6: no",
            "    num-threads: 1",
            '    username: ""',
            '    chroot: ""',
            f'    directory: "{directory}"',
            '    pidfile: ""',
            "    use-syslog: no",
            '    logfile: ""',
            "    verbosity: 1",
            "    val-log-level: 2",
            "    access-control: 127.0.0.0/8 allow",
            "    do-not-query-localhost: no",
            '    local-zone: "test." nodefault',
            f'    trust-anchor-file: "{directory}/anchors.ds"',
        ]
        for zone in zone_files:
            # An unsigned zone below no anchor is insecure, not bogus.
            lines += ["stub-zone:", f'    name: "{zone}."', f"    stub-addr: 127.0.0.1@{self.nsd_port}"]
        lines += [
            "forward-zone:",
            '    name: "."',
            f"    forward-addr: 127.0.0.1@{closed_port}",
            "remote-control:",
            "    control-enable: no",
        ]
        return "\n".join(lines) + "\n"

    def stop(self):
        for process in (self.unbound, self.nsd):
            if process:
                process.stop()
