//! The audit trail through the real binary (APPLIANCE.md "Data dir", `GET
//! /api/audit`): each kind of action leaves exactly one record with the right
//! fields, old day files are pruned, and the proxy key appears nowhere, not in the
//! data dir nor the logs. Forwarding to syslog: `tests/audit_syslog.rs`.

mod support;

use std::path::Path;
use std::time::Duration;

use laminate_proxy::sim::study::StudySpec;
use laminate_proxy::sim::EntityKind;
use support::audit::*;
use support::*;

const T: Duration = Duration::from_secs(30);

fn object(r: &Value, kind: &str) -> Vec<String> {
    r["participant_objects"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|o| o["type"] == kind)
        .filter_map(|o| o["id"].as_str().map(str::to_owned))
        .collect()
}

fn participant<'a>(r: &'a Value, role: &str) -> &'a Value {
    r["active_participants"]
        .as_array()
        .and_then(|a| a.iter().find(|p| p["role"] == role))
        .unwrap_or_else(|| panic!("no {role} in {r}"))
}

/// Every file under `dir` whose bytes contain `needle`.
fn files_containing(dir: &Path, needle: &[u8]) -> Vec<String> {
    let mut hits = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if let Ok(bytes) = std::fs::read(&p) {
                if bytes.windows(needle.len()).any(|w| w == needle) {
                    hits.push(p.display().to_string());
                }
            }
        }
    }
    hits
}

#[test]
fn each_kind_of_action_leaves_one_audit_record_and_the_key_is_nowhere() {
    let sim = sim();
    let scp = StoreScp::start("PACS_A");
    let spec = StudySpec::simple(1, 3, 1024);
    let (zip, _) = spec.zip_bytes().expect("study zip");
    sim.put_download(EntityKind::Session, "sess_a", zip);
    let app = appliance(&sim, scp.port, &[]);

    // Link connect.
    let link = wait_records(&app, 1, |r| code(r) == "110114");
    assert_eq!(link[0]["outcome"], 0);
    assert_eq!(link[0]["detail"]["link"], "connected");
    let backend = participant(&link[0], "backend");
    assert_eq!(
        backend["network_access_point"],
        format!("127.0.0.1:{}", sim.port())
    );

    // A delivery to a node: study, patient id, count, node, outcome.
    assert!(sim.send_event(&dispatch_event(
        "session",
        "sess_a",
        "corr_a",
        &["node_1"],
        "high"
    )));
    let last = wait_final(&sim, "corr_a", "node_1", T).expect("final status");
    assert_eq!(last["status"], "completed", "{last}\n{}", app.logs());
    let sent = wait_records(&app, 1, |r| code(r) == "110104");
    let d = &sent[0];
    assert_eq!(d["event_id"]["name"], "DICOM Instances Transferred");
    assert_eq!(
        (d["action"].as_str(), d["outcome"].as_u64()),
        (Some("R"), Some(0))
    );
    assert_eq!(object(d, "study"), [spec.study_uid.as_str()]);
    assert_eq!(object(d, "patient"), [spec.patient_id.as_str()]);
    assert_eq!(object(d, "dispatch").len(), 1);
    let dest = participant(d, "destination");
    assert_eq!(dest["user_id"], "node_1");
    assert_eq!(dest["alternative_user_id"], "AETITLES=PACS_A");
    assert_eq!(
        dest["network_access_point"],
        format!("127.0.0.1:{}", scp.port)
    );
    assert_eq!(participant(d, "source")["user_id"], "LAMINATE_PROXY");
    assert_eq!(
        (
            d["detail"]["count"].as_u64(),
            d["detail"]["status"].as_str()
        ),
        (Some(3), Some("completed"))
    );

    // Operator actions: with the token, and without it (refused).
    let (status, body) = app
        .post("/api/nodes/node_1/echo", Some(TOKEN))
        .expect("answer");
    assert_eq!(status, 200, "{body}");
    let (status, _) = app.post("/api/nodes/node_1/echo", None).expect("answer");
    assert_eq!(status, 401);
    // The page's form, its token a form field; a wrong one is refused on the page.
    let form = |token: &str| {
        ureq::AgentBuilder::new()
            .redirects(0)
            .build()
            .post(&app.url("/ui/dispatches/corr_a/cancel"))
            .send_form(&[("token", token)])
            .map(|r| r.status())
            .unwrap_or_else(|e| panic!("form post: {e}"))
    };
    assert_eq!(form("wrong"), 303);
    let ops = wait_records(&app, 3, |r| r["event_type"]["code"] == "110132");
    let (ok, refused, page) = (&ops[0], &ops[1], &ops[2]);
    assert_eq!(page["detail"]["action"], "POST /ui/dispatches/{id}/cancel");
    assert_eq!(object(page, "dispatch"), ["corr_a"]);
    assert_eq!(participant(page, "operator")["token"], "refused");
    assert_eq!(page["outcome"], 4);
    assert!(page["detail"]["error"]
        .as_str()
        .is_some_and(|e| e.contains("token")));
    assert_eq!(ok["detail"]["action"], "POST /api/nodes/{id}/echo");
    assert_eq!(object(ok, "node"), ["node_1"]);
    let op = participant(ok, "operator");
    assert_eq!(
        (op["network_access_point"].as_str(), op["token"].as_str()),
        (Some("127.0.0.1"), Some("accepted"))
    );
    assert_eq!(ok["outcome"], 0);
    assert_eq!(participant(refused, "operator")["token"], "refused");
    assert_eq!(
        (
            refused["outcome"].as_u64(),
            refused["detail"]["status"].as_u64()
        ),
        (Some(4), Some(401))
    );

    // Configuration: one change applied, one rejected.
    assert!(sim.send_event(&event(
        "proxy.config_changed",
        "cfg_ok",
        json!({"config": {"heartbeat_interval_s": 60}})
    )));
    assert!(sim.send_event(&event(
        "proxy.config_changed",
        "cfg_bad",
        json!({"config": {"heartbeat_interval_s": 1}})
    )));
    let cfg = wait_records(&app, 2, |r| {
        matches!(r["event_type"]["code"].as_str(), Some("110128" | "110131"))
    });
    assert_eq!(cfg[0]["detail"]["correlation_id"], "cfg_ok");
    assert_eq!(
        (
            cfg[0]["outcome"].as_u64(),
            cfg[0]["detail"]["applied"].as_bool()
        ),
        (Some(0), Some(true))
    );
    assert_eq!(
        cfg[0]["detail"]["keys"],
        json!(["config.heartbeat_interval_s"])
    );
    assert_eq!(cfg[1]["detail"]["correlation_id"], "cfg_bad");
    assert_eq!(
        (
            cfg[1]["outcome"].as_u64(),
            cfg[1]["detail"]["applied"].as_bool()
        ),
        (Some(4), Some(false))
    );
    assert!(cfg[1]["detail"]["error"]
        .as_str()
        .is_some_and(|e| e.contains("heartbeat_interval_s")));

    // Deletion of the delivered study.
    let mut del = event(
        "session.deleted",
        "del_a",
        json!({"study_instance_uid": spec.study_uid}),
    );
    del["entity_type"] = json!("session");
    del["entity_id"] = json!("sess_a");
    assert!(sim.send_event(&del));
    let gone = wait_records(&app, 1, |r| code(r) == "110105");
    assert_eq!(
        (gone[0]["action"].as_str(), gone[0]["outcome"].as_u64()),
        (Some("D"), Some(0))
    );
    assert_eq!(object(&gone[0], "study"), [spec.study_uid.as_str()]);
    assert_eq!(object(&gone[0], "patient"), [spec.patient_id.as_str()]);
    assert_eq!(gone[0]["detail"]["count"], 3);

    // The backend refuses the key.
    sim.kick(4003, "invalid proxy key");
    let rejected = wait_records(&app, 1, |r| code(r) == "110114" && r["outcome"] == 4);
    assert_eq!(rejected[0]["detail"]["link"], "rejected");

    // One file a day, newest last, and the key nowhere.
    let all = records(&app);
    let times: Vec<&str> = all.iter().filter_map(|r| r["at"].as_str()).collect();
    let mut sorted = times.clone();
    sorted.sort();
    assert_eq!(times, sorted);
    let files: Vec<String> = std::fs::read_dir(app.data_path("audit"))
        .expect("audit dir")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        files
            .iter()
            .all(|f| f.len() == "2026-01-01.jsonl".len() && f.ends_with(".jsonl")),
        "{files:?}"
    );
    let hits = files_containing(&app.data_dir, KEY.as_bytes());
    assert!(hits.is_empty(), "the proxy key is in {hits:?}");
    let hits = files_containing(&app.data_path("audit"), TOKEN.as_bytes());
    assert!(hits.is_empty(), "the status token is in {hits:?}");
    assert!(!app.logs().contains(KEY), "the proxy key is in the logs");
    for r in &all {
        assert!(!r.to_string().contains(KEY));
    }
}

