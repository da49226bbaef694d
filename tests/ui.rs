//! The operator's view through the real binary, without a browser: the page
//! without JavaScript and its forms, the token rule, `/metrics` read with a
//! Prometheus text parser, and many `/ws` clients at once (one never reads).
//! The real-browser test is `ui_browser.rs`.

mod support;

use std::collections::BTreeMap;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use laminate_proxy::sim::study::StudySpec;
use laminate_proxy::sim::EntityKind;
use support::*;

const T: Duration = Duration::from_secs(30);

fn study(series: usize, per: usize, bytes: usize) -> (bytes::Bytes, usize) {
    let (zip, inst) = StudySpec::simple(series, per, bytes)
        .zip_bytes()
        .expect("study zip");
    (zip, inst.len())
}

/// An appliance started with extra arguments and `nodes.json` (stopped before
/// its directory is removed: fields drop in order).
struct Started {
    app: Appliance,
    _tmp: tempfile::TempDir,
}

fn start(sim: &BackendSim, nodes: Value, extra: &[&str]) -> Started {
    let tmp = tempfile::tempdir().expect("tmp");
    let mut app = Appliance::with_dir(tmp.path().to_path_buf(), &sim.backend_url(), extra);
    app.write_config("nodes.json", &json!({ "nodes": nodes }));
    app.spawn();
    app.wait_ready(T);
    Started { app, _tmp: tmp }
}

/// An appliance with one storescp node, connected, that has completed one dispatch.
struct Dispatched {
    started: Started,
    scp: StoreScp,
    _sim: BackendSim,
    instances: usize,
}

fn dispatched(corr: &str) -> Dispatched {
    let sim = sim();
    let scp = StoreScp::start("PACS_A");
    let (zip, instances) = study(1, 6, 4096);
    sim.put_download(EntityKind::Session, "sess_1", zip);
    let started = start(&sim, json!([node("node_1", "PACS_A", scp.port)]), &[]);
    let app = &started.app;
    assert!(sim.wait_connected(T));
    assert!(sim.send_event(&dispatch_event(
        "session",
        "sess_1",
        corr,
        &["node_1"],
        "normal"
    )));
    let last = wait_final(&sim, corr, "node_1", T)
        .unwrap_or_else(|| panic!("no final status:\n{}", app.logs()));
    assert_eq!(last["status"], "completed", "{last}");
    Dispatched {
        started,
        scp,
        _sim: sim,
        instances,
    }
}

fn agent() -> ureq::Agent {
    ureq::AgentBuilder::new()
        .redirects(0)
        .timeout(Duration::from_secs(10))
        .build()
}

/// POSTs a form; (status, Location header).
fn post_form(url: &str, fields: &[(&str, &str)], origin: Option<&str>) -> (u16, String) {
    let mut req = agent().post(url);
    if let Some(o) = origin {
        req = req.set("Origin", o);
    }
    match req.send_form(fields) {
        Ok(r) => (r.status(), r.header("Location").unwrap_or("").to_owned()),
        Err(ureq::Error::Status(code, r)) => (code, r.header("Location").unwrap_or("").to_owned()),
        Err(e) => panic!("POST {url}: {e}"),
    }
}

