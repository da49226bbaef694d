//! `GET /`: the status page, rendered on the server from the same JSON the API
//! serves, so it reads fully without JavaScript. `page.js` (served at
//! `/ui/page.js`) then keeps it live from `/ws` and turns the forms into API
//! calls; it renders rows with the same structure as here.
//!
//! Every value put into the HTML goes through [`esc`] (text and attributes, all
//! attributes double-quoted), and path segments through [`seg`]. The page has a
//! strict Content-Security-Policy: no inline script or style at all.

use std::fmt::{self, Display, Write as _};

use actix_web::http::header;
use actix_web::{web, HttpResponse};
use laminate_store::{DispatchState, Journal};
use serde::Deserialize;
use serde_json::Value;

use super::api::{config_json, dispatch_figures, link_json, node_json, store_figures};
use super::charts::Charts;
use super::dispatches::{detail_json, dispatch_json};
use super::forms::Flashes;
use super::hub::Hub;
use super::outcomes_view::outcomes_html;
use super::page_rows::{actor_row, dispatch_row, dispatch_summary, event_row, node_row};
use super::AppState;

/// Dispatches listed on the page, newest first.
pub const DISPATCH_ROWS: usize = 50;

const CSS: &str = include_str!("page.css");
const JS: &str = include_str!("page.js");

/// No inline code: what an escaping mistake could inject would not run.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; \
                   img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// HTML-escapes text for element content and double-quoted attributes.
pub struct Esc<'a>(pub &'a str);

impl Display for Esc<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut last = 0;
        for (i, c) in self.0.char_indices() {
            let rep = match c {
                '&' => "&amp;",
                '<' => "&lt;",
                '>' => "&gt;",
                '"' => "&quot;",
                '\'' => "&#39;",
                _ => continue,
            };
            f.write_str(&self.0[last..i])?;
            f.write_str(rep)?;
            last = i + c.len_utf8();
        }
        f.write_str(&self.0[last..])
    }
}

pub fn esc(s: &str) -> Esc<'_> {
    Esc(s)
}

/// Percent-encodes one URL path segment (ids come from the backend).
pub fn seg(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// A JSON field as display text: strings as they are, numbers printed,
/// `null`/absent as "–".
pub(super) fn text(v: &Value) -> String {
    match v {
        Value::Null => "–".to_owned(),
        Value::String(s) if s.is_empty() => "–".to_owned(),
        Value::String(s) => s.clone(),
        Value::Bool(true) => "yes".to_owned(),
        Value::Bool(false) => "no".to_owned(),
        other => other.to_string(),
    }
}

/// Bytes as a person reads them.
pub fn human_bytes(v: &Value) -> String {
    let Some(n) = v.as_u64() else {
        return text(v);
    };
    const UNITS: &[&str] = &["B", "KiB", "MiB", "GiB", "TiB"];
    let mut x = n as f64;
    let mut u = 0;
    while x >= 1024.0 && u + 1 < UNITS.len() {
        x /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{x:.1} {}", UNITS[u])
    }
}

#[derive(Deserialize)]
pub struct PageQuery {
    flash: Option<u64>,
}

pub async fn page(
    state: web::Data<AppState>,
    flashes: web::Data<Flashes>,
    hub: web::Data<Hub>,
    q: web::Query<PageQuery>,
) -> HttpResponse {
    let flash = q.flash.and_then(|id| flashes.get(id));
    let charts = Charts::now(&state, hub.daily());
    // Rendering reads the store, which waits on the disk: off the HTTP threads.
    let html = match web::block(move || render(&state, &charts, flash)).await {
        Ok(html) => html,
        Err(e) => {
            return HttpResponse::ServiceUnavailable()
                .content_type("text/plain; charset=utf-8")
                .body(format!("cannot render the page: {e}"))
        }
    };
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .insert_header((header::CONTENT_SECURITY_POLICY, CSP))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        // Not "no-referrer": that makes browsers send `Origin: null` with the
        // page's own form posts, which the same-origin check then refuses.
        .insert_header((header::REFERRER_POLICY, "same-origin"))
        .body(html)
}

pub async fn css() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/css; charset=utf-8")
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .body(CSS)
}

