// progress-hub dashboard (/dashboard?tag=user:7): every running job of a tag with a
// live bar, stage and ETA, on ONE connection (watchProjects, a tag subscription with the
// filter `active`); jobs appear as they start, and a job that ends while the page is
// open stays, marked with its end, until the page is reloaded. A click opens the
// project's own view. Without a tag (/dashboard), every running job: the reserved tag
// `*`, which the hub allows only without access control or to a token whose projects
// include `*` (any other is refused FORBIDDEN, and the page asks for a tag).
// app.js loads this file for /dashboard; plain JS, no build step.
import { watchProjects } from "/assets/progress-hub-projects.js";
import { connectionBadge, drawBar, texts } from "/assets/render.js";

const params = new URLSearchParams(location.search);
const lang = params.get("lang") === "en" ? "en" : "zh";
const token = params.get("token");
const asked = params.get("tag");
const tag = asked || "*";
const everyProject = tag === "*";
const T = texts(lang, {
  zh: {
    title: "進行中的工作", allTitle: "所有進行中的工作", tagLabel: "標籤", show: "顯示", none: "目前沒有進行中的工作。",
    noTag: "這個權杖無法查看所有專案：請輸入標籤（例如 user:7）。",
    ends: { COMPLETED: "已完成", FAILED: "失敗", CANCELLED: "已取消" },
  },
  en: {
    title: "Running jobs", allTitle: "All running jobs", tagLabel: "Tag", show: "Show", none: "No job is running now.",
    noTag: "This token cannot see every project: enter a tag (e.g. user:7).",
    ends: { COMPLETED: "Completed", FAILED: "Failed", CANCELLED: "Cancelled" },
  },
}[lang]);
const $ = (id) => document.getElementById(id);
function link(path) {
  const q = new URLSearchParams();
  if (lang === "en") q.set("lang", "en");
  if (token) q.set("token", token);
  const qs = q.toString();
  return qs ? `${path}?${qs}` : path;
}

$("dashboard").hidden = false;
$("dash-title").textContent = everyProject ? T.allTitle : T.title;
$("dash-tag-label").textContent = T.tagLabel;
$("dash-show").textContent = T.show;
$("dash-tag").value = asked || "";
$("dash-form").addEventListener("submit", (e) => {
  e.preventDefault();
  const q = new URLSearchParams(location.search);
  // An empty tag: every project.
  if ($("dash-tag").value) q.set("tag", $("dash-tag").value); else q.delete("tag");
  location.search = q.toString();
});

watch();

function watch() {
  const rows = new Map(); // project id → its <li>
  const list = $("dash-list");

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
    li.dataset.status = p.status || "";
    li.className = end ? `ended ${p.status}` : "running";
    const part = (selector) => li.querySelector(selector);
    drawBar({ bar: part(".progress"), fill: part(".fill"), percent: part(".percent") }, p.progress);
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
    const err = w.errors.get(`tag:${tag}`);
    $("dash-error").textContent = err ? `${err.code}: ${err.message}` : "";
    // Every project, refused to this token: a tag's jobs are what it may see.
    const refused = everyProject && err && err.code === "FORBIDDEN";
    $("dash-empty").textContent = refused ? T.noTag : projects.some((p) => !T.ends[p.status]) ? "" : T.none;
  }

  const badge = connectionBadge($("conn"), $("conn-text"), T);
  const w = watchProjects(location.origin, { tag, status: ["active"], token: token || undefined, onChange: draw, onConnection: badge.onConnection });
  w.closed.catch((err) => {
    badge.offline();
    $("dash-error").textContent = `${err.code}: ${err.message}`;
  });
}
