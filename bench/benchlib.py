"""Helpers the bench scripts share: a free loopback port, waiting for an HTTP server to answer, a logged child
process, and a process's peak RSS."""
import signal, socket, subprocess, time


def free_port():
    """An unused TCP port on 127.0.0.1 (the OS picks it)."""
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p


def wait_http(url, timeout=30):
    """Polls `url` with curl every 0.1 s until anything answers; exits after `timeout` seconds."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        r = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", url], capture_output=True, text=True)
        if r.stdout.strip() not in ("", "000"):
            return
        time.sleep(0.1)
    raise SystemExit(f"{url} did not come up")


class Proc:
    """A child process with stdout and stderr in `log`; `stop()` sends SIGTERM, then SIGKILL after 10 s."""
    def __init__(self, args, log):
        self.log = open(log, "w")
        self.p = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT)

    def stop(self):
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGTERM)
            try:
                self.p.wait(10)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()
        self.log.close()


def peak_rss_mib(pid):
    """The process's peak resident set (VmHWM) in MiB."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def reset_peak(pid):
    """Resets VmHWM to the current RSS, so the next phase measures its own peak."""
    with open(f"/proc/{pid}/clear_refs", "w") as f:
        f.write("5")