pub async fn js() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/javascript; charset=utf-8")
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .body(JS)
}

/// How action buttons are drawn: enabled, or disabled with why.
pub(super) struct Actions<'a> {
    pub(super) disabled: Option<&'a str>,
    pub(super) token_required: bool,
}

impl Actions<'_> {
    /// A form posting to `/ui{path}` (no JavaScript) or `/api{path}` (script).
    pub(super) fn form(
        &self,
        out: &mut String,
        path: &str,
        label: &str,
        extra: &str,
        off: Option<&str>,
    ) {
        let why = self.disabled.or(off);
        let _ = write!(
            out,
            r#"<form method="post" action="/ui{p}" data-api="/api{p}" class="action">"#,
            p = esc(path),
        );
        out.push_str(extra);
        if self.token_required {
            out.push_str(
                r#"<input type="password" name="token" class="nojs-only" placeholder="status token" autocomplete="off" aria-label="status token">"#,
            );
        }
        match why {
            Some(w) => {
                let _ = write!(
                    out,
                    r#"<button type="submit" disabled title="{w}">{l}</button>"#,
                    w = esc(w),
                    l = esc(label)
                );
            }
            None => {
                let _ = write!(out, r#"<button type="submit">{}</button>"#, esc(label));
            }
        }
        out.push_str("</form>");
    }
}

