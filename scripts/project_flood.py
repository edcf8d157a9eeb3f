"""The attacks of issue 23 §5 and §6, on loopback, against a hub binary (figures in
BENCHMARKS.md). Two clients: the victim from 127.0.0.1, the attacker from 127.0.0.2.

  python3 scripts/project_flood.py evict <hub-binary> <projects> <posts-per-project> [serve flags]
      In process: the victim completes a run (3 events); the attacker POSTs ~60 KB logs
      to projects of its own. Prints the time taken and whether the victim's state and
      resume (SSE, Last-Event-ID) survive.
  python3 scripts/project_flood.py create <hub-binary> <projects> [serve flags]
      With Redis (a redis-server of its own on a free port): the attacker creates
      projects of one event each. Prints 202s, 429s, the rate, and Redis's used_memory
      before and after.
"""
import http.client, json, re, socket, subprocess, sys, tempfile, threading, time

def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0)); return s.getsockname()[1]

def start_hub(binary, flags):
    hub = subprocess.Popen([binary, "serve", "--listen", "127.0.0.1:0", "--no-worker", "--log-format", "json", *flags],
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    for line in hub.stderr:
        m = re.search(r"http://127\.0\.0\.1:(\d+)", line)
        if m: port = int(m.group(1)); break
    threading.Thread(target=lambda: [None for _ in hub.stderr], daemon=True).start()
    return hub, port

def post(conn, project, event):
    conn.request("POST", f"/api/v1/projects/{project}/events", json.dumps(event).encode(), {"content-type": "application/json"})
    r = conn.getresponse(); body = r.read()
    return r.status, json.loads(body or b"null")

def log(msg): return {"event": "log", "data": {"level": "INFO", "message": msg}}

def heavy(i):
    """An event of ~60 KB (an error's `details` is free-form, within the 64 KiB body)."""
    return {"event": "error", "data": {"error_code": "RENDER_ERROR", "message": f"m{i}", "stage": "RENDERING",
                                       "details": {"blob": "x" * 60000}}}

def evict(binary, projects, per_project, flags):
    hub, port = start_hub(binary, flags)
    victim = http.client.HTTPConnection("127.0.0.1", port, source_address=("127.0.0.1", 0))
    first = post(victim, "victim", {"event": "stage_change", "data": {"previous_stage": None, "current_stage": "RENDERING", "progress": 40}})[1]["id"]
    post(victim, "victim", log("rendering"))
    done = post(victim, "victim", {"event": "complete", "data": {"status": "COMPLETED"}})[1]["id"]
    attacker = http.client.HTTPConnection("127.0.0.1", port, source_address=("127.0.0.2", 0))
    statuses, t = {}, time.time()
    for i in range(projects * per_project):
        status, _ = post(attacker, f"flood-{i % projects}", heavy(i))
        statuses[status] = statuses.get(status, 0) + 1
    print(f"posted {projects * per_project} x ~60 KB to {projects} projects in {time.time() - t:.1f} s: {statuses}")
    victim = http.client.HTTPConnection("127.0.0.1", port)
    victim.request("GET", "/api/v1/projects/victim"); r = victim.getresponse(); state = r.read()
    print("victim state:", r.status, json.loads(state).get("status") if r.status == 200 else state.decode())
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(f"GET /api/v1/projects/victim/events HTTP/1.1\r\nHost: x\r\nLast-Event-ID: {first}\r\n\r\n".encode())
    s.settimeout(5); got = b""
    while b'"recovered"' not in got or done.encode() not in got and b'"recovered":false' not in got:
        chunk = s.recv(65536)
        if not chunk: break
        got += chunk
    recovered = re.search(rb'"recovered":(true|false)', got)
    print("victim resume recovered:", recovered.group(1).decode() if recovered else "?", "| complete replayed:", done.encode() in got)
    hub.kill()

def create(binary, projects, flags):
    port = free_port(); d = tempfile.mkdtemp()
    redis = subprocess.Popen(["redis-server", "--port", str(port), "--save", "", "--appendonly", "no", "--dir", d],
                             stdout=subprocess.DEVNULL)
    time.sleep(0.5)
    def used():
        out = subprocess.run(["redis-cli", "-p", str(port), "info", "memory"], capture_output=True, text=True).stdout
        return int(re.search(r"used_memory:(\d+)", out).group(1))
    hub, hport = start_hub(binary, ["--redis-url", f"redis://127.0.0.1:{port}", *flags])
    before = used()
    attacker = http.client.HTTPConnection("127.0.0.1", hport, source_address=("127.0.0.2", 0))
    statuses, t = {}, time.time()
    for i in range(projects):
        status, _ = post(attacker, f"c{i}", log("x"))
        statuses[status] = statuses.get(status, 0) + 1
    took = time.time() - t
    other = http.client.HTTPConnection("127.0.0.1", hport, source_address=("127.0.0.1", 0))
    print(f"{projects} new projects in {took:.1f} s ({projects / took:.0f}/s): {statuses}; another client: {post(other, 'other', log('x'))[0]}")
    print(f"redis used_memory: {before} -> {used()} bytes (+{(used() - before) / 1e6:.1f} MB)")
    hub.kill(); redis.kill()

if __name__ == "__main__":
    mode, binary = sys.argv[1], sys.argv[2]
    if mode == "evict": evict(binary, int(sys.argv[3]), int(sys.argv[4]), sys.argv[5:])
    else: create(binary, int(sys.argv[3]), sys.argv[4:])
