"""Measures what stalled SSE readers cost the hub (issue 23 §3; figures in
docs/RELIABILITY.md): 1,000 SSE readers of one project that never read, then 200 log
frames of ~24 KB published by plain PUBLISH. Usage (needs `ulimit -n` above 2,000 and
redis-cli): python3 scripts/stalled_sse.py <hub-binary> <redis-port>. Prints the hub's
RSS before, after the burst, and 15 s and 75 s later, and how many of the readers'
connections the hub has closed."""
import os, socket, subprocess, sys, time, re
binary, port = sys.argv[1], int(sys.argv[2])
env = dict(os.environ, REDIS_URL=f"redis://127.0.0.1:{port}", HUB_HANDSHAKE_TIMEOUT="600s")
hub = subprocess.Popen([binary, "serve", "--listen", "127.0.0.1:0", "--no-worker", "--log-format", "json"],
                       env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
url = None
for line in hub.stderr:
    m = re.search(r"http://127\.0\.0\.1:(\d+)", line)
    if m: url = int(m.group(1)); break
import threading; threading.Thread(target=lambda: [None for _ in hub.stderr], daemon=True).start()
def rss():
    for l in open(f"/proc/{hub.pid}/status"):
        if l.startswith("VmRSS"): return int(l.split()[1]) // 1024
readers = []
for i in range(1000):
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.connect(("127.0.0.1", url))
    s.sendall(b"GET /api/v1/projects/stall/events HTTP/1.1\r\nhost: hub\r\naccept: text/event-stream\r\n\r\n")
    readers.append(s)
time.sleep(3)
print("rss_before_mb", rss(), flush=True)
pad = "x" * 24000
for i in range(200):
    subprocess.run(["redis-cli", "-p", str(port), "PUBLISH", "progress:stall",
                    '{"event":"log","data":{"level":"INFO","message":"%d %s"}}' % (i, pad)],
                   stdout=subprocess.DEVNULL, check=True)
time.sleep(2)
print("rss_after_burst_mb", rss(), flush=True)
def closed():
    n = 0
    for s in readers:
        try:
            s.setblocking(False)
            # Drain what reached the socket; an end of stream means the hub closed it.
            while True:
                d = s.recv(65536)
                if not d:
                    n += 1
                    break
        except BlockingIOError:
            pass
        except OSError:
            n += 1
    return n
for wait in (15, 60):
    time.sleep(wait)
    print(f"rss_after_{wait}s_more_mb", rss(), flush=True)
print("readers_closed_by_hub", closed(), flush=True)
hub.kill()
