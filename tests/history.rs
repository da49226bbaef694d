//! The dispatch history through the real binary (APPLIANCE.md "History"): a journal
//! filled beforehand (as months of work would leave it), listed a page at a time with
//! the `X-Next-Before` cursor, by the API and by `dispatches list`, and pruned past
//! `history_days` at start-up.

mod support;

use std::path::Path;
use std::time::Duration;

use laminate_store::{
    DispatchKind, DispatchRecord, Journal, NodeProgress, NodeStatus, Priority, Stage, Store,
};
use support::*;

const T: Duration = Duration::from_secs(20);
const DAY_MS: u64 = 86_400_000;

fn now_ms() -> u64 {
    u64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_millis(),
    )
    .expect("ms")
}

fn finished(id: &str, seq: u64, at_ms: u64, status: NodeStatus) -> DispatchRecord {
    let mut node = NodeProgress::queued("node_1");
    node.status = status;
    DispatchRecord {
        id: id.into(),
        seq,
        correlation_id: format!("corr_{id}"),
        workspace_id: "ws_test".into(),
        entity_type: "session".into(),
        entity_id: format!("sess_{id}"),
        kind: DispatchKind::Session,
        priority: Priority::Normal,
        subject_id: None,
        session_id: None,
        label: None,
        created_at_ms: at_ms,
        updated_at_ms: at_ms,
        stage: Stage::Finished,
        study_uids: vec![],
        nodes: vec![node],
        replays: 0,
    }
}

/// Writes records into the data dir's store before the appliance starts.
fn fill(data_dir: &Path, recs: &[DispatchRecord]) {
    let store = Store::open(&data_dir.join("store")).expect("store");
    for r in recs {
        store.journal_put(r).expect("put");
    }
}

fn appliance(sim: &BackendSim, recs: &[DispatchRecord], proxy: Option<Value>) -> Appliance {
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut app = Appliance::with_dir(tmp.path().to_path_buf(), &sim.backend_url(), &[]);
    app.keep_dir(tmp);
    fill(&app.data_path(""), recs);
    if let Some(p) = proxy {
        app.write_config("proxy.json", &p);
    }
    app.spawn();
    app.wait_ready(T);
    app
}

/// GET → (ids listed, the `X-Next-Before` header).
fn page(app: &Appliance, query: &str) -> (Vec<String>, Option<String>) {
    let resp = ureq::get(&app.url(&format!("/api/dispatches{query}")))
        .timeout(T)
        .call()
        .expect("the API answers");
    let next = resp.header("x-next-before").map(str::to_owned);
    if let Some(n) = &next {
        let link = resp.header("link").expect("a Link header with the cursor");
        assert!(link.contains(&format!("before={n}")) && link.ends_with(r#"rel="next""#));
    }
    let body = resp.into_string().expect("body");
    let rows: Vec<Value> = serde_json::from_str(&body).expect("a JSON array");
    let ids = rows
        .iter()
        .map(|r| r["id"].as_str().expect("id").to_owned())
        .collect();
    (ids, next)
}

#[test]
fn dispatches_come_a_page_at_a_time_newest_first_and_the_cursor_continues() {
    let sim = sim();
    let t0 = now_ms() - DAY_MS;
    let recs: Vec<DispatchRecord> = (0..7)
        .map(|i| {
            let status = if i % 2 == 0 {
                NodeStatus::Completed
            } else {
                NodeStatus::Failed
            };
            finished(&format!("d{i:06}"), i, t0 + i * 1000, status)
        })
        .collect();
    let app = appliance(&sim, &recs, None);

    let mut seen = Vec::new();
    let (ids, mut next) = page(&app, "?limit=3");
    assert_eq!(ids.len(), 3);
    seen.extend(ids);
    while let Some(cursor) = next.take() {
        let (ids, n) = page(&app, &format!("?limit=3&before={cursor}"));
        seen.extend(ids);
        next = n;
    }
    let newest_first: Vec<String> = (0..7).rev().map(|i| format!("d{i:06}")).collect();
    assert_eq!(seen, newest_first);

    // The default page holds them all here; `status` filters and pages too.
    assert_eq!(page(&app, ""), (newest_first.clone(), None));
    let (failed, next) = page(&app, "?status=failed&limit=2");
    assert_eq!(failed, ["d000005", "d000003"]);
    let cursor = next.expect("more failed ones");
    let (rest, next) = page(&app, &format!("?status=failed&limit=2&before={cursor}"));
    assert_eq!((rest, next), (vec!["d000001".to_owned()], None));
    assert_eq!(
        app.get("/api/dispatches?before=not-a-cursor")
            .map(|(code, _)| code),
        Some(400)
    );
    let status = app.status();
    assert_eq!(status["dispatches"]["completed"], 4);
    assert_eq!(status["dispatches"]["failed"], 3);
    assert_eq!(status["dispatches"]["active"], 0);

    // The operator command follows the cursors with --all.
    let addr = app.url("").trim_start_matches("http://").to_owned();
    let (code, out) = run_binary(
        &[
            "dispatches",
            "list",
            "--limit",
            "2",
            "--all",
            "--http-addr",
            &addr,
        ],
        &[],
    );
    assert_eq!(code, Some(0), "{out}");
    let listed: Vec<&str> = out
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(listed, newest_first);
    let (code, out) = run_binary(
        &["dispatches", "list", "--limit", "2", "--http-addr", &addr],
        &[],
    );
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(out.lines().filter(|l| l.starts_with("d0")).count(), 2);
    assert!(out.contains("--all"), "{out}");
}

#[test]
fn finished_dispatches_older_than_history_days_are_pruned_at_start_up() {
    let sim = sim();
    let now = now_ms();
    let recs = [
        finished("d_ancient", 1, now - 40 * DAY_MS, NodeStatus::Completed),
        finished("d_old", 2, now - 11 * DAY_MS, NodeStatus::Failed),
        finished("d_recent", 3, now - 9 * DAY_MS, NodeStatus::Completed),
    ];
    let app = appliance(&sim, &recs, Some(json!({"history_days": 10})));
    eventually(T, || (page(&app, "").0 == ["d_recent"]).then_some(()))
        .unwrap_or_else(|| panic!("not pruned: {:?}\n{}", page(&app, "").0, app.logs()));
    assert_eq!(
        app.get("/api/dispatches/corr_d_old").map(|(code, _)| code),
        Some(404)
    );
    let status = app.status();
    assert_eq!(status["dispatches"]["completed"], 1);
    assert_eq!(status["dispatches"]["failed"], 0);
}
