//! The status page in a real browser: Debian's headless Chromium driven over
//! WebDriver (chromedriver + fantoccini) against the real binary, the backend
//! simulator and a real dcmtk `storescp`. It watches a dispatch reach
//! `completed` without a reload, replays it with the page's button and watches
//! it run again, checks the actor table, that the charts render (the node's
//! sparkline gets its line live), that the proxy key is nowhere in the page,
//! and saves a screenshot to `target/ui-screenshot.png` (and to the path in
//! `LAMINATE_SCREENSHOT` when set: that is how `docs/status-page.png` is made).
//!
//! Needs `chromium` and `chromium-driver` (Debian packages; `scripts/test`
//! installs them): without them this test fails and says so.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use laminate_proxy::sim::study::StudySpec;
use laminate_proxy::sim::EntityKind;
use support::*;

const T: Duration = Duration::from_secs(30);
const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// chromedriver on a free loopback port; killed on drop.
struct Driver {
    child: Child,
    port: u16,
    _profile: tempfile::TempDir,
}

impl Driver {
    fn start() -> Driver {
        for (path, package) in [(CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")] {
            assert!(
                Path::new(path).exists(),
                "{path} is missing: this test needs Debian's `{package}` \
                 (apt-get install -y chromium chromium-driver; scripts/test installs it)"
            );
        }
        let port = free_port();
        let profile = tempfile::tempdir().expect("profile dir");
        let child = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        eventually(Duration::from_secs(20), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).ok()
        })
        .expect("chromedriver listens");
        Driver {
            child,
            port,
            _profile: profile,
        }
    }

    /// A fresh headless Chromium session; `javascript: false` turns scripts off.
    async fn client(&self, javascript: bool) -> Client {
        let mut args = vec![
            "--headless".to_owned(),
            "--no-sandbox".to_owned(),
            "--disable-gpu".to_owned(),
            "--disable-dev-shm-usage".to_owned(),
            "--disable-quic".to_owned(),
            "--no-first-run".to_owned(),
            "--disable-background-networking".to_owned(),
            "--disable-component-update".to_owned(),
            "--disable-sync".to_owned(),
            "--window-size=1400,2200".to_owned(),
            format!("--user-data-dir={}", self._profile.path().display()),
        ];
        if !javascript {
            args.push("--blink-settings=scriptEnabled=false".to_owned());
        }
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".to_owned(),
            json!({ "binary": CHROMIUM, "args": args }),
        );
        ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps)
            .connect(&format!("http://127.0.0.1:{}", self.port))
            .await
            .expect("a WebDriver session with headless Chromium")
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Text of the first element matching `css`, if any.
async fn text_of(c: &Client, css: &str) -> Option<String> {
    let e = c.find(Locator::Css(css)).await.ok()?;
    e.text().await.ok()
}

/// Polls `css`'s text until it equals `want`.
async fn wait_text(c: &Client, css: &str, want: &str, timeout: Duration) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    let mut last = None;
    while Instant::now() < deadline {
        last = text_of(c, css).await;
        if last.as_deref() == Some(want) {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(format!("{css}: wanted {want:?}, last saw {last:?}"))
}

fn screenshot_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("target")
        .join("ui-screenshot.png")
}

#[test]
fn a_browser_watches_a_dispatch_complete_live_and_replays_it() {
    let driver = Driver::start();
    let sim = sim();
    let scp = StoreScp::start("PACS_A");
    let (zip, inst) = StudySpec::simple(2, 8, 8 * 1024)
        .zip_bytes()
        .expect("study zip");
    sim.put_download(EntityKind::Session, "sess_1", zip);
    let app = Appliance::with_one_node(&sim, scp.port, T);

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let outcome = rt.block_on(async {
        let c = driver.client(true).await;
        let r = drive(&c, &app, &sim, &scp, inst.len()).await;
        if let Ok(png) = c.screenshot().await {
            let path = screenshot_path();
            let _ = std::fs::create_dir_all(path.parent().expect("target dir"));
            std::fs::write(&path, &png).expect("screenshot written");
            // The operator's guide's picture: `LAMINATE_SCREENSHOT=docs/status-page.png`.
            if let Some(doc) = std::env::var_os("LAMINATE_SCREENSHOT") {
                std::fs::write(&doc, &png).expect("LAMINATE_SCREENSHOT written");
            }
        }
        let _ = c.close().await;
        r
    });
    if let Err(e) = outcome {
        panic!("{e}\nappliance log:\n{}", app.logs());
    }
    assert!(screenshot_path().is_file());
}

