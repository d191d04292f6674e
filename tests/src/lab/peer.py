"""The rest of the network in the noisy-gateway lab (tests/src/lab.rs): LAN sensors and devices,
cloud endpoints, DNS and NTP, and the attackers' endpoints, all on addresses of this namespace's
one veth. Reads one JSON command per line on stdin; end of input ends it.

  {"cmd": "start", "seed": N, "scale": S, "gateway": A, "servers": [[proto, addr, port], ...],
   "devices": [addr, ...], "ui_client": addr}
  {"cmd": "scan", "host": A, "first": P, "last": P}      a TCP connect scan of the gateway
"""
import json, random, selectors, socket, struct, sys, threading, time

MAX_RUN = 4 * 3600
END = time.time() + MAX_RUN


def recv_exact(s, n):
    got = 0
    while got < n:
        d = s.recv(min(65536, n - got))
        if not d:
            break
        got += len(d)
    return got


def drain(c):
    while c.recv(65536):
        pass


def handle(kind, c):
    c.settimeout(30)
    try:
        if kind == "mqtt":
            while True:
                h = c.recv(2)
                if len(h) < 2:
                    break
                recv_exact(c, struct.unpack("!H", h)[0])
                c.sendall(b"ok")
        elif kind in ("api", "firmware"):
            line = c.recv(1024)
            want = min(int(line.split()[1]), 64 << 20)
            chunk = b"d" * 65536
            while want > 0:
                c.sendall(chunk[: min(want, len(chunk))])
                want -= min(want, len(chunk))
            drain(c)
        elif kind == "logs":
            drain(c)
            c.sendall(b"ok")
        elif kind == "modbus":
            c.recv(64)
            c.sendall(b"m" * 20)
            drain(c)
        elif kind == "c2":
            while True:
                if not c.recv(4096):
                    break
                c.sendall(b"c" * 60)
        elif kind == "rshell":
            c.settimeout(1)
            while time.time() < END:
                c.sendall(b"id; uname -a\n")
                try:
                    if not c.recv(4096):
                        break
                except socket.timeout:
                    pass
                time.sleep(1)
        else:
            drain(c)
    except (OSError, ValueError, IndexError):
        pass
    c.close()


def serve_tcp(listeners):
    sel = selectors.DefaultSelector()
    for kind, s in listeners:
        sel.register(s, selectors.EVENT_READ, kind)
    while time.time() < END:
        for key, _ in sel.select(0.5):
            try:
                c, _ = key.fileobj.accept()
            except OSError:
                continue
            threading.Thread(target=handle, args=(key.data, c), daemon=True).start()


def serve_udp(socks):
    sel = selectors.DefaultSelector()
    for kind, s in socks:
        sel.register(s, selectors.EVENT_READ, kind)
    while time.time() < END:
        for key, _ in sel.select(0.5):
            try:
                d, a = key.fileobj.recvfrom(2048)
                key.fileobj.sendto(d[:48] if key.data == "ntp" else d + b"a" * 40, a)
            except OSError:
                pass


def device(addr, gw, rng, sc):
    """A LAN device publishing to the gateway's broker, reconnecting now and then."""
    time.sleep(rng.uniform(0, 3))
    while time.time() < END:
        try:
            s = socket.socket()
            s.bind((addr, 0))
            s.settimeout(3)
            s.connect((gw, 1883))
            life = time.time() + rng.uniform(20, 60) * sc
            while time.time() < life:
                s.sendall(b"t" * rng.randint(20, 300))
                s.recv(16)
                time.sleep(rng.uniform(0.5, 4))
            s.close()
        except OSError:
            pass
        time.sleep(rng.uniform(0.5, 3))


def ui_client(addr, gw, rng, sc):
    while time.time() < END:
        time.sleep(rng.uniform(3, 15) * sc)
        try:
            s = socket.socket()
            s.bind((addr, 0))
            s.settimeout(2)
            s.connect((gw, 8080))
            s.sendall(b"GET / HTTP/1.0\r\n\r\n")
            drain(s)
            s.close()
        except OSError:
            pass


def scan(c):
    for p in range(c["first"], min(c["last"], c["first"] + 5000)):
        s = socket.socket()
        s.settimeout(0.2)
        try:
            s.connect((c["host"], p))
        except OSError:
            pass
        s.close()


def main():
    for line in sys.stdin:
        try:
            c = json.loads(line)
        except ValueError:
            continue
        if c["cmd"] == "start":
            rng = random.Random(c["seed"] ^ 0x5EED)
            tcp, udp = [], []
            for proto, addr, port in c["servers"]:
                if proto == "udp" or proto in ("dns", "ntp"):
                    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                    s.bind((addr, port))
                    udp.append((proto, s))
                else:
                    s = socket.socket()
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                    s.bind((addr, port))
                    s.listen(256)
                    tcp.append((proto, s))
            threading.Thread(target=serve_tcp, args=(tcp,), daemon=True).start()
            threading.Thread(target=serve_udp, args=(udp,), daemon=True).start()
            for a in c["devices"]:
                threading.Thread(target=device, args=(a, c["gateway"], random.Random(rng.random()), c["scale"]), daemon=True).start()
            threading.Thread(target=ui_client, args=(c["ui_client"], c["gateway"], random.Random(rng.random()), c["scale"]), daemon=True).start()
            print("ready", flush=True)
        elif c["cmd"] == "scan":
            threading.Thread(target=scan, args=(c,), daemon=True).start()


if __name__ == "__main__":
    main()
