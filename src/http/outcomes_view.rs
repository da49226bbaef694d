//! The status page's per-instance outcomes under a finished dispatch: the archive
//! entries that were skipped and, per node, the instances that failed or were
//! transcoded, with why (APPLIANCE.md "Per-instance outcome"). Rendered from the
//! same JSON as `/api/dispatches/{id}`; `page.js` builds the same markup when a
//! dispatch finishes while the page is open.

use std::fmt::Write;

use serde_json::Value;

use super::page::{esc, text};

/// At most this many lines per list; the API has them all.
const SHOWN: usize = 20;

/// `<details class="outcomes">…</details>` for a dispatch's detail JSON, or
/// nothing when every instance arrived as it was and nothing was skipped.
pub fn outcomes_html(detail: &Value) -> String {
    let skipped = detail["skipped"]
        .as_array()
        .map_or(&[][..], |a| a.as_slice());
    let skipped_total = detail["skipped_total"]
        .as_u64()
        .unwrap_or(skipped.len() as u64);
    let mut parts = Vec::new();
    if skipped_total > 0 {
        parts.push(format!("{skipped_total} skipped"));
    }
    let nodes = detail["nodes"].as_array().map_or(&[][..], |a| a.as_slice());
    for n in nodes {
        let outcomes = n["outcomes"].as_array().map_or(&[][..], |a| a.as_slice());
        let failed = outcomes.iter().filter(|o| o["outcome"] == "failed").count();
        let transcoded = outcomes.len() - failed;
        if outcomes.is_empty() {
            continue;
        }
        parts.push(format!(
            "{}: {failed} failed, {transcoded} transcoded",
            text(&n["node_id"])
        ));
    }
    if parts.is_empty() {
        return String::new();
    }
    let id = text(&detail["id"]);
    let mut h = String::new();
    let _ = write!(
        h,
        r#"<details class="outcomes"><summary>{}</summary>"#,
        esc(&parts.join(" · "))
    );
    if skipped_total > 0 {
        h.push_str("<p>Skipped archive entries:</p><ul>");
        for s in skipped.iter().take(SHOWN) {
            let _ = write!(
                h,
                r#"<li><code>{}</code>: {}</li>"#,
                esc(&text(&s["file"])),
                esc(&text(&s["reason"]))
            );
        }
        h.push_str("</ul>");
    }
    for n in nodes {
        let outcomes = n["outcomes"].as_array().map_or(&[][..], |a| a.as_slice());
        if outcomes.is_empty() {
            continue;
        }
        let _ = write!(h, "<p>{}:</p><ul>", esc(&text(&n["node_id"])));
        for o in outcomes.iter().take(SHOWN) {
            let _ = write!(
                h,
                r#"<li class="outcome-{kind}">{kind} <code>{what}</code>: {why}</li>"#,
                kind = esc(&text(&o["outcome"])),
                what = esc(&text(if o["file"].is_null() {
                    &o["sop_instance_uid"]
                } else {
                    &o["file"]
                })),
                why = esc(&text(&o["reason"])),
            );
        }
        h.push_str("</ul>");
    }
    let _ = write!(
        h,
        r#"<p><a href="/api/dispatches/{}">every outcome (JSON)</a></p></details>"#,
        esc(&super::page::seg(&id))
    );
    h
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn nothing_is_shown_when_every_instance_arrived_as_it_was() {
        let d = json!({"id": "d1", "skipped": [], "skipped_total": 0,
            "nodes": [{"node_id": "n1", "outcomes": []}]});
        assert_eq!(outcomes_html(&d), "");
    }

    #[test]
    fn skipped_entries_and_node_outcomes_are_listed_as_escaped_text() {
        let d = json!({"id": "d1", "skipped_total": 1,
        "skipped": [{"file": "README<b>", "reason": "not DICOM"}],
        "nodes": [{"node_id": "n1", "outcomes": [
            {"sop_instance_uid": "1.2", "file": "a/IM1", "outcome": "failed", "reason": "cannot decode"},
            {"sop_instance_uid": "1.3", "file": null, "outcome": "transcoded", "reason": "sent as Explicit"}
        ]}]});
        let h = outcomes_html(&d);
        assert!(h.contains("1 skipped · n1: 1 failed, 1 transcoded"), "{h}");
        assert!(h.contains("README&lt;b&gt;"), "{h}");
        assert!(
            h.contains("failed <code>a/IM1</code>: cannot decode"),
            "{h}"
        );
        assert!(h.contains("transcoded <code>1.3</code>"), "{h}");
    }
}
