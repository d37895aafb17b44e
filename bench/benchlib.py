"""Helpers the bench scripts share: a free loopback port, waiting for an HTTP server to answer, a logged child
process, a process's peak RSS, a small registry client (token auth, pushes), `wrk`, and the peers a benchmark
runs next to Cove (distribution 2.8 in `proxy:` mode, nginx serving static files)."""
import base64, hashlib, json, os, re, shutil, signal, socket, statistics, subprocess, sys, time
import urllib.error, urllib.parse, urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURES = os.path.join(ROOT, "Tests/IntegrationTests/Fixtures")
ACCEPT = ("application/vnd.oci.image.manifest.v1+json,application/vnd.oci.image.index.v1+json,"
          "application/vnd.docker.distribution.manifest.v2+json,application/vnd.docker.distribution.manifest.list.v2+json")


def free_port():
    """An unused TCP port on 127.0.0.1 (the OS picks it)."""
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p


def wait_http(url, timeout=30):
    """Polls `url` with curl every 0.1 s until anything answers; exits after `timeout` seconds."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        r = subprocess.run(["curl", "-s", "--max-time", "5", "-o", "/dev/null", "-w", "%{http_code}", url],
                           capture_output=True, text=True)
        if r.stdout.strip() not in ("", "000"):
            return
        time.sleep(0.1)
    raise SystemExit(f"{url} did not come up")


def wait_up(proc, url, timeout=60):
    """wait_http for a Proc just started; stops it (and re-raises) when it does not come up."""
    try:
        wait_http(url, timeout)
    except BaseException:
        proc.stop()
        raise


class Proc:
    """A child process with stdout and stderr in `log`; `stop()` sends SIGTERM, then SIGKILL after 10 s."""
    def __init__(self, args, log):
        self.log = open(log, "w")
        self.p = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT)

    def stop(self):
        """Idempotent."""
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGTERM)
            try:
                self.p.wait(10)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()
        if not self.log.closed:
            self.log.close()


def peak_rss_mib(pid):
    """The process's peak resident set (VmHWM) in MiB."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


class RssSampler:
    """Polls /proc/PID/status every `interval` seconds on a thread while running; `stop()` returns the largest
    RssAnon and RssFile seen, in MiB (VmHWM gives the peak but not whether it was heap or mapped file pages)."""

    def __init__(self, pid, interval=0.05):
        import threading
        self.pid, self.interval, self.peak = pid, interval, {"RssAnon": 0.0, "RssFile": 0.0}
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self.done.is_set():
            try:
                with open(f"/proc/{self.pid}/status") as f:
                    for line in f:
                        key = line.split(":", 1)[0]
                        if key in self.peak:
                            self.peak[key] = max(self.peak[key], int(line.split()[1]) / 1024)
            except OSError:
                return
            self.done.wait(self.interval)

    def stop(self):
        self.done.set()
        self.thread.join(5)
        return self.peak["RssAnon"], self.peak["RssFile"]


def reset_peak(pid):
    """Resets VmHWM to the current RSS, so the next phase measures its own peak."""
    with open(f"/proc/{pid}/clear_refs", "w") as f:
        f.write("5")


def require_tools(*names):
    """Exits naming every tool of `names` that is not on PATH (with the Debian packages that provide them)."""
    missing = [n for n in names if shutil.which(n) is None]
    if missing:
        raise SystemExit(f"missing on PATH: {', '.join(missing)} "
                         "(Debian: apt-get install -y wrk nginx docker-registry curl openssl)")


def http(method, url, data=None, headers=None, timeout=60):
    """One request with urllib; returns (status, headers dict, body bytes). Raises urllib.error.HTTPError on >= 400."""
    req = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return r.status, dict(r.headers), r.read()


class RegistryClient:
    """Registry API calls against `base` (http://HOST:PORT). A `401` with a `Bearer` challenge fetches a token from
    the challenge's realm for the challenged scope (HTTP Basic with `user`/`password` when given) and retries once;
    tokens are kept per scope."""

    def __init__(self, base, user=None, password=None):
        self.base, self.user, self.password, self.tokens = base, user, password, {}

    def _token(self, challenge):
        params = dict(re.findall(r'(\w+)="([^"]*)"', challenge))
        query = {"service": params.get("service", "")}
        if "scope" in params:
            query["scope"] = params["scope"]
        headers = {}
        if self.user:
            headers["Authorization"] = "Basic " + base64.b64encode(f"{self.user}:{self.password}".encode()).decode()
        _, _, body = http("GET", params["realm"] + "?" + urllib.parse.urlencode(query), headers=headers)
        doc = json.loads(body)
        return params.get("scope", ""), doc.get("token") or doc["access_token"]

    def request(self, method, path, data=None, headers=None, scope=None):
        """`path` is relative to base (or an absolute URL); `data` bytes or a seekable file. Returns like http()."""
        url = path if path.startswith("http") else self.base + path
        headers = dict(headers or {})
        for attempt in (0, 1):
            if scope in self.tokens:
                headers["Authorization"] = "Bearer " + self.tokens[scope]
            if hasattr(data, "seek"):
                data.seek(0)
            try:
                return http(method, url, data, headers)
            except urllib.error.HTTPError as e:
                challenge = e.headers.get("WWW-Authenticate", "")
                if e.code != 401 or not challenge.startswith("Bearer ") or attempt:
                    raise
                scope, token = self._token(challenge)
                self.tokens[scope] = token


