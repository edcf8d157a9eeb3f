// progress-hub monitor page: plain JS, no build step, no CDN.
// Connects by WebSocket, answers pings, reconnects with exponential backoff and jitter,
// and resumes from the last event id it saw, so no log line is lost or doubled.
(function () {
  "use strict";
  const params = new URLSearchParams(location.search);
  const lang = params.get("lang") === "en" ? "en" : "zh";
  // With access control on, the page is opened with ?token=<jwt>.
  const token = params.get("token");
  const authHeaders = token ? { authorization: `Bearer ${token}` } : {};
  const T = {
    zh: {
      brand: "影片生成進度", homeTitle: "開始一次示範生成", topicLabel: "主題",
      flakyLabel: "模擬暫時性錯誤（素材階段失敗兩次後成功）", startButton: "開始生成",
      openTitle: "開啟專案", projectIdLabel: "專案 ID", openButton: "開啟", projectTitle: "專案",
      errorTitle: "發生錯誤", solutionsTitle: "建議的處理方式", logTitle: "即時日誌",
      defaultTopic: "AI 科技趨勢", connecting: "連線中…", online: "已連線",
      reconnecting: (s) => `重新連線中（${s} 秒）`, offline: "離線", waiting: "等待開始…",
      eta: (s) => `預計剩餘 ${fmt(s)}`, took: (s) => `耗時 ${fmt(s)}`,
      states: { done: "已完成", current: "進行中", pending: "等待中", failed: "失敗" },
      stages: { SCRIPT_GENERATING: "腳本", ASSETS_GENERATING: "素材", RENDERING: "渲染", THUMBNAIL_GENERATING: "封面", UPLOADING: "上傳" },
      retry: (n, m) => `重試 ${n} / ${m}`, completed: "生成完成", failed: "生成失敗",
      watch: "在 YouTube 觀看", failedBody: "重試次數已用盡，請參考上方的建議後重新生成。",
      startFailed: "無法開始生成：", busy: "這個專案已有生成工作在進行中。",
      levels: { INFO: "資訊", WARNING: "警告", ERROR: "錯誤" },
    },
    en: {
      brand: "Video generation progress", homeTitle: "Start a demo generation", topicLabel: "Topic",
      flakyLabel: "Simulate transient failures (assets fail twice, then succeed)", startButton: "Start",
      openTitle: "Open a project", projectIdLabel: "Project id", openButton: "Open", projectTitle: "Project",
      errorTitle: "Error", solutionsTitle: "What you can do", logTitle: "Live log",
      defaultTopic: "AI technology trends", connecting: "Connecting…", online: "Connected",
      reconnecting: (s) => `Reconnecting in ${s} s`, offline: "Offline", waiting: "Waiting to start…",
      eta: (s) => `about ${fmt(s)} left`, took: (s) => `took ${fmt(s)}`,
      states: { done: "done", current: "in progress", pending: "pending", failed: "failed" },
      stages: { SCRIPT_GENERATING: "Script", ASSETS_GENERATING: "Assets", RENDERING: "Render", THUMBNAIL_GENERATING: "Thumbnail", UPLOADING: "Upload" },
      retry: (n, m) => `retry ${n} / ${m}`, completed: "Generation complete", failed: "Generation failed",
      watch: "Watch on YouTube", failedBody: "Retries are exhausted; see the suggestions above, then generate again.",
      startFailed: "Could not start: ", busy: "A generation is already running for this project.",
      levels: { INFO: "INFO", WARNING: "WARN", ERROR: "ERROR" },
    },
  }[lang];
  const STAGES = ["SCRIPT_GENERATING", "ASSETS_GENERATING", "RENDERING", "THUMBNAIL_GENERATING", "UPLOADING"];
  const $ = (id) => document.getElementById(id);

  function fmt(seconds) {
    const s = Math.max(0, Math.round(seconds));
    if (lang === "en") return s >= 60 ? `${Math.floor(s / 60)} min ${s % 60} s` : `${s} s`;
    return s >= 60 ? `${Math.floor(s / 60)} 分 ${s % 60} 秒` : `${s} 秒`;
  }
  function withLang(path) {
    const q = new URLSearchParams();
    if (lang === "en") q.set("lang", "en");
    if (token) q.set("token", token);
    const qs = q.toString();
    return qs ? `${path}?${qs}` : path;
  }

  document.documentElement.lang = lang === "en" ? "en" : "zh-Hant";
  document.querySelectorAll("[data-i18n]").forEach((el) => { el.textContent = T[el.dataset.i18n]; });

  const match = location.pathname.match(/^\/projects\/([A-Za-z0-9_-]{1,64})$/);
  if (match) monitor(match[1]); else home();

  // ---- home: start a demo, or open a project ----
  function home() {
    $("home").hidden = false;
    $("conn").hidden = true;
    $("topic").value = T.defaultTopic;
    $("start-form").addEventListener("submit", async (e) => {
      e.preventDefault();
      $("start").disabled = true;
      $("start-error").textContent = "";
      try {
        const created = await fetch("/api/v1/projects", { method: "POST", headers: authHeaders });
        if (!created.ok) throw new Error(`HTTP ${created.status}`);
        const { id } = await created.json();
        const body = { topic: $("topic").value };
        if ($("flaky").checked) body.inject_failures = { ASSETS_GENERATING: 2 };
        const started = await fetch(`/api/v1/projects/${id}/generate`, {
          method: "POST", headers: { "content-type": "application/json", ...authHeaders }, body: JSON.stringify(body),
        });
        if (!started.ok) {
          const err = await started.json().catch(() => ({}));
          throw new Error(started.status === 409 ? T.busy : (err.error && err.error.message) || `HTTP ${started.status}`);
        }
        location.href = withLang(`/projects/${id}`);
      } catch (err) {
        $("start-error").textContent = T.startFailed + err.message;
        $("start").disabled = false;
      }
    });
    $("open-form").addEventListener("submit", (e) => {
      e.preventDefault();
      location.href = withLang(`/projects/${$("project-id").value}`);
    });
  }

  // ---- monitor: one project's progress ----
  function monitor(projectId) {
    $("monitor").hidden = false;
    $("project-name").textContent = projectId;
    $("stage-text").textContent = T.waiting;
    const stageStart = {}; const stageEnd = {};
    let current = null; let failedStage = null;
    let lastId = null; let attempt = 0; let ws = null; let countdown = null; let timer = null;
    let finished = false;
    let backfilled = false;
    let resumedConn = false;

    STAGES.forEach((s) => {
      const li = document.createElement("li");
      li.id = `stage-${s}`;
      li.innerHTML = `<span class="name"></span><span class="state"></span>`;
      li.querySelector(".name").textContent = T.stages[s];
      $("timeline").appendChild(li);
    });

    function renderTimeline() {
      const idx = STAGES.indexOf(current);
      STAGES.forEach((s, i) => {
        const li = $(`stage-${s}`);
        let state = "pending";
        if (s === failedStage) state = "failed";
        else if (finished && !failedStage) state = "done";
        else if (idx >= 0 && i < idx) state = "done";
        else if (i === idx) state = "current";
        li.className = state;
        let text = T.states[state];
        if (stageStart[s] && stageEnd[s]) text += ` · ${T.took((stageEnd[s] - stageStart[s]) / 1000)}`;
        li.querySelector(".state").textContent = text;
      });
    }

    function setProgress(p) {
      const v = Math.max(0, Math.min(100, Number(p) || 0));
      $("bar-fill").style.width = `${v}%`;
      $("bar").setAttribute("aria-valuenow", String(v));
      $("percent").textContent = `${v}%`;
    }
    function setEta(s) { $("eta").textContent = s == null || finished ? "" : T.eta(s); }

    function enterStage(stage, at) {
      if (current && current !== stage && !stageEnd[current]) stageEnd[current] = at;
      if (!stageStart[stage]) stageStart[stage] = at;
      current = stage;
      renderTimeline();
    }

    const logEl = $("log");
    function addLog(d) {
      const stick = logEl.scrollHeight - logEl.scrollTop - logEl.clientHeight < 24;
      const line = document.createElement("div");
      const level = ["INFO", "WARNING", "ERROR"].includes(d.level) ? d.level : "INFO";
      line.className = `line ${level}`;
      const time = document.createElement("span"); time.className = "time";
      time.textContent = d.timestamp ? new Date(d.timestamp).toLocaleTimeString() : "";
      const lvl = document.createElement("span"); lvl.className = "lvl"; lvl.textContent = T.levels[level];
      const msg = document.createElement("span"); msg.className = "msg"; msg.textContent = d.message;
      line.append(time, lvl, msg);
      logEl.appendChild(line);
      if (stick) logEl.scrollTop = logEl.scrollHeight;
    }

    function showError(d) {
      $("error-card").hidden = false;
      $("error-code").textContent = d.error_code;
      $("error-message").textContent = d.message;
      $("error-retry").textContent = `${T.stages[d.stage] || d.stage} · ${T.retry(d.retry_count, d.max_retries)}`;
      const ul = $("error-solutions"); ul.textContent = "";
      (d.solutions || []).forEach((s) => { const li = document.createElement("li"); li.textContent = s; ul.appendChild(li); });
    }

    function showDone(status, url) {
      finished = true;
      const card = $("done-card");
      card.hidden = false;
      const ok = status === "COMPLETED";
      card.classList.toggle("failed", !ok);
      $("bar").classList.toggle("complete", ok);
      $("done-title").textContent = ok ? T.completed : T.failed;
      const body = $("done-body"); body.textContent = "";
      if (ok && url) {
        const a = document.createElement("a"); a.id = "youtube-link"; a.href = url; a.textContent = `${T.watch}: ${url}`;
        a.target = "_blank"; a.rel = "noopener";
        body.appendChild(a);
      } else if (!ok) {
        failedStage = current;
        body.textContent = T.failedBody;
      }
      if (ok) $("error-card").hidden = true;
      $("stage-text").textContent = ok ? T.completed : T.failed;
      setEta(null);
      renderTimeline();
    }

    function reset() {
      logEl.textContent = "";
      $("error-card").hidden = true; $("done-card").hidden = true;
      finished = false; failedStage = null; current = null;
      for (const k in stageStart) delete stageStart[k];
      for (const k in stageEnd) delete stageEnd[k];
      renderTimeline();
    }

    function applySnapshot(d) {
      setProgress(d.progress);
      if (d.current_stage) $("stage-text").textContent = d.current_stage;
      if (STAGES.includes(d.status)) enterStage(d.status, Date.now());
      if (d.status === "COMPLETED" || d.status === "FAILED") showDone(d.status, d.youtube_url);
      else setEta(d.estimated_remaining);
      if (d.last_event_id) lastId = d.last_event_id;
    }

    function onFrame(f) {
      if (f.id) lastId = f.id;
      const d = f.data || {};
      switch (f.event) {
        case "connected":
          attempt = 0;
          resumedConn = Boolean(d.resumed);
          setConn("online", T.online);
          // A resume the hub could not honour: start over from the snapshot that follows.
          if (d.resumed && !d.recovered) reset();
          break;
        case "snapshot":
          // Joined mid-run: read the whole history once (from the snapshot's epoch, position
          // 0), so the log and the timeline are complete; the hub replays it in order.
          if (!resumedConn && !backfilled && d.last_event_id && !logEl.firstChild) {
            backfilled = true;
            lastId = `${d.last_event_id.split(":")[0]}:0`;
            ws.onclose = null;
            ws.close();
            connect();
            return;
          }
          applySnapshot(d);
          break;
        case "progress_update":
          setProgress(d.progress); $("stage-text").textContent = d.current_stage;
          if (STAGES.includes(d.status) && d.status !== current) enterStage(d.status, Date.parse(d.timestamp) || Date.now());
          setEta(d.estimated_remaining);
          break;
        case "stage_change":
          setProgress(d.progress);
          enterStage(d.current_stage, Date.parse(d.timestamp) || Date.now());
          $("stage-text").textContent = T.stages[d.current_stage] || d.current_stage;
          break;
        case "log": addLog(d); break;
        case "error": showError(d); break;
        case "complete":
          if (current) stageEnd[current] = Date.parse(d.timestamp) || Date.now();
          setProgress(d.status === "COMPLETED" ? 100 : $("bar").getAttribute("aria-valuenow"));
          showDone(d.status, d.youtube_url);
          break;
        case "ping": send({ event: "pong" }); break;
        default: break;
      }
    }

    function send(obj) { if (ws && ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify(obj)); }

    function setConn(state, text) {
      const el = $("conn");
      el.className = `conn ${state}`;
      $("conn-text").textContent = text;
      el.dataset.state = state;
    }

    function connect() {
      clearInterval(countdown);
      clearTimeout(timer);
      setConn("connecting", T.connecting);
      const scheme = location.protocol === "https:" ? "wss" : "ws";
      let url = `${scheme}://${location.host}/api/v1/projects/${projectId}/progress`;
      const q = new URLSearchParams();
      if (lastId) q.set("last_event_id", lastId);
      if (token) q.set("token", token);
      if (q.toString()) url += `?${q}`;
      ws = new WebSocket(url);
      ws.onmessage = (m) => { try { onFrame(JSON.parse(m.data)); } catch (e) { /* not a frame */ } };
      ws.onclose = () => scheduleReconnect();
    }

    function scheduleReconnect() {
      // Exponential backoff with jitter, so a hub restart does not become a storm.
      const base = Math.min(30000, 500 * 2 ** attempt);
      const delay = base / 2 + Math.random() * base / 2;
      attempt += 1;
      let left = Math.ceil(delay / 1000);
      const tick = () => {
        if (!navigator.onLine) setConn("offline", T.offline);
        else setConn("reconnecting", T.reconnecting(left));
        left -= 1;
      };
      tick();
      clearInterval(countdown);
      countdown = setInterval(tick, 1000);
      timer = setTimeout(connect, delay);
    }

    window.addEventListener("online", () => { if (ws && ws.readyState === WebSocket.CLOSED) connect(); });
    renderTimeline();
    connect();
  }
})();