#[test]
fn the_page_reads_without_javascript_and_its_forms_act_and_come_back() {
    let d = dispatched("corr_page");
    let app = &d.started.app;
    let resp = agent().get(&app.url("/")).call().expect("page");
    assert_eq!(resp.status(), 200);
    let csp = resp
        .header("Content-Security-Policy")
        .unwrap_or("")
        .to_owned();
    assert!(csp.contains("script-src 'self'"), "{csp}");
    let html = resp.into_string().expect("html");
    for part in [
        "Backend link",
        "Actors",
        r#"data-actor="router""#,
        r#"data-actor="link""#,
        r#"data-node="node_1""#,
        r#"data-correlation="corr_page""#,
        "Recent events",
        "session.dispatch",
        "dispatch.status",
        r#"<form method="post" action="/ui/nodes/node_1/echo""#,
        // The pictures, drawn by the server: the node sent this minute, one
        // dispatch completed today, the disk gauge.
        r#"<td class="spark" data-chart="node"><svg"#,
        r#"<path class="spark-bytes""#,
        r#"<div data-chart="days"><svg"#,
        r#"<rect class="bar-completed""#,
        r#"<td data-chart="disk"><svg"#,
        r#"class="gauge-floor""#,
    ] {
        assert!(html.contains(part), "the page lacks {part}:\n{html}");
    }
    assert!(!html.contains(KEY), "the page shows the proxy key");
    assert!(
        !html.contains(r#"name="token""#),
        "no token field without a token"
    );

    // The dispatch's replay form, without JavaScript: 303 back to the page with a note.
    let list = app.get_json("/api/dispatches");
    let id = list[0]["id"].as_str().expect("id").to_owned();
    // (Right after its last status the job may still be winding down: "still
    // active" until the dispatcher has seen it finish.)
    let back = eventually(T, || {
        let (code, location) =
            post_form(&app.url(&format!("/ui/dispatches/{id}/replay")), &[], None);
        assert_eq!(code, 303);
        assert!(location.starts_with("/?flash="), "{location}");
        let back = app.get(&location).expect("page").1;
        (!back.contains("is still active</p>")).then_some(back)
    })
    .unwrap_or_else(|| panic!("the replay is never taken:\n{}", app.logs()));
    assert!(back.contains(r#"data-kind="ok""#), "{back}");
    assert!(back.contains("replayed"), "{back}");
    let again = eventually(T, || {
        let d = app.get_json(&format!("/api/dispatches/{id}"));
        (d["replays"] == 1 && d["state"] == "completed").then_some(d)
    });
    assert!(again.is_some(), "the replay did not run");
    assert_eq!(d.scp.store_requests(), 2 * d.instances);

    // A bulk replay with a bad time says why; the echo form answers with the round trip.
    let (code, location) = post_form(
        &app.url("/ui/dispatches/replay?status=failed"),
        &[("since", "yesterday")],
        None,
    );
    assert_eq!(code, 303);
    let page = app.get(&location).expect("page").1;
    assert!(page.contains("RFC 3339"), "{page}");
    let (_, location) = post_form(&app.url("/ui/nodes/node_1/echo"), &[], None);
    let page = app.get(&location).expect("page").1;
    assert!(page.contains("C-ECHO to node_1: answered"), "{page}");

    // Another site's page cannot make a browser act (CSRF), by form or by API.
    let (code, location) = post_form(
        &app.url(&format!("/ui/dispatches/{id}/cancel")),
        &[],
        Some("http://evil.example"),
    );
    assert_eq!(code, 303);
    assert!(app
        .get(&location)
        .expect("page")
        .1
        .contains("only from this appliance"));
    let api = agent()
        .post(&app.url(&format!("/api/dispatches/{id}/replay")))
        .set("Origin", "http://evil.example")
        .call();
    assert!(matches!(api, Err(ureq::Error::Status(403, _))), "{api:?}");
    // Unknown notes show nothing.
    assert!(!app
        .get("/?flash=999")
        .expect("page")
        .1
        .contains("data-kind"));
}

#[test]
fn values_from_the_backend_are_escaped_on_the_page() {
    let sim = sim();
    let mut app = Appliance::start(&sim.backend_url(), &[]);
    app.wait_ready(T);
    assert!(sim.wait_connected(T));
    let evil = r#"<script>alert("x")</script>"#;
    let mut n = node("node_<b>1</b>", "PACS_A", free_port());
    n["name"] = json!(evil);
    assert!(sim.send_event(&event(
        "proxy.nodes_changed",
        "corr_evil",
        json!({ "action": "added", "nodes": [n] })
    )));
    let html = eventually(T, || {
        let (_, html) = app.get("/")?;
        html.contains("&lt;script&gt;").then_some(html)
    })
    .unwrap_or_else(|| panic!("the node never showed:\n{}", app.logs()));
    assert!(!html.contains(evil), "{html}");
    assert!(!html.contains("<b>1</b>"), "{html}");
    assert!(
        html.contains("/ui/nodes/node_%3Cb%3E1%3C%2Fb%3E/echo"),
        "{html}"
    );
}

#[test]
fn operator_actions_need_the_token_when_one_is_set() {
    let sim = sim();
    let scp = StoreScp::start("PACS_A");
    let started = start(
        &sim,
        json!([node("node_1", "PACS_A", scp.port)]),
        &["--status-token", "s3cret"],
    );
    let app = &started.app;
    let path = "/api/nodes/node_1/echo";
    assert_eq!(app.post(path, None).map(|r| r.0), Some(401));
    assert_eq!(app.post(path, Some("wrong")).map(|r| r.0), Some(401));
    let (code, body) = app.post(path, Some("s3cret")).expect("answer");
    assert_eq!(code, 200, "{body}");
    let echo: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(echo["ok"], true, "{echo}");
    // The page asks for the token and never contains it.
    let html = app.get("/").expect("page").1;
    assert!(html.contains(r#"data-token-required="true""#));
    assert!(html.contains(r#"id="token""#));
    assert!(!html.contains("s3cret"));
    // The no-JavaScript form takes the token as a field.
    let url = app.url("/ui/nodes/node_1/echo");
    let (_, location) = post_form(&url, &[], None);
    assert!(app
        .get(&location)
        .expect("page")
        .1
        .contains("token is missing or wrong"));
    let (_, location) = post_form(&url, &[("token", "s3cret")], None);
    assert!(app
        .get(&location)
        .expect("page")
        .1
        .contains("C-ECHO to node_1: answered"));
}

#[test]
fn beyond_loopback_without_a_token_actions_are_refused_and_shown_disabled() {
    let sim = sim();
    let tmp = tempfile::tempdir().expect("tmp");
    let mut app = Appliance::with_dir(tmp.path().to_path_buf(), &sim.backend_url(), &[]);
    let at = app
        .args
        .iter()
        .position(|a| a == "--http-addr")
        .expect("--http-addr");
    // Listens on every interface; the test only ever connects to 127.0.0.1.
    app.args[at + 1] = format!("0.0.0.0:{}", app.http_port);
    app.spawn();
    app.wait_ready(T);
    let (code, body) = app.post("/api/nodes/node_1/echo", None).expect("answer");
    assert_eq!(code, 403, "{body}");
    assert!(body.contains("no --status-token"), "{body}");
    assert_eq!(
        app.post("/api/dispatches/replay?status=failed", None)
            .map(|r| r.0),
        Some(403)
    );
    let html = app.get("/").expect("page").1;
    assert!(html.contains(r#"id="actions-disabled""#), "{html}");
    assert!(html.contains("no --status-token is set"), "{html}");
    assert!(html.contains("<button type=\"submit\" disabled"), "{html}");
    let (_, location) = post_form(&app.url("/ui/dispatches/replay?status=failed"), &[], None);
    assert!(app
        .get(&location)
        .expect("page")
        .1
        .contains(r#"data-kind="error""#));
}

/// `/metrics` as parsed by a Prometheus text parser: (name, labels) → value.
fn scrape(app: &Appliance) -> BTreeMap<(String, Vec<(String, String)>), f64> {
    let (code, body) = app.get("/metrics").expect("metrics");
    assert_eq!(code, 200);
    let lines = body.lines().map(|l| Ok(l.to_owned()));
    let scrape = prometheus_parse::Scrape::parse(lines).expect("Prometheus text format");
    let mut out = BTreeMap::new();
    for s in scrape.samples {
        let mut labels: Vec<(String, String)> = s
            .labels
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        labels.sort();
        let value = match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            prometheus_parse::Value::Histogram(h) => {
                for b in &h {
                    let mut l = labels.clone();
                    l.push(("le".into(), b.less_than.to_string()));
                    out.insert((format!("{}_bucket", s.metric), l), b.count);
                }
                continue;
            }
            prometheus_parse::Value::Summary(_) => continue,
        };
        out.insert((s.metric, labels), value);
    }
    out
}

fn one(k: &str, v: &str) -> Vec<(String, String)> {
    vec![(k.to_owned(), v.to_owned())]
}

#[test]
fn metrics_parse_and_count_a_dispatch() {
    let d = dispatched("corr_metrics");
    let m = scrape(&d.started.app);
    let get = |name: &str, labels: Vec<(String, String)>| {
        m.get(&(name.to_owned(), labels.clone()))
            .copied()
            .unwrap_or_else(|| panic!("no {name}{labels:?} in {m:#?}"))
    };
    let n = d.instances as f64;
    assert_eq!(
        get("laminate_events_in_total", one("type", "session.dispatch")),
        1.0
    );
    assert!(get("laminate_events_out_total", one("type", "dispatch.status")) >= 4.0);
    assert!(get("laminate_events_out_total", one("type", "proxy.heartbeat")) >= 1.0);
    assert_eq!(get("laminate_dispatches", one("state", "completed")), 1.0);
    assert_eq!(get("laminate_dispatches", one("state", "failed")), 0.0);
    assert_eq!(
        get("laminate_instances_sent_total", one("node_id", "node_1")),
        n
    );
    assert!(get("laminate_sent_bytes_total", one("node_id", "node_1")) >= n * 4096.0);
    assert_eq!(get("laminate_cstore_rtt_seconds_count", vec![]), n);
    assert!(get("laminate_cstore_rtt_seconds_sum", vec![]) > 0.0);
    let inf = get(
        "laminate_cstore_rtt_seconds_bucket",
        one("le", &f64::INFINITY.to_string()),
    );
    assert_eq!(inf, n);
    assert_eq!(get("laminate_link_up", vec![]), 1.0);
    assert_eq!(get("laminate_link_reconnects_total", vec![]), 0.0);
    assert_eq!(
        get("laminate_actor_restarts_total", one("actor", "router")),
        0.0
    );
    assert_eq!(get("laminate_actor_up", one("actor", "dispatcher")), 1.0);
    assert_eq!(get("laminate_store_instances", vec![]), n);
    assert!(get("laminate_cache_bytes", vec![]) > 0.0);
    assert!(get("laminate_store_database_bytes", vec![]) > 0.0);
    assert_eq!(get("laminate_node_up", one("node_id", "node_1")), 1.0);
    assert!(m.contains_key(&("laminate_outbox_events".to_owned(), vec![])));
}

/// A `/ws` client on its own thread that reads until it has seen what `done` wants.
fn ws_reader(
    url: String,
    mut done: impl FnMut(&Value) -> bool + Send + 'static,
) -> std::thread::JoinHandle<Result<Vec<String>, String>> {
    let (mut socket, _) = tungstenite::connect(url.as_str()).expect("ws connects");
    std::thread::spawn(move || {
        if let tungstenite::stream::MaybeTlsStream::Plain(s) = socket.get_ref() {
            let _ = s.set_read_timeout(Some(Duration::from_secs(60)));
        }
        let mut types = Vec::new();
        loop {
            match socket.read() {
                Ok(tungstenite::Message::Text(t)) => {
                    let v: Value = serde_json::from_str(t.as_str()).map_err(|e| e.to_string())?;
                    types.push(v["type"].as_str().unwrap_or("?").to_owned());
                    if done(&v) {
                        let _ = socket.close(None);
                        return Ok(types);
                    }
                }
                Ok(_) => {}
                Err(e) => return Err(format!("{e} after {types:?}")),
            }
        }
    })
}

/// A `/ws` client that completes the handshake and then never reads, with a
/// tiny receive buffer so its socket fills up quickly.
fn stuck_client(port: u16) -> tungstenite::WebSocket<TcpStream> {
    let socket =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    socket.set_recv_buffer_size(4096).expect("SO_RCVBUF");
    let addr: std::net::SocketAddr = ([127, 0, 0, 1], port).into();
    socket.connect(&addr.into()).expect("connect");
    let stream = TcpStream::from(socket);
    let (ws, _) =
        tungstenite::client(format!("ws://127.0.0.1:{port}/ws"), stream).expect("ws handshake");
    ws
}

fn metric(app: &Appliance, name: &str) -> f64 {
    scrape(app)
        .get(&(name.to_owned(), vec![]))
        .copied()
        .unwrap_or_else(|| panic!("no {name}"))
}

#[test]
fn many_live_feed_clients_at_once_and_one_that_never_reads_is_dropped_alone() {
    let sim = sim();
    let scp = StoreScp::start("PACS_A");
    let (zip, _) = study(2, 40, 16 * 1024);
    sim.put_download(EntityKind::Session, "sess_1", zip);
    let app = Appliance::with_one_node(&sim, scp.port, T);
    let ws_url = format!("ws://127.0.0.1:{}/ws", app.http_port);

    let stuck = stuck_client(app.http_port);
    const READERS: usize = 24;
    let readers: Vec<_> = (0..READERS)
        .map(|_| {
            // Done once it saw the dispatch complete and the end of the flood.
            let mut completed = false;
            ws_reader(ws_url.clone(), move |v| {
                completed |= v["type"] == "dispatch.update"
                    && v["dispatch"]["correlation_id"] == "corr_ws"
                    && v["dispatch"]["state"] == "completed";
                completed
                    && v["type"] == "event"
                    && v["event"]["correlation_id"] == "flood_end"
                    && v["event"]["direction"] == "out"
            })
        })
        .collect();
    let clients = eventually(T, || {
        let n = metric(&app, "laminate_status_feed_clients");
        (n as usize == READERS + 1).then_some(n)
    });
    assert!(clients.is_some(), "not every client connected");
    assert!(sim.send_event(&dispatch_event(
        "session",
        "sess_1",
        "corr_ws",
        &["node_1"],
        "normal"
    )));

    // A flood of events (each ping is an event in and a pong out, both on the
    // feed) until the one that never reads has been dropped; the appliance
    // answers all along.
    let long = "x".repeat(150);
    let mut slowest = Duration::ZERO;
    let mut batches = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    while metric(&app, "laminate_status_feed_dropped_clients_total") < 1.0 {
        assert!(
            Instant::now() < deadline,
            "the client that never reads was not dropped\n{}",
            app.logs()
        );
        if batches == 40 {
            // Its socket is full: the write to it times out shortly.
            std::thread::sleep(Duration::from_millis(200));
            continue;
        }
        batches += 1;
        let last = format!("flood_{batches}_{long}");
        for i in 0..300 {
            let corr = if i == 299 {
                last.clone()
            } else {
                format!("flood_{batches}_{i}_{long}")
            };
            assert!(sim.send_event(&event("ping", &corr, json!({}))));
        }
        sim.wait_frame(T, is_pong(&last))
            .expect("pongs keep coming");
        let t0 = Instant::now();
        let (code, _) = app.get("/api/status").expect("status answers");
        assert_eq!(code, 200);
        slowest = slowest.max(t0.elapsed());
    }
    assert!(slowest < Duration::from_secs(5), "status took {slowest:?}");
    let last = wait_final(&sim, "corr_ws", "node_1", T).expect("final");
    assert_eq!(last["status"], "completed");
    assert!(sim.send_event(&event("ping", "flood_end", json!({}))));
    assert_eq!(
        metric(&app, "laminate_status_feed_dropped_clients_total"),
        1.0,
        "only the client that never reads is dropped"
    );
    for r in readers {
        let types = r
            .join()
            .expect("reader thread")
            .unwrap_or_else(|e| panic!("a reader missed the update: {e}\n{}", app.logs()));
        assert!(types.iter().any(|t| t == "event"), "{types:?}");
        assert!(types.iter().all(|t| [
            "dispatch.update",
            "event",
            "link.status",
            "actor.status",
            "node.status",
            "store.status",
            "charts.update",
            "ping"
        ]
        .contains(&t.as_str())));
    }
    // Still serving new clients.
    let late = ws_reader(ws_url, |v| v["type"] == "node.status");
    let (code, _) = app.post("/api/nodes/node_1/echo", None).expect("echo");
    assert_eq!(code, 200);
    late.join()
        .expect("thread")
        .expect("a late client is served");
    drop(stuck);
}
