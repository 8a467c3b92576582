"""One measurement each: a throughput run, a handshake run, an idle-session run.

Each function starts its own servers, measures, stops them by PID and
returns a dict of figures plus "ok" and "error". A run whose relay fails
(lost messages, timeout, crash) returns ok=False; only a failure of the
harness raises HarnessError.
"""

import json
import os
import subprocess
import time

from .processes import MemorySampler, free_port, memory_kib, tree_cpu_seconds, tree_memory_kib
from .servers import BenchSink, Postfix, SmtpSink, TlsRelay, remove_tree

# TLS use per hop in each scenario. The plain scenario uses Postfix's
# smtp-source and smtp-sink; the others use bench-source and bench-sink for
# every variant, including the direct path.
SCENARIOS = {
    "plain": {"inbound_tls": False, "outbound_tls": False},
    "tls-out": {"inbound_tls": False, "outbound_tls": True},
    "tls-in": {"inbound_tls": True, "outbound_tls": False},
    "tls-both": {"inbound_tls": True, "outbound_tls": True},
}
VARIANTS = ("direct", "postfix", "tlsrelay")


class Context:
    """Binaries, certificate and work folder shared by every run."""

    def __init__(self, registry, work_dir, tlsrelay_binary, tools_dir, cert, key, verbose):
        self.registry = registry
        self.work_dir = work_dir
        self.tlsrelay_binary = tlsrelay_binary
        self.bench_source = os.path.join(tools_dir, "bench-source")
        self.bench_sink = os.path.join(tools_dir, "bench-sink")
        self.cert = cert
        self.key = key
        self.verbose = verbose
        self.run_counter = 0

    def run_dir(self, label):
        self.run_counter += 1
        path = os.path.join(self.work_dir, f"{self.run_counter:03d}-{label}")
        os.makedirs(path)
        return path


def make_relay(context, variant, run_dir, listen_port, sink_port, outbound_tls):
    if variant == "postfix":
        return Postfix(context.registry, run_dir, listen_port, sink_port, outbound_tls, context.cert, context.key)
    return TlsRelay(context.registry, context.tlsrelay_binary, run_dir, listen_port, sink_port, outbound_tls,
                    context.cert, context.key)


def source_command(context, scenario, port, messages, size, sessions, timeout):
    """Return the load-client command for a scenario (the caller adds --tls where needed)."""
    if scenario == "plain":
        return ["smtp-source", "-d", "-s", str(sessions), "-m", str(messages), "-l", str(size),
                "-f", "sender@bench.example", "-t", "rcpt@sink.example", "-M", "bench-source.example",
                f"127.0.0.1:{port}"]
    args = [context.bench_source, "send", "--connect", f"127.0.0.1:{port}", "--messages", str(messages),
            "--sessions", str(sessions), "--size", str(size), "--timeout", str(int(timeout))]
    return args


def run_throughput(context, scenario, variant, messages, size, sessions, timeout):
    """Send `messages` messages through one variant and time injection and end-to-end delivery."""
    hops = SCENARIOS[scenario]
    run_dir = context.run_dir(f"{scenario}-{variant}")
    sink_port, relay_port = free_port(), free_port()
    direct = variant == "direct"
    sink_tls = hops["outbound_tls"] or (direct and hops["inbound_tls"])
    client_tls = hops["inbound_tls"] or (direct and hops["outbound_tls"])

    if scenario == "plain":
        sink = SmtpSink(context.registry, sink_port, messages)
    else:
        sink = BenchSink(context.registry, context.bench_sink, sink_port, messages, timeout + 30,
                         context.cert if sink_tls else None, context.key if sink_tls else None)
    relay = None if direct else make_relay(context, variant, run_dir, relay_port, sink_port, hops["outbound_tls"])
    result = {"scenario": scenario, "variant": variant, "messages": messages, "size": size, "sessions": sessions,
              "ok": False, "error": ""}
    source = None
    try:
        sink.start()
        relay_pid = relay.start() if relay else None
        target_port = sink_port if direct else relay_port
        args = source_command(context, scenario, target_port, messages, size, sessions, timeout)
        if client_tls:
            args.append("--tls")

        cpu_before = tree_cpu_seconds(relay_pid) if relay_pid else 0.0
        sampler = MemorySampler(relay_pid) if relay_pid else None
        if sampler:
            sampler.__enter__()
        start = time.monotonic()
        source_log = open(os.path.join(run_dir, "source.out"), "w")
        source = context.registry.start("load client", args, stdout=source_log, stderr=source_log)
        source_log.close()
        deadline = start + timeout
        if not source.wait(max(0.0, deadline - time.monotonic())):
            result["error"] = f"load client still running after {timeout:.0f} s"
        injected = source.exit_time
        done = sink.wait_done(max(0.0, deadline - time.monotonic()))
        cpu_after = tree_cpu_seconds(relay_pid) if relay_pid else 0.0
        if sampler:
            sampler.__exit__(None, None, None)

        if source.returncode not in (0, None) and not result["error"]:
            result["error"] = f"load client exited with status {source.returncode}"
            result["source_output"] = open(os.path.join(run_dir, "source.out")).read()[-500:]
        if done is None and not result["error"]:
            result["error"] = f"sink did not count {messages} messages within {timeout:.0f} s"
        if injected is not None:
            result["injection_rate"] = messages / (injected - start)
        if done is not None:
            result["end_to_end_rate"] = messages / (done - start)
        if relay_pid:
            result["cpu_ms_per_message"] = 1000.0 * (cpu_after - cpu_before) / messages
            result["peak_rss_kib"] = sampler.peak_rss
            result["peak_pss_kib"] = sampler.peak_pss
            result["processes"] = sampler.peak_processes
            if variant == "tlsrelay":
                hwm = memory_kib(relay_pid)
                if hwm:
                    result["peak_rss_kib"] = max(result["peak_rss_kib"], hwm.get("hwm", 0))
            if relay.process.popen.poll() is not None:
                result["error"] = result["error"] or f"{variant} exited with status {relay.process.returncode}"
        result["ok"] = not result["error"]
    finally:
        if source is not None:
            context.registry.stop(source)
        if relay:
            relay.stop()
            result["log"] = relay.log_summary()
        sink.stop()
        if not context.verbose:
            remove_tree(run_dir)
    return result


