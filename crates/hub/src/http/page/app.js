// progress-hub monitor page: plain JS, no build step at runtime, no CDN.
// Watching is progress-hub-client's job (the same package front ends import; the hub
// embeds its build at /assets/progress-hub-client.js): it answers pings, reconnects
// with jittered backoff, resumes from the last event id (no log line lost or doubled),
// and folds frames into one state. This file only renders that state.
import { watchProject } from "/assets/progress-hub-client.js";
import { connectionBadge, drawBar, duration, texts } from "/assets/render.js";

{
  const params = new URLSearchParams(location.search);
  const lang = params.get("lang") === "en" ? "en" : "zh";
  // With access control on, the page is opened with ?token=<jwt>.
  const token = params.get("token");
  const authHeaders = token ? { authorization: `Bearer ${token}` } : {};
  const T = texts(lang, {
    zh: {
      brand: "影片生成進度", homeTitle: "開始一次示範生成", topicLabel: "主題",
      flakyLabel: "模擬暫時性錯誤（素材階段失敗兩次後成功）", startButton: "開始生成",
      openTitle: "開啟專案", projectIdLabel: "專案 ID", openButton: "開啟", projectTitle: "專案",
      errorTitle: "發生錯誤", solutionsTitle: "建議的處理方式", logTitle: "即時日誌",
      defaultTopic: "AI 科技趨勢", waiting: "等待開始…", took: (s) => `耗時 ${duration(lang, s)}`,
      states: { done: "已完成", current: "進行中", pending: "等待中", failed: "失敗", cancelled: "已取消" },
      retry: (n, m) => `重試 ${n} / ${m}`, completed: "生成完成", failed: "生成失敗", cancelled: "已取消",
      watch: "在 YouTube 觀看", failedBody: "重試次數已用盡，請參考上方的建議後重新生成。",
      cancelledBody: "工作已依要求停止；已完成的步驟不會重做。",
      cancelButton: "取消", retryButton: "從失敗處重試", actionFailed: "無法執行：",
      startFailed: "無法開始生成：", busy: "這個專案已有生成工作在進行中。",
      takenOver: "已由其他 worker 接手，從中斷處繼續",
      stalled: (t) => `停滯：自 ${t} 起沒有任何更新`, workerLost: (t) => `worker 已失聯（自 ${t} 起）`,
      brokerDown: (t) => `訊息代理（Redis）無法使用，更新已暫停（自 ${t}）`,
      brokerBack: (t) => `訊息代理已恢復（${t}），更新繼續`,
      levels: { INFO: "資訊", WARNING: "警告", ERROR: "錯誤" },
    },
    en: {
      brand: "Video generation progress", homeTitle: "Start a demo generation", topicLabel: "Topic",
      flakyLabel: "Simulate transient failures (assets fail twice, then succeed)", startButton: "Start",
      openTitle: "Open a project", projectIdLabel: "Project id", openButton: "Open", projectTitle: "Project",
      errorTitle: "Error", solutionsTitle: "What you can do", logTitle: "Live log",
      defaultTopic: "AI technology trends", waiting: "Waiting to start…", took: (s) => `took ${duration(lang, s)}`,
      states: { done: "done", current: "in progress", pending: "pending", failed: "failed", cancelled: "cancelled" },
      retry: (n, m) => `retry ${n} / ${m}`, completed: "Generation complete", failed: "Generation failed", cancelled: "Cancelled",
      watch: "Watch on YouTube", failedBody: "Retries are exhausted; see the suggestions above, then generate again.",
      cancelledBody: "The job was stopped on request.",
      cancelButton: "Cancel", retryButton: "Retry from where it stopped", actionFailed: "Could not do it: ",
      startFailed: "Could not start: ", busy: "A generation is already running for this project.",
      takenOver: "taken over by another worker, going on where it stopped",
      stalled: (t) => `stalled: no update since ${t}`, workerLost: (t) => `worker lost (since ${t})`,
      brokerDown: (t) => `Broker unavailable, updates paused (since ${t})`,
      brokerBack: (t) => `Broker back (${t}), updates resumed`,
      levels: { INFO: "INFO", WARNING: "WARN", ERROR: "ERROR" },
    },
  }[lang]);
  const STAGES = ["SCRIPT_GENERATING", "ASSETS_GENERATING", "RENDERING", "THUMBNAIL_GENERATING", "UPLOADING"];
  const $ = (id) => document.getElementById(id);

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
  // /dashboard (a tag's running jobs on one connection) is dashboard.js's.
  if (match) monitor(match[1]); else if (location.pathname === "/dashboard") import("/assets/dashboard.js"); else home();

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
        const created = await fetch("/api/v1/projects", { method: "POST", headers: { "content-type": "application/json", ...authHeaders } });
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

  // ---- monitor: one project's progress, rendered from the client's state ----
  function monitor(projectId) {
    $("monitor").hidden = false;
    $("project-name").textContent = projectId;
    $("stage-text").textContent = T.waiting;
    const logEl = $("log");
    let shownLog = null; // the newest log entry already in the DOM
    let broker = "up"; // the broker state shown

    STAGES.forEach((s) => {
      const li = document.createElement("li");
      li.id = `stage-${s}`;
      li.innerHTML = `<span class="name"></span><span class="state"></span>`;
      li.querySelector(".name").textContent = T.stages[s];
      $("timeline").appendChild(li);
    });

    const CLASS = { pending: "pending", running: "current", done: "done", failed: "failed", cancelled: "cancelled" };
    function renderTimeline(stages) {
      STAGES.forEach((s) => {
        const info = stages[s];
        const state = CLASS[info.outcome];
        const li = $(`stage-${s}`);
        li.className = state;
        let text = T.states[state];
        if (info.durationMs != null) text += ` · ${T.took(info.durationMs / 1000)}`;
        li.querySelector(".state").textContent = text;
      });
    }

    function lineOf(entry) {
      const line = document.createElement("div");
      const level = ["INFO", "WARNING", "ERROR"].includes(entry.level) ? entry.level : "INFO";
      line.className = `line ${level}`;
      const time = document.createElement("span"); time.className = "time";
      time.textContent = entry.timestamp ? new Date(entry.timestamp).toLocaleTimeString() : "";
      const lvl = document.createElement("span"); lvl.className = "lvl"; lvl.textContent = T.levels[level];
      const msg = document.createElement("span"); msg.className = "msg"; msg.textContent = entry.message;
      line.append(time, lvl, msg);
      return line;
    }
    function renderLogs(logs) {
      // Append what is new; when the log was reset (a lost history, a new run), redraw.
      let from = shownLog ? logs.lastIndexOf(shownLog) + 1 : 0;
      if (from === 0 && shownLog) logEl.textContent = "";
      if (from >= logs.length) return;
      const stick = logEl.scrollHeight - logEl.scrollTop - logEl.clientHeight < 24;
      for (; from < logs.length; from++) logEl.appendChild(lineOf(logs[from]));
      shownLog = logs[logs.length - 1];
      if (stick) logEl.scrollTop = logEl.scrollHeight;
    }
    function resetLogsIfEmpty(logs) {
      if (!logs.length && shownLog) { logEl.textContent = ""; shownLog = null; }
    }

    function renderError(e) {
      $("error-card").hidden = !e;
      if (!e) return;
      $("error-code").textContent = e.code;
      $("error-message").textContent = e.message;
      $("error-retry").textContent = `${T.stages[e.stage] || e.stage} · ${T.retry(e.retryCount, e.maxRetries)}`;
      const ul = $("error-solutions"); ul.textContent = "";
      e.solutions.forEach((s) => { const li = document.createElement("li"); li.textContent = s; ul.appendChild(li); });
    }

    // Cancel (while a run is under way) and Retry (after it failed or was cancelled):
    // the hub's answer comes as events; only a refusal is shown here.
    async function act(action, button) {
      button.disabled = true;
      $("action-error").textContent = "";
      try {
        const answer = await fetch(`/api/v1/projects/${projectId}/${action}`, {
          method: "POST", headers: { "content-type": "application/json", ...authHeaders }, body: "{}",
        });
        if (!answer.ok) {
          const err = await answer.json().catch(() => ({}));
          throw new Error((err.error && err.error.message) || `HTTP ${answer.status}`);
        }
      } catch (err) {
        $("action-error").textContent = T.actionFailed + err.message;
      } finally {
        button.disabled = false;
      }
    }
    $("cancel-button").addEventListener("click", () => act("cancel", $("cancel-button")));
    $("retry-button").addEventListener("click", () => act("retry", $("retry-button")));

    // A run's end, by its `complete` status: its title and the text under it.
    const ENDS = {
      COMPLETED: () => [T.completed, ""],
      FAILED: () => [T.failed, T.failedBody],
      CANCELLED: () => [T.cancelled, T.cancelledBody],
    };
    const endOf = (status) => (ENDS[status] ? ENDS[status]() : null);

    function renderDone(status, url) {
      const card = $("done-card");
      const end = endOf(status);
      card.hidden = !end;
      const ok = status === "COMPLETED";
      $("bar").classList.toggle("complete", ok);
      if (!end) return;
      card.classList.toggle("failed", status === "FAILED");
      card.classList.toggle("cancelled", status === "CANCELLED");
      $("done-title").textContent = end[0];
      const body = $("done-body"); body.textContent = end[1];
      if (ok && url) {
        const a = document.createElement("a"); a.id = "youtube-link"; a.href = url; a.textContent = `${T.watch}: ${url}`;
        a.target = "_blank"; a.rel = "noopener";
        body.appendChild(a);
      }
    }

    function render(state) {
      drawBar({ bar: $("bar"), fill: $("bar-fill"), percent: $("percent") }, state.progress);
      const end = endOf(state.status);
      $("cancel-button").hidden = !state.status || !!end;
      $("retry-button").hidden = state.status !== "FAILED" && state.status !== "CANCELLED";
      // A stage running parallel units says how many are done: "Assets 7/17 · ...".
      const units = !end && state.units ? `${T.stages[state.status] || state.status} ${state.units.done}/${state.units.total}` : "";
      const stageText = end ? end[0]
        : state.status === "QUEUED" ? T.queued(state.queuePosition)
        : units ? (state.currentStage ? `${units} · ${state.currentStage}` : units)
        : state.currentStage || T.stages[state.status] || T.waiting;
      // A run another worker took over says so for the rest of the run; a silent one
      // says it is stalled (or that its worker is lost) until it publishes again.
      let text = state.takenOver ? `${stageText} · ${T.takenOver}` : stageText;
      if (state.stalled && !end) {
        const since = new Date(state.stalled.since);
        const at = isNaN(since) ? state.stalled.since : since.toLocaleTimeString();
        text = `${text} · ${state.stalled.reason === "worker_lost" ? T.workerLost(at) : T.stalled(at)}`;
      }
      $("stage-text").textContent = text;
      $("stage-text").dataset.stalled = state.stalled && !end ? state.stalled.reason : "";
      renderBroker(state.broker);
      // While the broker is down no update can arrive: an estimate would only grow stale.
      const down = state.broker === "down";
      $("eta").textContent = state.estimatedRemaining == null || end || down ? "" : T.eta(state.estimatedRemaining);
      renderTimeline(state.stages);
      resetLogsIfEmpty(state.logs);
      renderLogs(state.logs);
      renderError(state.error);
      renderDone(state.status, state.youtubeUrl);
    }

    // The hub says when its broker (Redis) is unavailable and when it is back: the page
    // says so too, instead of "Connected" with nothing moving.
    function renderBroker(now) {
      if (now === broker) return;
      broker = now;
      const since = new Date().toLocaleTimeString();
      const el = $("broker");
      el.hidden = false;
      el.dataset.state = now;
      el.textContent = now === "down" ? T.brokerDown(since) : T.brokerBack(since);
    }

    const badge = connectionBadge($("conn"), $("conn-text"), T);

    renderTimeline(Object.fromEntries(STAGES.map((s) => [s, { outcome: "pending", durationMs: null }])));
    // A monitor page stays open after `complete`: a next run of the project shows too.
    const watch = watchProject(location.origin, projectId, { token: token || undefined, stayOpen: true, onState: render, onConnection: badge.onConnection });
    watch.done.catch((err) => {
      if (err.code === "CLOSED") return;
      badge.offline();
      $("stage-text").textContent = `${err.code}: ${err.message}`;
    });
  }
}
