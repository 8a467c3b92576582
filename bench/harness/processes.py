"""Start, watch and stop the processes of a benchmark run, and read their
CPU time and memory from /proc.

Every process the harness starts goes through ProcessRegistry, which stops
it by PID (SIGTERM, then SIGKILL after a grace period) when the run ends or
the harness is interrupted.
"""

import os
import re
import signal
import socket
import subprocess
import threading
import time

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


class HarnessError(Exception):
    """A failure of the harness itself (a tool missing, a step that could not run)."""


class Process:
    """A started process with a thread that records when it exits."""

    def __init__(self, name, popen):
        self.name = name
        self.popen = popen
        self.pid = popen.pid
        self.exit_time = None
        self.lines = []  # stdout lines with their arrival time, when captured
        self._exited = threading.Event()
        threading.Thread(target=self._wait, daemon=True).start()
        if popen.stdout is not None:
            threading.Thread(target=self._read_stdout, daemon=True).start()

    def _wait(self):
        self.popen.wait()
        self.exit_time = time.monotonic()
        self._exited.set()

    def _read_stdout(self):
        # smtp-sink -c ends each counter record with "\r" alone. Iterating
        # a text stream would hold such a record back until the next byte
        # shows whether "\n" follows, which can be seconds later (when a
        # cached session closes), so records are split on raw reads instead.
        descriptor = self.popen.stdout.fileno()
        pending = b""
        while True:
            chunk = os.read(descriptor, 65536)
            if not chunk:
                break
            arrival = time.monotonic()
            pending += chunk
            records = re.split(rb"\r\n|\r|\n", pending)
            pending = records.pop()
            for record in records:
                self.lines.append((arrival, record.decode(errors="replace")))
        if pending:
            self.lines.append((time.monotonic(), pending.decode(errors="replace")))

    def wait(self, timeout):
        """Return True when the process exited within timeout seconds."""
        return self._exited.wait(timeout)

    def wait_for_line(self, prefix, timeout):
        """Return the first stdout line starting with prefix, or None at timeout or exit."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for _, line in self.lines:
                if line.startswith(prefix):
                    return line
            if self._exited.is_set() and not any(line.startswith(prefix) for _, line in self.lines):
                time.sleep(0.05)  # let the reader thread drain the pipe
                return next((line for _, line in self.lines if line.startswith(prefix)), None)
            time.sleep(0.02)
        return None

    @property
    def returncode(self):
        return self.popen.returncode


class ProcessRegistry:
    """Every process the harness started that may still run."""

    def __init__(self):
        self._processes = []

    def start(self, name, args, stdout=None, stderr=None, stdin=None, capture=False, cwd=None, env=None):
        try:
            popen = subprocess.Popen(
                args,
                stdout=subprocess.PIPE if capture else (stdout or subprocess.DEVNULL),
                stderr=stderr or subprocess.DEVNULL,
                stdin=stdin or subprocess.DEVNULL,
                text=True,
                cwd=cwd,
                env=env,
            )
        except OSError as error:
            raise HarnessError(f"cannot start {name} ({args[0]}): {error}") from error
        process = Process(name, popen)
        self._processes.append(process)
        return process

    def stop(self, process, grace=10.0):
        """Stop one process by its PID: SIGTERM, then SIGKILL after grace seconds."""
        if process.popen.poll() is None:
            try:
                os.kill(process.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            if not process.wait(grace):
                try:
                    os.kill(process.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                process.wait(5.0)
        if process in self._processes:
            self._processes.remove(process)

    def stop_all(self):
        for process in list(reversed(self._processes)):
            self.stop(process, grace=5.0)


def free_port():
    """Return a TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for_listener(port, timeout, process=None):
    """Wait until 127.0.0.1:port accepts a connection; raise HarnessError at timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.popen.poll() is not None:
            raise HarnessError(f"{process.name} exited with status {process.returncode} before listening on port {port}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1.0):
                return
        except OSError:
            time.sleep(0.05)
    raise HarnessError(f"nothing listens on 127.0.0.1:{port} after {timeout:.0f} s")


# --- /proc readings -----------------------------------------------------

def _read_stat(pid):
    """Return (ppid, utime+stime, cutime+cstime) in clock ticks, or None if the process is gone."""
    try:
        with open(f"/proc/{pid}/stat") as stat_file:
            text = stat_file.read()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2:].split()
    # fields[0] is the state (field 3 of proc(5)); utime is field 14.
    return int(fields[1]), int(fields[11]) + int(fields[12]), int(fields[13]) + int(fields[14])


def process_tree(root_pid):
    """Return root_pid and all its live descendants."""
    children = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            stat = _read_stat(int(entry))
            if stat is not None:
                children.setdefault(stat[0], []).append(int(entry))
    tree, pending = [], [root_pid]
    while pending:
        pid = pending.pop()
        tree.append(pid)
        pending.extend(children.get(pid, []))
    return tree


def tree_cpu_seconds(root_pid):
    """CPU seconds used so far by the tree under root_pid.

    Live processes count their own user+system time. Children that exited
    and were reaped count through their parent's cutime+cstime, so the sum
    only grows while the root lives.
    """
    ticks = 0
    for pid in process_tree(root_pid):
        stat = _read_stat(pid)
        if stat is not None:
            ticks += stat[1] + stat[2]
    return ticks / CLOCK_TICKS


def memory_kib(pid):
    """Return {'rss', 'pss', 'hwm'} in KiB for one process, or None if it is gone."""
    values = {}
    try:
        with open(f"/proc/{pid}/smaps_rollup") as rollup:
            for line in rollup:
                if line.startswith("Rss:"):
                    values["rss"] = int(line.split()[1])
                elif line.startswith("Pss:"):
                    values["pss"] = int(line.split()[1])
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    values["hwm"] = int(line.split()[1])
    except OSError:
        return None
    return values


def tree_memory_kib(root_pid):
    """Return summed rss and pss (KiB) over the tree and the number of processes."""
    total = {"rss": 0, "pss": 0, "processes": 0}
    for pid in process_tree(root_pid):
        values = memory_kib(pid)
        if values:
            total["rss"] += values.get("rss", 0)
            total["pss"] += values.get("pss", 0)
            total["processes"] += 1
    return total


class MemorySampler:
    """Samples the summed RSS and PSS of a process tree every interval seconds
    and keeps the peaks. Sampling misses spikes shorter than the interval."""

    def __init__(self, root_pid, interval=0.1):
        self.root_pid = root_pid
        self.interval = interval
        self.peak_rss = 0
        self.peak_pss = 0
        self.peak_processes = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(5.0)

    def _run(self):
        while not self._stop.is_set():
            sample = tree_memory_kib(self.root_pid)
            self.peak_rss = max(self.peak_rss, sample["rss"])
            self.peak_pss = max(self.peak_pss, sample["pss"])
            self.peak_processes = max(self.peak_processes, sample["processes"])
            self._stop.wait(self.interval)
