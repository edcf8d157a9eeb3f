// progress-hub dashboard (/dashboard?tag=user:7): every running job of a tag with a
// live bar, stage and ETA, on ONE connection (watchProjects, a tag subscription with the
// filter `active`); jobs appear as they start, and a job that ends while the page is
// open stays, marked with its end, until the page is reloaded. A click opens the
// project's own view. app.js loads this file for /dashboard; plain JS, no build step.
import { watchProjects } from "/assets/progress-hub-projects.js";

const params = new URLSearchParams(location.search);
const lang = params.get("lang") === "en" ? "en" : "zh";
const token = params.get("token");
const tag = params.get("tag");
const T = {
  zh: {
    title: "進行中的工作", tagLabel: "標籤", show: "顯示", none: "目前沒有進行中的工作。",
    noTag: "請輸入標籤（例如 user:7）。集線器尚未提供「所有專案」的即時來源：儀表板依標籤顯示。",
    connecting: "連線中…", online: "已連線", reconnecting: (s) => `重新連線中（${s} 秒）`, offline: "離線",
    eta: (s) => `預計剩餘 ${fmt(s)}`, queued: (n) => (n ? `排隊中（第 ${n} 位）` : "排隊中"),
    ends: { COMPLETED: "已完成", FAILED: "失敗", CANCELLED: "已取消" },
    stages: { SCRIPT_GENERATING: "腳本", ASSETS_GENERATING: "素材", RENDERING: "渲染", THUMBNAIL_GENERATING: "封面", UPLOADING: "上傳" },
  },
  en: {
    title: "Running jobs", tagLabel: "Tag", show: "Show", none: "No job is running now.",
    noTag: "Enter a tag (e.g. user:7). The hub has no live feed of all projects yet: the dashboard shows a tag's.",
    connecting: "Connecting…", online: "Connected", reconnecting: (s) => `Reconnecting in ${s} s`, offline: "Offline",
    eta: (s) => `about ${fmt(s)} left`, queued: (n) => (n ? `Queued (position ${n})` : "Queued"),
    ends: { COMPLETED: "Completed", FAILED: "Failed", CANCELLED: "Cancelled" },
    stages: { SCRIPT_GENERATING: "Script", ASSETS_GENERATING: "Assets", RENDERING: "Render", THUMBNAIL_GENERATING: "Thumbnail", UPLOADING: "Upload" },
  },
}[lang];
const $ = (id) => document.getElementById(id);

function fmt(seconds) {
  const s = Math.max(0, Math.round(seconds));
  if (lang === "en") return s >= 60 ? `${Math.floor(s / 60)} min ${s % 60} s` : `${s} s`;
  return s >= 60 ? `${Math.floor(s / 60)} 分 ${s % 60} 秒` : `${s} 秒`;
}
function link(path) {
  const q = new URLSearchParams();
  if (lang === "en") q.set("lang", "en");
  if (token) q.set("token", token);
  const qs = q.toString();
  return qs ? `${path}?${qs}` : path;
}

$("dashboard").hidden = false;
$("dash-title").textContent = T.title;
$("dash-tag-label").textContent = T.tagLabel;
$("dash-show").textContent = T.show;
$("dash-tag").value = tag || "";
$("dash-form").addEventListener("submit", (e) => {
  e.preventDefault();
  const q = new URLSearchParams(location.search);
  q.set("tag", $("dash-tag").value);
  location.search = q.toString();
});

if (!tag) {
  $("conn").hidden = true;
  $("dash-empty").textContent = T.noTag;
} else {
  watch();
}

function watch() {
  const rows = new Map(); // project id → its <li>
  const list = $("dash-list");
  let countdown = null;

  function row(id) {
    let li = rows.get(id);
    if (li) return li;
    li = document.createElement("li");
    li.dataset.project = id;
    li.innerHTML = `<a class="name"></a><div class="progress" role="progressbar" aria-valuemin="0" aria-valuemax="100"><div class="fill"></div></div><span class="percent"></span><p class="meta"><span class="stage"></span><span class="eta"></span></p>`;
    const a = li.querySelector("a");
    a.href = link(`/projects/${id}`);
    a.textContent = id;
    rows.set(id, li);
    return li;
  }

  function render(p) {
    const li = row(p.project_id);
    const end = T.ends[p.status];
    const v = Math.max(0, Math.min(100, Number(p.progress) || 0));
    li.dataset.status = p.status || "";
    li.className = end ? `ended ${p.status}` : "running";
    li.querySelector(".fill").style.width = `${v}%`;
    li.querySelector(".progress").setAttribute("aria-valuenow", String(v));
    li.querySelector(".percent").textContent = `${v}%`;
    const units = p.units_total ? ` ${p.units_done ?? 0}/${p.units_total}` : "";
    li.querySelector(".stage").textContent = end
      || (p.status === "QUEUED" ? T.queued(p.queue_position) : `${T.stages[p.status] || p.status || ""}${units}${p.current_stage ? ` · ${p.current_stage}` : ""}`);
    li.querySelector(".eta").textContent = end || p.estimated_remaining == null ? "" : T.eta(p.estimated_remaining);
  }

  function draw(w) {
    const projects = w.tagged(tag, {});
    const seen = new Set();
    // Running first, newest first (the hub's order); then those that ended while open.
    const ordered = projects.filter((p) => !T.ends[p.status]).concat(projects.filter((p) => T.ends[p.status]));
    ordered.forEach((p, i) => {
      seen.add(p.project_id);
      render(p);
      const li = rows.get(p.project_id);
      if (list.children[i] !== li) list.insertBefore(li, list.children[i] || null);
    });
    for (const [id, li] of rows) if (!seen.has(id)) { li.remove(); rows.delete(id); }
    $("dash-empty").textContent = projects.some((p) => !T.ends[p.status]) ? "" : T.none;
    const err = w.errors.get(`tag:${tag}`);
    $("dash-error").textContent = err ? `${err.code}: ${err.message}` : "";
  }

  function setConn(state, text) {
    const el = $("conn");
    el.className = `conn ${state}`;
    $("conn-text").textContent = text;
    el.dataset.state = state;
  }
  function onConnection(c) {
    clearInterval(countdown);
    if (c.status === "open") return setConn("online", T.online);
    if (c.status === "connecting") return setConn("connecting", T.connecting);
    if (c.status === "closed") return setConn("offline", T.offline);
    let left = Math.ceil((c.retryInMs || 0) / 1000);
    const tick = () => { setConn("reconnecting", T.reconnecting(Math.max(0, left))); left -= 1; };
    tick();
    countdown = setInterval(tick, 1000);
  }

  const w = watchProjects(location.origin, { tag, status: ["active"], token: token || undefined, onChange: draw, onConnection });
  w.closed.catch((err) => {
    setConn("offline", T.offline);
    $("dash-error").textContent = `${err.code}: ${err.message}`;
  });
}
