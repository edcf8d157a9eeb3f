"""Measures what many tiny projects cost an in-process hub against its memory budget
(issue 23 §5; figures in docs/RELIABILITY.md): N projects of one tiny `log` each,
POSTed one after another. Usage: python3 scripts/tiny_projects.py <hub-binary> <n>
[serve flags, e.g. --memory-budget 16777216]. Prints the hub's RSS before and after."""
import http.client, re, subprocess, sys, time
binary, n = sys.argv[1], int(sys.argv[2])
hub = subprocess.Popen([binary, "serve", "--listen", "127.0.0.1:0", "--no-worker", "--log-format", "json", *sys.argv[3:]],
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
for line in hub.stderr:
    m = re.search(r"http://127\.0\.0\.1:(\d+)", line)
    if m: port = int(m.group(1)); break
import threading; threading.Thread(target=lambda: [None for _ in hub.stderr], daemon=True).start()
def rss():
    for l in open(f"/proc/{hub.pid}/status"):
        if l.startswith("VmRSS"): return int(l.split()[1]) // 1024
print("rss_before_mb", rss(), flush=True)
c = http.client.HTTPConnection("127.0.0.1", port)
body = b'{"event":"log","data":{"level":"INFO","message":"x"}}'
t = time.time()
for i in range(n):
    c.request("POST", f"/api/v1/projects/t{i}/events", body, {"content-type": "application/json"})
    r = c.getresponse(); r.read()
    assert r.status == 202, r.status
print("posted", n, "in", round(time.time() - t, 1), "s", flush=True)
time.sleep(1)
print("rss_after_mb", rss(), flush=True)
hub.kill()