async fn drive(
    c: &Client,
    app: &Appliance,
    sim: &BackendSim,
    scp: &StoreScp,
    instances: usize,
) -> Result<(), String> {
    let e = |what: &str| {
        let what = what.to_owned();
        move |err: fantoccini::error::CmdError| format!("{what}: {err}")
    };
    c.goto(&app.url("/")).await.map_err(e("open the page"))?;
    let title = c.title().await.map_err(e("title"))?;
    if !title.contains("laminate-proxy") {
        return Err(format!("title {title:?}"));
    }
    // The script connected the live feed.
    wait_text(c, "#live", "Live: updates as they happen.", T).await?;

    // The actor table: every actor running, none restarted.
    let rows = c
        .find_all(Locator::Css("#actor-rows tr[data-actor]"))
        .await
        .map_err(e("actor rows"))?;
    let mut names = Vec::new();
    for row in &rows {
        let cells = row
            .find_all(Locator::Css("td"))
            .await
            .map_err(e("actor cells"))?;
        let mut text = Vec::new();
        for cell in &cells {
            text.push(cell.text().await.map_err(e("cell"))?);
        }
        if text.get(1).map(String::as_str) != Some("running")
            || text.get(2).map(String::as_str) != Some("0")
        {
            return Err(format!("actor row {text:?}"));
        }
        names.push(text[0].clone());
    }
    for want in [
        "config",
        "dispatcher",
        "heartbeat",
        "link",
        "nodes",
        "router",
    ] {
        if !names.iter().any(|n| n == want) {
            return Err(format!("no actor {want} in {names:?}"));
        }
    }

    // A marker that a reload would wipe.
    c.execute("window.__stillTheSamePage = true; return true;", vec![])
        .await
        .map_err(e("set marker"))?;

    if !sim.send_event(&dispatch_event(
        "session",
        "sess_1",
        "corr_browser",
        &["node_1"],
        "high",
    )) {
        return Err("the simulator could not send the dispatch".into());
    }
    let row = r#"tr[data-correlation="corr_browser"]"#;
    wait_text(c, &format!("{row} td.state"), "completed", T).await?;
    wait_text(c, &format!("{row} .node-progress .status"), "completed", T).await?;
    let count = format!("{instances}/{instances}");
    wait_text(c, &format!("{row} .node-progress .count"), &count, T).await?;
    wait_text(c, &format!("{row} td.replays"), "0", T).await?;
    // The store figures follow too (the dispatch's instances are in the cache).
    wait_text(
        c,
        r#"td[data-store="instances"]"#,
        &instances.to_string(),
        T,
    )
    .await?;

    // The pictures: drawn, with a size, and the node's sparkline got its line
    // live (the page was loaded before anything was sent).
    charts_render(c).await?;

    // Replay with the page's own button, and watch it run again. (Right after
    // its last status the job may still be winding down: then the note says
    // "still active" and the button is pressed again.)
    let button = format!(r#"{row} form[data-api$="/replay"] button"#);
    let deadline = Instant::now() + T;
    loop {
        c.find(Locator::Css(&button))
            .await
            .map_err(e("replay button"))?
            .click()
            .await
            .map_err(e("click replay"))?;
        let note = loop {
            let note = text_of(c, "#note").await.unwrap_or_default();
            if !note.is_empty() {
                break note;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        if !note.contains("still active") || Instant::now() > deadline {
            break;
        }
        c.execute("document.getElementById('note').textContent = '';", vec![])
            .await
            .map_err(e("clear note"))?;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    wait_text(c, &format!("{row} td.replays"), "1", T).await?;
    wait_text(c, &format!("{row} td.state"), "completed", T).await?;
    if scp.store_requests() != 2 * instances {
        return Err(format!(
            "storescp got {} requests, wanted {}",
            scp.store_requests(),
            2 * instances
        ));
    }
    let note = text_of(c, "#note").await.unwrap_or_default();
    if !note.contains("replayed (replay 1)") {
        return Err(format!("no note after the replay: {note:?}"));
    }

    // Recent events arrived live too, and no reload happened.
    let events = text_of(c, "#event-rows").await.unwrap_or_default();
    if !events.contains("session.dispatch") || !events.contains("dispatch.status") {
        return Err(format!("recent events: {events}"));
    }
    let same = c
        .execute("return window.__stillTheSamePage === true;", vec![])
        .await
        .map_err(e("read marker"))?;
    if same != serde_json::Value::Bool(true) {
        return Err("the page was reloaded".into());
    }

    // The proxy key is nowhere: not in the page source, not in the live DOM.
    let source = c.source().await.map_err(e("source"))?;
    let dom = c
        .execute("return document.documentElement.outerHTML;", vec![])
        .await
        .map_err(e("dom"))?;
    if source.contains(KEY) || dom.as_str().unwrap_or_default().contains(KEY) {
        return Err("the proxy key is on the page".into());
    }
    Ok(())
}

/// The disk gauge, the per-day bars and node_1's sparkline are SVG with a
/// non-zero size; the sparkline has a drawn path and the bars a completed bar.
async fn charts_render(c: &Client) -> Result<(), String> {
    const PROBE: &str = r#"
        function size(sel) {
            var e = document.querySelector(sel);
            if (!e) return null;
            var r = e.getBoundingClientRect();
            return [r.width, r.height];
        }
        var path = document.querySelector('tr[data-node="node_1"] td[data-chart=node] svg path.spark-bytes');
        return {
            disk: size('[data-chart=disk] svg'),
            days: size('[data-chart=days] svg'),
            spark: size('tr[data-node="node_1"] td[data-chart=node] svg'),
            path: path ? path.getAttribute('d') : null,
            pathBox: path ? [path.getBBox().width, path.getBBox().height] : null,
            bar: size('[data-chart=days] svg rect.bar-completed')
        };"#;
    let deadline = Instant::now() + T;
    let mut last = serde_json::Value::Null;
    while Instant::now() < deadline {
        last = c
            .execute(PROBE, vec![])
            .await
            .map_err(|e| format!("chart probe: {e}"))?;
        let positive = |k: &str| {
            last[k]
                .as_array()
                .is_some_and(|a| a.len() == 2 && a.iter().all(|v| v.as_f64().unwrap_or(0.0) > 0.0))
        };
        let has_path = last["path"].as_str().is_some_and(|d| d.starts_with('M'));
        if ["disk", "days", "spark", "bar"].iter().all(|k| positive(k))
            && has_path
            && last["pathBox"][0].as_f64().unwrap_or(0.0) > 0.0
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Err(format!("the charts did not render: {last}"))
}

#[test]
fn without_javascript_the_page_reads_and_its_buttons_work() {
    let driver = Driver::start();
    let sim = sim();
    let scp = StoreScp::start("PACS_A");
    let (zip, _) = StudySpec::simple(1, 3, 4096)
        .zip_bytes()
        .expect("study zip");
    sim.put_download(EntityKind::Scan, "scan_1", zip);
    let app = Appliance::with_one_node(&sim, scp.port, T);
    assert!(sim.send_event(&dispatch_event(
        "scan",
        "scan_1",
        "corr_nojs",
        &["node_1"],
        "normal"
    )));
    let last = wait_final(&sim, "corr_nojs", "node_1", T).expect("final");
    assert_eq!(last["status"], "completed");

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let outcome = rt.block_on(async {
        let c = driver.client(false).await;
        let r = async {
            let e = |what: &'static str| {
                move |err: fantoccini::error::CmdError| format!("{what}: {err}")
            };
            c.goto(&app.url("/")).await.map_err(e("open"))?;
            // No script ran: the live marker still says so.
            let live = text_of(&c, "#live").await.unwrap_or_default();
            if !live.starts_with("Live updates off") {
                return Err(format!("#live: {live:?}"));
            }
            let row = r#"tr[data-correlation="corr_nojs"]"#;
            wait_text(&c, &format!("{row} td.state"), "completed", T).await?;
            // The plain form posts, the server answers 303, the browser lands on the page.
            // (Pressed again while the job is still winding down: "still active".)
            let button = format!(r#"{row} form[action$="/replay"] button"#);
            let deadline = Instant::now() + T;
            loop {
                c.find(Locator::Css(&button))
                    .await
                    .map_err(e("replay button"))?
                    .click()
                    .await
                    .map_err(e("click"))?;
                let note = text_of(&c, "#note").await.unwrap_or_default();
                if !note.contains("still active") || Instant::now() > deadline {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            wait_text(&c, "#note", "Dispatch d000001 replayed (replay 1).", T).await?;
            let url = c.current_url().await.map_err(e("url"))?;
            if url.path() != "/" || !url.query().unwrap_or("").starts_with("flash=") {
                return Err(format!("landed on {url}"));
            }
            Ok::<(), String>(())
        }
        .await;
        let _ = c.close().await;
        r
    });
    if let Err(e) = outcome {
        panic!("{e}\nappliance log:\n{}", app.logs());
    }
    let replayed = eventually(T, || {
        let d = app.get_json("/api/dispatches/corr_nojs");
        (d["replays"] == 1 && d["state"] == "completed").then_some(())
    });
    assert!(replayed.is_some(), "the replay did not run");
}
