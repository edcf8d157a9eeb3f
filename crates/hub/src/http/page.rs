//! The progress monitor page: plain HTML, CSS and JS compiled into the binary, so it
//! works offline with no build step. `/` starts a demo or opens a project;
//! `/projects/{id}` watches one, through `progress-hub-client` (clients/js), whose
//! committed build is embedded here as well; `/dashboard?tag=` shows a tag's running
//! jobs on one connection (`dashboard.js`, through the client's `projects` entry), and
//! `/dashboard` every project's when the token allows `*`. Both views draw bars, stages
//! and the connection badge through one module (`render.js`).
//!
//! The page is served with a strict Content-Security-Policy (its own scripts, styles
//! and connections, no inline code, no plugins, no framing), `X-Frame-Options: DENY`
//! for browsers without `frame-ancestors`, and no referrer (a project URL names the
//! project). `nosniff` is on every answer of the hub ([`nosniff`]). Swagger UI at
//! `/docs` gets the same protections ([`docs_headers`]), with inline styles allowed
//! (its rendering sets them); it runs no inline script either. `/favicon.ico` is a
//! small vendored icon, so a browser's automatic request for it is not a 404.

use axum::http::header;
use axum::response::{Html, IntoResponse};

const INDEX: &str = include_str!("page/index.html");
const APP_JS: &str = include_str!("page/app.js");
const STYLE_CSS: &str = include_str!("page/style.css");
/// Built from `clients/js` by `npm run build`; its test fails when this copy is stale.
const CLIENT_JS: &str = include_str!("page/progress-hub-client.js");
/// The dashboard, and the client's `projects` entry (watchProjects) it imports, built
/// with the core by `npm run build` and checked as fresh the same way.
const DASHBOARD_JS: &str = include_str!("page/dashboard.js");
/// What both views draw alike (texts, a bar, the connection badge), imported by both.
const RENDER_JS: &str = include_str!("page/render.js");
const PROJECTS_JS: &str = include_str!("page/progress-hub-projects.js");

/// The page's policy. `connect-src 'self'` covers the WebSocket to the same host and
/// port (CSP Level 3, in every current browser); the progress bar's width is set
/// through CSSOM, which `style-src 'self'` allows.
const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; \
    style-src 'self'; img-src 'self' data:; connect-src 'self'; object-src 'none'; \
    base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// Swagger UI's policy: the page's, except that its React rendering sets inline styles.
const DOCS_CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; \
    style-src 'self' 'unsafe-inline'; img-src 'self' data:; connect-src 'self'; \
    object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// A 16 and 32 px icon (PNG in ICO), drawn for the hub: a progress bar.
const FAVICON: &[u8] = include_bytes!("page/favicon.ico");

/// `GET /`, `GET /projects/{id}` and `GET /dashboard`: the same page; the script reads
/// the path.
pub async fn index() -> impl IntoResponse {
    (
        [
            (header::CACHE_CONTROL, "no-cache"),
            (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
            (header::X_FRAME_OPTIONS, "DENY"),
            (header::REFERRER_POLICY, "no-referrer"),
        ],
        Html(INDEX),
    )
}

/// The page's protections on every answer under `/docs` (Swagger UI and its assets).
pub async fn docs_headers(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    for (name, value) in [
        (
            header::CONTENT_SECURITY_POLICY,
            DOCS_CONTENT_SECURITY_POLICY,
        ),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::REFERRER_POLICY, "no-referrer"),
    ] {
        headers.insert(name, header::HeaderValue::from_static(value));
    }
    response
}

/// `GET /favicon.ico`.
pub async fn favicon() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "image/x-icon"),
            (header::CACHE_CONTROL, "public, max-age=86400"),
        ],
        FAVICON,
    )
}

/// Every answer says `X-Content-Type-Options: nosniff`: a browser takes each as the
/// type the hub declares (a JSON error echoing input is never run as a script).
pub async fn nosniff(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let mut response = next.run(request).await;
    response.headers_mut().insert(
        header::X_CONTENT_TYPE_OPTIONS,
        header::HeaderValue::from_static("nosniff"),
    );
    response
}

pub async fn app_js() -> impl IntoResponse {
    script(APP_JS)
}

pub async fn client_js() -> impl IntoResponse {
    script(CLIENT_JS)
}

pub async fn dashboard_js() -> impl IntoResponse {
    script(DASHBOARD_JS)
}

pub async fn render_js() -> impl IntoResponse {
    script(RENDER_JS)
}

pub async fn projects_js() -> impl IntoResponse {
    script(PROJECTS_JS)
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