#[test]
fn audit_files_older_than_audit_days_are_removed_at_start_and_when_it_shrinks_and_since_must_be_a_time(
) {
    let sim = sim();
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut app = Appliance::with_dir(tmp.path().to_path_buf(), &sim.backend_url(), &[]);
    app.keep_dir(tmp);
    app.write_config("proxy.json", &json!({"audit_days": 2}));
    let audit = app.data_path("audit");
    std::fs::create_dir_all(&audit).expect("audit dir");
    let old = audit.join("2001-02-03.jsonl");
    std::fs::write(
        &old,
        "{\"at\":\"2001-02-03T04:05:06.000Z\",\"event_id\":{\"code\":\"110100\",\"name\":\"x\"}}\n",
    )
    .expect("old file");
    let other = audit.join("README");
    std::fs::write(&other, "not a day file").expect("other file");
    app.spawn();
    app.wait_ready(T);
    assert!(sim.wait_connected(T));
    assert!(
        eventually(T, || (!old.exists()).then_some(())).is_some(),
        "{} still there",
        old.display()
    );
    assert!(other.exists(), "only day files are pruned");
    let all = wait_records(&app, 1, |r| code(r) == "110114");
    assert!(all[0]["at"]
        .as_str()
        .is_some_and(|a| !a.starts_with("2001")));

    // A smaller audit_days from the backend prunes at once.
    let older = audit.join("2001-02-04.jsonl");
    std::fs::write(&older, "").expect("old file");
    assert!(sim.send_event(&event(
        "proxy.config_changed",
        "days",
        json!({"config": {"audit_days": 1}})
    )));
    assert!(
        eventually(T, || (!older.exists()).then_some(())).is_some(),
        "{} still there",
        older.display()
    );

    let (status, body) = app.get("/api/audit?since=yesterday").expect("answer");
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("RFC 3339"), "{body}");
    // Without `since`: the newest records, `limit` of them.
    let newest = app.get_json("/api/audit?limit=1");
    assert_eq!(newest["records"].as_array().map(Vec::len), Some(1));
}
