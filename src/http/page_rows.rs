//! The rows of the status page's tables (actors, nodes, dispatches, recent
//! events), rendered from the same JSON as the local API; `page.rs` lays out
//! the page around them. Every value goes through [`esc`].

use std::fmt::Write as _;

use serde_json::Value;

use super::page::{esc, seg, text, Actions};

/// "2 active (1 queued), 5 completed, 0 failed, 0 cancelled" (page.js says the same).
pub(super) fn dispatch_summary(d: &Value) -> String {
    format!(
        "{} active ({} queued), {} completed, {} failed, {} cancelled",
        text(&d["active"]),
        text(&d["queued"]),
        text(&d["completed"]),
        text(&d["failed"]),
        text(&d["cancelled"])
    )
}

/// The running jobs' stages under the jobs' actor name: what each waits on
/// and for how long it has made no progress.
fn stage_lines(a: &Value) -> String {
    let mut out = String::new();
    for s in a["stages"].as_array().into_iter().flatten() {
        let node = s["node_id"]
            .as_str()
            .map(|n| format!(" → {}", esc(n)))
            .unwrap_or_default();
        let _ = write!(
            out,
            r#"<div class="stage">{id}: {stage}{node}, {idle} s since progress</div>"#,
            id = esc(&text(&s["dispatch_id"])),
            stage = esc(&text(&s["stage"])),
            idle = esc(&text(&s["since_progress_s"])),
        );
    }
    out
}

pub(super) fn actor_row(h: &mut String, a: &Value) {
    let state = text(&a["state"]);
    let _ = write!(
        h,
        r#"<tr data-actor="{name}"><td>{name}{stages}</td><td class="state state-{state}">{state}</td><td>{restarts}</td><td class="error">{err}</td><td>{mailbox}</td></tr>"#,
        stages = stage_lines(a),
        name = esc(&text(&a["name"])),
        state = esc(&state),
        restarts = esc(&text(&a["restarts"])),
        err = esc(a["last_error"].as_str().unwrap_or("")),
        mailbox = esc(&text(&a["mailbox"])),
    );
}

/// The site's settings for a node (`node-settings.json`) in one line, if any.
fn site_line(s: &Value, rejected: &Value) -> String {
    let rejected = match rejected.as_str() {
        Some(why) => format!(
            r#"<br><small class="error">node-settings.json rejected, previous settings kept: {}</small>"#,
            esc(why)
        ),
        None => String::new(),
    };
    if s.is_null() {
        return rejected;
    }
    let mut parts = Vec::new();
    match &s["tls"] {
        Value::Null => parts.push("plain TCP".to_owned()),
        t if t["mutual"] == true => parts.push("TLS, mutual".to_owned()),
        _ => parts.push("TLS".to_owned()),
    }
    if let Some(m) = s["max_associations"].as_u64() {
        parts.push(format!("max {m} associations"));
    }
    if let Some(ts) = s["prefer_transfer_syntax"]
        .as_str()
        .filter(|t| *t != "as-is")
    {
        parts.push(format!("always {ts}"));
    }
    if s["storage_commitment"] == true {
        parts.push("storage commitment".to_owned());
    }
    format!(
        r#"<br><small class="site">site: {}</small>{rejected}"#,
        esc(&parts.join(" · "))
    )
}