def push_blob(client, repo, blob):
    """Pushes `blob` (bytes, or the path of a file, streamed) monolithically; returns its digest."""
    if isinstance(blob, bytes):
        digest, size, data = "sha256:" + hashlib.sha256(blob).hexdigest(), len(blob), blob
    else:
        h = hashlib.sha256()
        with open(blob, "rb") as f:
            for chunk in iter(lambda: f.read(8 << 20), b""):
                h.update(chunk)
        digest, size, data = "sha256:" + h.hexdigest(), os.path.getsize(blob), open(blob, "rb")
    scope = f"repository:{repo}:pull,push"
    try:
        _, headers, _ = client.request("POST", f"/v2/{repo}/blobs/uploads/", b"", scope=scope)
        location = headers["Location"]
        if location.startswith("/"):
            location = client.base + location
        sep = "&" if "?" in location else "?"
        client.request("PUT", f"{location}{sep}digest={digest}", data,
                       {"Content-Type": "application/octet-stream", "Content-Length": str(size)}, scope=scope)
    finally:
        if not isinstance(data, bytes):
            data.close()
    return digest


def push_image(client, repo, tag, layer=None):
    """An OCI image: a config, one layer (`layer`: bytes or a file path; default 1 KiB of random bytes), the
    manifest under `tag`. Returns (manifest digest, manifest bytes, layer digest, layer size)."""
    config = json.dumps({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": []}}).encode()
    layer = os.urandom(1024) if layer is None else layer
    size = len(layer) if isinstance(layer, bytes) else os.path.getsize(layer)
    cd, ld = push_blob(client, repo, config), push_blob(client, repo, layer)
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": len(config)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": ld, "size": size}],
    }, indent=3).encode()
    client.request("PUT", f"/v2/{repo}/manifests/{tag}", manifest,
                   {"Content-Type": "application/vnd.oci.image.manifest.v1+json"}, scope=f"repository:{repo}:pull,push")
    return "sha256:" + hashlib.sha256(manifest).hexdigest(), manifest, ld, size


def wrk_run(url, duration, connections=64, threads=2, timeout_s=2):
    """Runs wrk (`--timeout timeout_s`, Accept: the manifest types); returns a dict: rps, p99_ms, non2xx (count of
    answers that were not 2xx/3xx), socket_errors (wrk's line, "" when none), output."""
    out = subprocess.run(["wrk", "-c", str(connections), "-t", str(threads), "-d", f"{duration}s", "--latency",
                          "--timeout", f"{timeout_s}s", "-H", f"Accept: {ACCEPT}", url], capture_output=True, text=True,
                         check=True, timeout=duration + timeout_s + 60).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    m = re.search(r"^\s+99%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
    p99 = float(m.group(1)) * {"us": 0.001, "ms": 1, "s": 1000}[m.group(2)] if m else float("nan")
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    errors = re.search(r"Socket errors:.*", out)
    return {"rps": rps, "p99_ms": p99, "non2xx": int(non2xx.group(1)) if non2xx else 0,
            "socket_errors": errors.group(0) if errors else "", "output": out}


def wrk(url, duration, connections=64, threads=2):
    """Runs wrk; returns (requests/s, p99 ms). Exits when any answer was not 2xx/3xx or a socket error occurred."""
    r = wrk_run(url, duration, connections, threads)
    if r["non2xx"] or r["socket_errors"]:
        raise SystemExit(f"wrk against {url} saw errors:\n{r['output']}")
    return r["rps"], r["p99_ms"]


def loadavg():
    """The 1, 5 and 15 minute load averages as one string."""
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def summary(values):
    """(median, min, max) of `values`."""
    return statistics.median(values), min(values), max(values)


def start_distribution(directory, remoteurl, log, username=None, password=None):
    """distribution 2.8 (`docker-registry`) as a pull-through cache of `remoteurl`, storage in `directory`,
    access log on, on a free loopback port. Returns (Proc, base URL) once `/v2/` answers."""
    os.makedirs(directory, exist_ok=True)
    port = free_port()
    creds = (f"\n  username: {username}\n  password: {password}" if username else "")
    config = os.path.join(directory, "config.yml")
    with open(config, "w") as f:
        f.write(f"""version: 0.1
log:
  level: info
  formatter: text
  accesslog:
    disabled: false
storage:
  filesystem:
    rootdirectory: {directory}/storage
  maintenance:
    uploadpurging:
      enabled: false
  redirect:
    disable: true
http:
  addr: 127.0.0.1:{port}
  secret: cove-bench-secret
proxy:
  remoteurl: {remoteurl}{creds}
""")
    p = Proc(["docker-registry", "serve", config], log)
    url = f"http://127.0.0.1:{port}"
    wait_up(p, url + "/v2/")
    return p, url


def start_nginx(work, root, name="nginx", default_type="application/octet-stream"):
    """nginx (sendfile on, access log off) serving directory `root` as static files on a free loopback port;
    its config, pid and temp files live in `work`. Returns (Proc, base URL) once it answers."""
    port = free_port()
    conf = os.path.join(work, f"{name}.conf")
    with open(conf, "w") as f:
        f.write(f"""worker_processes auto; pid {work}/{name}.pid; error_log {work}/{name}.err;
events {{ worker_connections 1024; }}
http {{ access_log off; sendfile on; tcp_nopush on; default_type {default_type};
  client_body_temp_path {work}/ngx_body; proxy_temp_path {work}/ngx_proxy; fastcgi_temp_path {work}/ngx_fcgi;
  uwsgi_temp_path {work}/ngx_uwsgi; scgi_temp_path {work}/ngx_scgi;
  server {{ listen 127.0.0.1:{port}; root {root}; }} }}
""")
    p = Proc(["nginx", "-c", conf, "-g", "daemon off;" + (" user root;" if os.geteuid() == 0 else "")],
             os.path.join(work, f"{name}.log"))
    url = f"http://127.0.0.1:{port}"
    wait_up(p, url + "/")
    return p, url