def run_handshakes(context, variant, connections, sessions, timeout):
    """Full inbound TLS handshakes (STARTTLS, no resumption) per second."""
    run_dir = context.run_dir(f"handshake-{variant}")
    server_port, unused_sink_port = free_port(), free_port()
    result = {"variant": variant, "connections": connections, "sessions": sessions, "ok": False, "error": ""}
    if variant == "direct":
        server = BenchSink(context.registry, context.bench_sink, server_port, 0, timeout + 30, context.cert, context.key)
    else:
        server = make_relay(context, variant, run_dir, server_port, unused_sink_port, False)
    try:
        pid = server.start()
        if variant == "direct":
            pid = server.process.pid
        cpu_before = tree_cpu_seconds(pid)
        completed = subprocess.run(
            [context.bench_source, "handshake", "--connect", f"127.0.0.1:{server_port}",
             "--connections", str(connections), "--sessions", str(sessions), "--timeout", str(int(timeout))],
            capture_output=True, text=True, timeout=timeout + 30,
        )
        cpu_after = tree_cpu_seconds(pid)
        figures = json.loads(completed.stdout.strip().splitlines()[-1])
        elapsed = figures["last_completion"] - figures["first_connect"]
        if figures["completed"] > 0 and elapsed > 0:
            result["handshakes_per_second"] = figures["completed"] / elapsed
            result["server_cpu_ms_per_handshake"] = 1000.0 * (cpu_after - cpu_before) / figures["completed"]
        result["failed"] = figures["failed"]
        if figures["completed"] != connections:
            result["error"] = f"{figures['completed']} of {connections} handshakes completed: {completed.stderr.strip()[:300]}"
        result["ok"] = not result["error"]
    except (subprocess.TimeoutExpired, ValueError, IndexError) as error:
        result["error"] = f"handshake client failed: {error}"
    finally:
        server.stop()
        if not context.verbose:
            remove_tree(run_dir)
    return result


def run_idle(context, connections, tls, open_sessions, hold):
    """Memory of tlsrelay per idle session: RSS and PSS growth over `connections`
    sessions held open by a separate client process, divided by their count."""
    label = "tls" if tls else "plain"
    run_dir = context.run_dir(f"idle-{label}-{connections}")
    relay_port, unused_sink_port = free_port(), free_port()
    relay = make_relay(context, "tlsrelay", run_dir, relay_port, unused_sink_port, False)
    result = {"connections": connections, "tls": tls, "ok": False, "error": ""}
    client = None
    try:
        pid = relay.start()
        time.sleep(0.5)
        before = tree_memory_kib(pid)
        args = [context.bench_source, "idle", "--connect", f"127.0.0.1:{relay_port}", "--connections",
                str(connections), "--sessions", str(open_sessions), "--hold", str(int(hold))]
        if tls:
            args.append("--tls")
        start = time.monotonic()
        client = context.registry.start("idle client", args, capture=True, stdin=subprocess.PIPE)
        ready = client.wait_for_line("ready", hold)
        if ready is None:
            result["error"] = f"idle client did not open {connections} sessions within {hold:.0f} s"
            return result
        fields = dict(item.split("=") for item in ready.split()[1:])
        opened, failed = int(fields["opened"]), int(fields["failed"])
        result["open_seconds"] = float(fields["time"]) - start
        time.sleep(1.0)
        after = tree_memory_kib(pid)
        result["opened"] = opened
        result["failed"] = failed
        result["relay_open_fds"] = len(os.listdir(f"/proc/{pid}/fd"))
        result["relay_rss_kib"] = after["rss"]
        if opened:
            result["rss_kib_per_session"] = (after["rss"] - before["rss"]) / opened
            result["pss_kib_per_session"] = (after["pss"] - before["pss"]) / opened
        if relay.process.popen.poll() is not None:
            result["error"] = f"tlsrelay exited with status {relay.process.returncode}"
        elif opened != connections or failed:
            result["error"] = f"{opened} of {connections} sessions opened, {failed} failed"
        result["ok"] = not result["error"]
    finally:
        if client is not None:
            try:
                client.popen.stdin.write("\n")
                client.popen.stdin.flush()
            except (BrokenPipeError, ValueError):
                pass
            client.wait(30.0)
            context.registry.stop(client)
        relay.stop()
        result["log"] = relay.log_summary()
        if not context.verbose:
            remove_tree(run_dir)
    return result
