"""Usage: python3 scripts/keepalive_flood.py target/debug/progress-hub 1030

Issue #17 §4.4 reproduced: one address (127.0.0.2) holds N keep-alive HTTP
connections to a hub run under `ulimit -n 1024`; meanwhile another address
(127.0.0.1) tries /healthz. Prints how many of the holder's connections got 200,
how long the other client waited for its 200, and the WARN lines the hub wrote."""
import socket, subprocess, sys, time, re, threading

binary, n = sys.argv[1], int(sys.argv[2])
hub = subprocess.Popen(["sh", "-c", f"ulimit -n 1024 && exec {binary} serve --listen 127.0.0.1:0 --log-format json --no-worker"],
                       stderr=subprocess.PIPE, text=True)
lines = []
url = None
for line in hub.stderr:
    lines.append(line)
    m = re.search(r"http://([0-9.]+):(\d+)", line)
    if m:
        port = int(m.group(2)); break
def drain():
    for line in hub.stderr: lines.append(line)
threading.Thread(target=drain, daemon=True).start()

def get(sock):
    sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: hub\r\n\r\n")
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk: return None
        data += chunk
    return int(data.split(b" ")[1])

held, statuses = [], {}
start = time.monotonic()
for i in range(n):
    s = socket.socket(); s.bind(("127.0.0.2", 0)); s.settimeout(0.3)
    try:
        s.connect(("127.0.0.1", port)); st = get(s)
    except Exception as e:
        st = type(e).__name__
    statuses[st] = statuses.get(st, 0) + 1
    held.append(s)
print(f"holder: {n} connections in {time.monotonic()-start:.1f} s -> {statuses}")
# Keep them alive: a request on each every 3 s (the hub's idle timeout is 10 s).
stop = False
def refresh():
    while not stop:
        time.sleep(3)
        for s in held:
            try: get(s)
            except Exception: pass
threading.Thread(target=refresh, daemon=True).start()
t0 = time.monotonic(); ok = None; tries = 0
while time.monotonic() - t0 < 25:
    tries += 1
    try:
        c = socket.create_connection(("127.0.0.1", port), timeout=2)
        st = get(c); c.close()
        if st == 200: ok = time.monotonic() - t0; break
    except Exception:
        pass
    time.sleep(0.05)
print(f"other client: 200 after {ok:.3f} s ({tries} tries)" if ok is not None else f"other client: no 200 within 25 s ({tries} tries)")
stop = True
for s in held: s.close()
time.sleep(0.5)
hub.terminate(); hub.wait(timeout=15)
warn = [l for l in lines if '"WARN"' in l]
pat = re.compile(r'"message":"([^"]*)')
kinds = {}
for l in warn:
    k = pat.search(l).group(1); kinds[k] = kinds.get(k, 0) + 1
print(f"WARN lines: {len(warn)}; by message: {kinds}")
