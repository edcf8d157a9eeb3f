//! The progress monitor page: plain HTML, CSS and JS compiled into the binary, so it
//! works offline with no build step. `/` starts a demo or opens a project;
//! `/projects/{id}` watches one, through `progress-hub-client` (clients/js), whose
//! committed build is embedded here as well.

use axum::http::header;
use axum::response::{Html, IntoResponse};

const INDEX: &str = include_str!("page/index.html");
const APP_JS: &str = include_str!("page/app.js");
const STYLE_CSS: &str = include_str!("page/style.css");
/// Built from `clients/js` by `npm run build`; its test fails when this copy is stale.
const CLIENT_JS: &str = include_str!("page/progress-hub-client.js");

/// `GET /` and `GET /projects/{id}`: the same page; the script reads the path.
pub async fn index() -> impl IntoResponse {
    ([(header::CACHE_CONTROL, "no-cache")], Html(INDEX))
}

pub async fn app_js() -> impl IntoResponse {
    script(APP_JS)
}

pub async fn client_js() -> impl IntoResponse {
    script(CLIENT_JS)
}

fn script(body: &'static str) -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
}

pub async fn style_css() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        STYLE_CSS,
    )
}