/// A node's sender pool in one line: associations, queue, how instances went.
fn sender_line(s: &Value) -> String {
    let err = s["last_error"]
        .as_str()
        .map(|e| format!(r#"<br><span class="error">{}</span>"#, esc(e)))
        .unwrap_or_default();
    format!(
        r#"<br><small class="sender">associations {open}/{max} · queued {queued} · as is {as_is} · transcoded {tc} · failed {failed}{err}</small>"#,
        open = esc(&text(&s["associations_open"])),
        max = esc(&text(&s["associations_max"])),
        queued = esc(&text(&s["queued"])),
        as_is = esc(&text(&s["sent_as_is"])),
        tc = esc(&text(&s["transcoded"])),
        failed = esc(&text(&s["failed"])),
    )
}

/// `spark` is the node's sparkline, already SVG (its text escaped by the scene).
pub(super) fn node_row(h: &mut String, n: &Value, spark: &str, acts: &Actions<'_>) {
    let id = text(&n["node_id"]);
    let online = n["online"].as_bool().unwrap_or(false);
    let rtt = n["echo_rtt_ms"]
        .as_f64()
        .map(|ms| format!("{ms:.1} ms"))
        .unwrap_or_else(|| "–".into());
    let _ = write!(
        h,
        r#"<tr data-node="{id}"><td>{id}<br><small>{name}</small></td><td>{ae} @ {host}:{port}{site}</td><td>{active}</td><td class="online-{online}">{online_text}</td><td>{last}</td><td>{rtt}</td><td class="error">{err}</td><td>{inflight}{sender}</td><td class="spark" data-chart="node">{spark}</td><td>"#,
        id = esc(&id),
        name = esc(&text(&n["name"])),
        ae = esc(&text(&n["ae_title"])),
        host = esc(&text(&n["host"])),
        port = esc(&text(&n["port"])),
        active = esc(&text(&n["is_active"])),
        online_text = if online { "online" } else { "offline" },
        last = esc(&text(&n["last_echo_at"])),
        rtt = esc(&rtt),
        err = esc(n["last_echo_error"].as_str().unwrap_or("")),
        inflight = esc(&text(&n["in_flight"])),
        sender = sender_line(&n["sender"]),
        site = site_line(&n["site_settings"], &n["node_settings_error"]),
        spark = spark,
    );
    acts.form(
        h,
        &format!("/nodes/{}/echo", seg(&id)),
        "C-ECHO now",
        "",
        None,
    );
    h.push_str("</td></tr>");
}

pub(super) fn dispatch_row(h: &mut String, d: &Value, acts: &Actions<'_>, outcomes: &str) {
    let id = text(&d["id"]);
    let state = text(&d["state"]);
    let _ = write!(
        h,
        r#"<tr data-dispatch="{id}" data-correlation="{corr}"><td><span class="id">{id}</span><br><small>{corr}</small><br><small>{etype} {eid}{label}</small></td><td>{prio}</td><td class="state state-{state}">{state}</td><td class="replays">{replays}</td><td>{updated}</td><td>"#,
        id = esc(&id),
        corr = esc(&text(&d["correlation_id"])),
        etype = esc(&text(&d["entity_type"])),
        eid = esc(&text(&d["entity_id"])),
        label = match d["label"].as_str() {
            Some(l) if !l.is_empty() => format!(" ({})", esc(l)),
            _ => String::new(),
        },
        prio = esc(&text(&d["priority"])),
        state = esc(&state),
        replays = esc(&text(&d["replays"])),
        updated = esc(&text(&d["updated_at"])),
    );
    for n in d["nodes"].as_array().into_iter().flatten() {
        let status = text(&n["status"]);
        let progress = n["progress"].as_u64().unwrap_or(0);
        let _ = write!(
            h,
            r#"<div class="node-progress" data-node="{node}"><span class="node-id">{node}</span> <progress max="100" value="{progress}">{progress}%</progress> <span class="count">{sent}/{total}</span> <span class="status status-{status}">{status}</span>"#,
            node = esc(&text(&n["node_id"])),
            sent = esc(&text(&n["files_sent"])),
            total = esc(&text(&n["files_total"])),
            status = esc(&status),
        );
        if let Some(e) = n["error"].as_str() {
            let _ = write!(h, r#"<div class="error">{}</div>"#, esc(e));
        }
        if let Some(until) = n["parked_until"].as_str() {
            let _ = write!(
                h,
                r#"<div class="parked">{}</div>"#,
                esc(&parked_note(until))
            );
        }
        h.push_str("</div>");
    }
    h.push_str(outcomes);
    h.push_str("</td><td>");
    let active = state == "active";
    let parked = d["nodes"]
        .as_array()
        .is_some_and(|ns| ns.iter().any(|n| n["parked_until"].is_string()));
    acts.form(
        h,
        &format!("/dispatches/{}/replay", seg(&id)),
        "Replay",
        "",
        active.then_some("still active: cancel it or wait for it to finish"),
    );
    acts.form(
        h,
        &format!("/dispatches/{}/cancel", seg(&id)),
        if parked { "Stop auto-replay" } else { "Cancel" },
        "",
        (!active && !parked).then_some("already finished"),
    );
    h.push_str("</td></tr>");
}

/// Why a failed node is not lost (the same words in `page.js`).
fn parked_note(until: &str) -> String {
    format!("parked until {until}: replayed by itself when the node answers C-ECHO again")
}

pub(super) fn event_row(h: &mut String, e: &Value) {
    let dir = text(&e["direction"]);
    let _ = write!(
        h,
        r#"<tr class="dir-{dir}"><td>{at}</td><td title="{dir}">{arrow}</td><td>{etype}</td><td>{corr}</td><td>{summary}</td></tr>"#,
        dir = esc(&dir),
        arrow = if dir == "in" { "← in" } else { "→ out" },
        at = esc(&text(&e["at"])),
        etype = esc(&text(&e["event_type"])),
        corr = esc(&text(&e["correlation_id"])),
        summary = esc(e["summary"].as_str().unwrap_or("")),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hostile_dispatch_row_stays_text() {
        let acts = Actions {
            disabled: None,
            token_required: true,
        };
        let mut h = String::new();
        let d = serde_json::json!({"id": "d\"><img src=x>", "state": "failed",
            "nodes": [{"node_id": "<b>n</b>", "status": "failed", "progress": 0, "error": "<script>"}]});
        dispatch_row(&mut h, &d, &acts, "");
        assert!(!h.contains("<img") && !h.contains("<b>") && !h.contains("<script>"));
        assert!(
            h.contains(r#"name="token""#),
            "no-JS forms ask for the token"
        );
        assert!(h.contains("/ui/dispatches/d%22%3E%3Cimg%20src%3Dx%3E/replay"));
    }
}