fn render(state: &AppState, charts: &Charts, flash: Option<(String, bool)>) -> String {
    let board = &state.running.board;
    let policy = &state.policy;
    let acts = Actions {
        disabled: policy.disabled_reason(),
        token_required: policy.token_required(),
    };
    let mut h = String::with_capacity(64 * 1024);
    let _ = write!(
        h,
        r#"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>laminate-proxy status</title>
<link rel="stylesheet" href="/ui/page.css">
<script src="/ui/page.js" defer></script>
</head>
<body data-token-required="{tr}" data-actions-disabled="{dis}">
<header>
<h1>laminate-proxy <small>{ver}</small></h1>
<p id="live" class="live off">Live updates off: reload the page to refresh.</p>
"#,
        tr = acts.token_required,
        dis = esc(acts.disabled.unwrap_or("")),
        ver = esc(env!("CARGO_PKG_VERSION")),
    );
    if acts.token_required && acts.disabled.is_none() {
        h.push_str(
            r#"<p class="token js-only" hidden><label>Status token <input type="password" id="token" autocomplete="off"></label> <small>kept in this browser tab only, sent as <code>Authorization: Bearer</code></small></p>
"#,
        );
    }
    h.push_str("</header>\n<main>\n");
    let _ = write!(h, r#"<p id="note" class="note" role="status""#);
    match &flash {
        Some((msg, ok)) => {
            let _ = write!(
                h,
                r#" data-kind="{}">{}</p>"#,
                if *ok { "ok" } else { "error" },
                esc(msg)
            );
        }
        None => h.push_str(" hidden></p>"),
    }
    h.push('\n');
    if let Some(why) = acts.disabled {
        let _ = writeln!(
            h,
            r#"<p class="warning" id="actions-disabled">{}</p>"#,
            esc(why)
        );
    }

    // Backend link.
    let link = link_json(&board.link());
    h.push_str(r#"<section id="link"><h2>Backend link</h2><table class="kv"><tbody>"#);
    for (key, label) in [
        ("state", "State"),
        ("since", "Since"),
        ("last_error", "Last error"),
        ("notice", "Notice"),
        ("reconnects", "Reconnects"),
        ("next_attempt_at", "Next attempt"),
    ] {
        let v = text(&link[key]);
        let class = if key == "state" {
            format!(" class=\"state state-{}\"", esc(&v))
        } else {
            String::new()
        };
        let _ = write!(
            h,
            r#"<tr><th>{label}</th><td data-link="{key}"{class}>{}</td></tr>"#,
            esc(&v)
        );
    }
    h.push_str("</tbody></table></section>\n");

    // Actors.
    h.push_str(
        r#"<section id="actors"><h2>Actors</h2><table><thead><tr><th>Actor</th><th>State</th><th>Restarts</th><th>Last error</th><th>Mailbox</th></tr></thead><tbody id="actor-rows">"#,
    );
    if let Value::Array(rows) = super::api::actors_json(board) {
        for a in &rows {
            actor_row(&mut h, a);
        }
    }
    h.push_str("</tbody></table></section>\n");

    // Nodes.
    h.push_str(
        r#"<section id="nodes"><h2>PACS nodes</h2><table><thead><tr><th>Node</th><th>Address</th><th>Active</th><th>Online</th><th>Last echo</th><th>Round trip</th><th>Echo error</th><th>In flight</th><th>Sent, last hour</th><th></th></tr></thead><tbody id="node-rows">"#,
    );
    let nodes = board.nodes();
    if nodes.is_empty() {
        h.push_str(r#"<tr class="empty"><td colspan="10">No nodes configured yet.</td></tr>"#);
    }
    for n in &nodes {
        node_row(
            &mut h,
            &node_json(board, n),
            &charts.node_svg(&n.node_id),
            &acts,
        );
    }
    h.push_str("</tbody></table></section>\n");

    // Dispatches.
    h.push_str(r#"<section id="dispatches"><h2>Dispatches</h2>"#);
    let _ = write!(
        h,
        r#"<figure class="chart"><div data-chart="days">{}</div><figcaption>Dispatches finished per day (completed / failed)</figcaption></figure>"#,
        charts.days.svg()
    );
    let since = laminate_actors::clock::ms_to_rfc3339(
        laminate_actors::clock::now_ms().saturating_sub(24 * 3600 * 1000),
    );
    acts.form(
        &mut h,
        "/dispatches/replay?status=failed",
        "Replay all failed",
        &format!(
            r#"<label>Replay every failed dispatch updated since <input type="text" name="since" value="{}" size="26" aria-label="since (RFC 3339)"></label> "#,
            esc(&since)
        ),
        None,
    );
    h.push_str(
        r#"<table><thead><tr><th>Dispatch</th><th>Priority</th><th>State</th><th>Replays</th><th>Updated</th><th>Nodes</th><th></th></tr></thead><tbody id="dispatch-rows">"#,
    );
    match state.running.store.journal_page(None, None, DISPATCH_ROWS) {
        Ok(page) => {
            if page.records.is_empty() {
                h.push_str(r#"<tr class="empty"><td colspan="7">No dispatches yet.</td></tr>"#);
            }
            for r in &page.records {
                // Finished ones show what did not arrive as it was.
                let outcomes = match r.state() {
                    DispatchState::Active => String::new(),
                    _ => detail_json(&state.running.store, r)
                        .map(|d| outcomes_html(&d))
                        .unwrap_or_default(),
                };
                dispatch_row(&mut h, &dispatch_json(r), &acts, &outcomes);
            }
        }
        Err(e) => {
            let _ = write!(
                h,
                r#"<tr class="empty"><td colspan="7">Cannot read the dispatch journal: {}</td></tr>"#,
                esc(&e.to_string())
            );
        }
    }
    h.push_str("</tbody></table></section>\n");

    // Store.
    let store = store_figures(state);
    let disp = dispatch_figures(state);
    h.push_str(r#"<section id="store"><h2>Store</h2><table class="kv"><tbody>"#);
    for (key, label) in [
        ("patients", "Patients"),
        ("sessions", "Sessions (studies)"),
        ("scans", "Scans (series)"),
        ("instances", "Instances"),
        ("evicted", "Instances evicted since start-up"),
    ] {
        let _ = write!(
            h,
            r#"<tr><th>{label}</th><td data-store="{key}">{}</td></tr>"#,
            esc(&text(&store[key]))
        );
    }
    for (key, label) in [
        ("bytes", "DICOM cache"),
        ("db_bytes", "Database on disk"),
        ("free_bytes", "Free disk space"),
        ("evicted_bytes", "Evicted since start-up"),
    ] {
        let _ = write!(
            h,
            r#"<tr><th>{label}</th><td data-store="{key}" data-bytes="">{}</td></tr>"#,
            esc(&human_bytes(&store[key]))
        );
    }
    let _ = write!(
        h,
        r#"<tr><th>Disk</th><td data-chart="disk">{}</td></tr>"#,
        charts.disk.as_ref().map_or_else(
            || "cannot read the data dir's file system".to_owned(),
            |d| d.svg()
        )
    );
    let _ = write!(
        h,
        r#"<tr><th>Outbox (events waiting for the backend)</th><td data-store="outbox">{}</td></tr>"#,
        board.outbox_depth()
    );
    let _ = write!(
        h,
        r#"<tr><th>Dispatches</th><td data-store="dispatches">{}</td></tr>"#,
        esc(&dispatch_summary(&disp))
    );
    h.push_str("</tbody></table></section>\n");

    // Configuration: the last rejected change stays until another one replaces it.
    let config = config_json(board);
    h.push_str(r#"<section id="config"><h2>Configuration</h2><table class="kv"><tbody>"#);
    for (key, label) in [
        ("last_error", "Last rejected change"),
        ("last_error_at", "Rejected at"),
        ("rejected", "Rejected changes"),
        ("unknown_keys", "Unknown proxy.json keys"),
    ] {
        let v = match &config[key] {
            Value::Array(keys) => text(&Value::String(
                keys.iter().map(text).collect::<Vec<_>>().join(", "),
            )),
            v => text(v),
        };
        let class = if key == "last_error" {
            r#" class="error""#
        } else {
            ""
        };
        let _ = write!(
            h,
            r#"<tr><th>{label}</th><td data-config="{key}"{class}>{}</td></tr>"#,
            esc(&v)
        );
    }
    h.push_str("</tbody></table></section>\n");

    // Recent events, newest first.
    h.push_str(
        r#"<section id="events"><h2>Recent events</h2><table><thead><tr><th>At</th><th></th><th>Event</th><th>Correlation id</th><th>Summary</th></tr></thead><tbody id="event-rows">"#,
    );
    for e in board.recent_events().iter().rev() {
        event_row(&mut h, &serde_json::json!(e));
    }
    h.push_str("</tbody></table></section>\n");
    h.push_str(
        r#"</main>
<footer><a href="/api/status">/api/status</a> · <a href="/api/dispatches">/api/dispatches</a> · <a href="/api/nodes">/api/nodes</a> · <a href="/api/actors">/api/actors</a> · <a href="/metrics">/metrics</a></footer>
</body>
</html>
"#,
    );
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_covers_text_and_attributes() {
        assert_eq!(
            esc(r#"<script>alert("x&y")</script>'"#).to_string(),
            "&lt;script&gt;alert(&quot;x&amp;y&quot;)&lt;/script&gt;&#39;"
        );
        assert_eq!(esc("plain é").to_string(), "plain é");
        assert_eq!(seg("a b/../c?d"), "a%20b%2F..%2Fc%3Fd");
    }

    #[test]
    fn bytes_read_like_a_person_would() {
        assert_eq!(human_bytes(&serde_json::json!(512)), "512 B");
        assert_eq!(human_bytes(&serde_json::json!(1536)), "1.5 KiB");
        assert_eq!(human_bytes(&Value::Null), "–");
    }
}
