"""Helpers the bench scripts share: a free loopback port, waiting for an HTTP server to answer."""
import socket, subprocess, time


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
