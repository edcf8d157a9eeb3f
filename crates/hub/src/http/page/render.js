// What the page's two views draw alike (app.js: one project; dashboard.js: many): the
// texts they share, a duration, a progress bar and the connection badge. Plain JS, no
// build step; served at /assets/render.js.

const SHARED = {
  zh: {
    connecting: "連線中…", online: "已連線", reconnecting: (s) => `重新連線中（${s} 秒）`, offline: "離線",
    eta: (s, lang) => `預計剩餘 ${duration(lang, s)}`, queued: (n) => (n ? `排隊中（第 ${n} 位）` : "排隊中"),
    stages: { SCRIPT_GENERATING: "腳本", ASSETS_GENERATING: "素材", RENDERING: "渲染", THUMBNAIL_GENERATING: "封面", UPLOADING: "上傳" },
  },
  en: {
    connecting: "Connecting…", online: "Connected", reconnecting: (s) => `Reconnecting in ${s} s`, offline: "Offline",
    eta: (s, lang) => `about ${duration(lang, s)} left`, queued: (n) => (n ? `Queued (position ${n})` : "Queued"),
    stages: { SCRIPT_GENERATING: "Script", ASSETS_GENERATING: "Assets", RENDERING: "Render", THUMBNAIL_GENERATING: "Thumbnail", UPLOADING: "Upload" },
  },
};

/** The shared texts in `lang` ("zh" or "en"), with `own` (the view's) on top. */
export function texts(lang, own) {
  const shared = SHARED[lang];
  return { ...shared, eta: (s) => shared.eta(s, lang), ...own };
}

/** `seconds` as the page says a duration: "1 min 30 s", "1 分 30 秒". */
export function duration(lang, seconds) {
  const s = Math.max(0, Math.round(seconds));
  if (lang === "en") return s >= 60 ? `${Math.floor(s / 60)} min ${s % 60} s` : `${s} s`;
  return s >= 60 ? `${Math.floor(s / 60)} 分 ${s % 60} 秒` : `${s} 秒`;
}

/** Draws `progress` (clamped to 0-100) on a bar: its fill's width, its aria value and
 * the percent text. */
export function drawBar({ bar, fill, percent }, progress) {
  const v = Math.max(0, Math.min(100, Number(progress) || 0));
  fill.style.width = `${v}%`;
  bar.setAttribute("aria-valuenow", String(v));
  percent.textContent = `${v}%`;
  return v;
}

/** The connection badge (`el`, its text `textEl`): a client's `onConnection`, counting
 * down to the next attempt while it waits; offline while the browser has no network. */
export function connectionBadge(el, textEl, T) {
  let countdown = null;
  const set = (state, text) => {
    el.className = `conn ${state}`;
    textEl.textContent = text;
    el.dataset.state = state;
  };
  const onConnection = (c) => {
    clearInterval(countdown);
    if (c.status === "open") return set("online", T.online);
    if (c.status === "connecting") return set("connecting", T.connecting);
    if (c.status === "closed") return set("offline", T.offline);
    let left = Math.ceil((c.retryInMs || 0) / 1000);
    const tick = () => {
      if (!navigator.onLine) set("offline", T.offline);
      else set("reconnecting", T.reconnecting(Math.max(0, left)));
      left -= 1;
    };
    tick();
    countdown = setInterval(tick, 1000);
  };
  return { onConnection, offline: () => { clearInterval(countdown); set("offline", T.offline); } };
}
