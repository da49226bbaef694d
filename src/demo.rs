//! `laminate-proxy demo`: the whole system on one machine with nothing else
//! installed — the backend simulator, an embedded DICOM receiver standing in
//! for the PACS, and a synthetic three-series study that the backend dispatches
//! once the appliance is connected. Prints the status page URL; Ctrl-C stops it.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use laminate_actors::health::HealthRegistry;
use laminate_actors::ingest::{IngestActor, IngestSettings};
use laminate_config::settings::{validate_settings, RawSettings};
use laminate_store::Store;
use serde_json::json;

use crate::cli::DemoArgs;
use crate::sim::study::{fresh_uid, SeriesSpec, StudySpec, Syntax};
use crate::sim::{BackendSim, EntityKind, SimOptions};

const PACS_AE: &str = "DEMO_PACS";
const SESSION_ID: &str = "sess_demo";

pub fn main(args: DemoArgs) -> ExitCode {
    match demo(args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("laminate-proxy demo: {e}");
            ExitCode::FAILURE
        }
    }
}

fn demo(args: DemoArgs) -> Result<ExitCode, String> {
    let tmp = tempfile::tempdir().map_err(|e| e.to_string())?;
    let root: PathBuf = args
        .data_dir
        .clone()
        .unwrap_or_else(|| tmp.path().to_path_buf());
    let data_dir = root.join("appliance");
    let pacs_dir = root.join("pacs");
    let key = format!(
        "pk_demo_{}",
        fresh_uid()
            .replace('.', "")
            .chars()
            .rev()
            .take(12)
            .collect::<String>()
    );

    println!("laminate-proxy demo: preparing a synthetic study…");
    let sim = BackendSim::start(SimOptions {
        proxy_key: key.clone(),
        tls: None,
        port: 0,
    })
    .map_err(|e| format!("backend simulator: {e}"))?;
    let spec = StudySpec {
        study_uid: fresh_uid(),
        patient_id: "DEMO-0001".into(),
        series: vec![
            SeriesSpec {
                number: 1,
                uid: fresh_uid(),
                instances: 40,
                syntax: Syntax::ExplicitLe,
            },
            SeriesSpec {
                number: 2,
                uid: fresh_uid(),
                instances: 30,
                syntax: Syntax::ImplicitLe,
            },
            SeriesSpec {
                number: 3,
                uid: fresh_uid(),
                instances: 30,
                syntax: Syntax::ExplicitLe,
            },
        ],
        pixel_bytes: 256 * 1024,
    };
    let (zip, instances) = spec.zip_bytes()?;
    sim.put_download(EntityKind::Session, SESSION_ID, zip);

    let pacs_addr = start_pacs(&pacs_dir)?;
    std::fs::create_dir_all(&data_dir).map_err(|e| e.to_string())?;
    let nodes = json!({"nodes": [{
        "node_id": "demo_pacs", "name": "Demo PACS (embedded receiver)", "ae_title": PACS_AE,
        "host": pacs_addr.ip().to_string(), "port": pacs_addr.port(),
        "storage_path": pacs_dir.display().to_string(), "is_active": true
    }]});
    laminate_config::write_json_atomic(&data_dir.join(laminate_config::NODES_FILE), &nodes)
        .map_err(|e| e.to_string())?;

    let settings = validate_settings(RawSettings {
        backend_url: Some(sim.backend_url()),
        proxy_key: Some(key),
        data_dir: Some(data_dir.clone()),
        http_addr: args.http_addr.clone(),
        dicom_addr: "127.0.0.1:0".into(),
        ..RawSettings::default()
    })
    .map_err(|p| {
        p.iter()
            .map(|p| p.to_string())
            .collect::<Vec<_>>()
            .join("; ")
    })?;

    println!(
        "laminate-proxy demo: status page at http://{}/ — Ctrl-C to stop",
        settings.http_addr
    );
    println!("  backend simulator  {}", sim.backend_url());
    println!(
        "  demo PACS          {PACS_AE} at {pacs_addr} (files in {})",
        pacs_dir.display()
    );
    println!("  data dir           {}", data_dir.display());
    let total = instances.len();
    let driver = std::thread::spawn(move || drive(sim, total));
    let code = crate::run::run_settings(
        settings,
        crate::run::IngestOptions::default(),
        crate::run::AuditOptions::default(),
    );
    drop(driver);
    Ok(code)
}

/// Sends the dispatch once the appliance is connected and narrates its statuses.
fn drive(sim: BackendSim, total: usize) -> BackendSim {
    if !sim.wait_connected(Duration::from_secs(60)) {
        eprintln!("laminate-proxy demo: the appliance did not connect to the simulator");
        return sim;
    }
    let event = json!({
        "event_type": "session.dispatch", "workspace_id": "ws_demo",
        "timestamp": laminate_actors::clock::now_rfc3339(), "correlation_id": "corr_demo_1",
        "entity_type": "session", "entity_id": SESSION_ID,
        "payload": {"subject_id": "subj_demo", "nodes": ["demo_pacs"], "session_label": "Demo CT", "priority": "normal"}
    });
    sim.send_event(&event);
    println!(
        "laminate-proxy demo: backend dispatched {SESSION_ID} ({total} instances) to demo_pacs"
    );
    let mut shown = 0;
    loop {
        let frames: Vec<_> = sim
            .frames()
            .into_iter()
            .filter(|f| f["event_type"] == "dispatch.status")
            .collect();
        for f in frames.iter().skip(shown) {
            let p = &f["payload"];
            println!(
                "  dispatch.status {:<11} {:>3}%  {}/{}{}",
                p["status"].as_str().unwrap_or("?"),
                p["progress"],
                p["files_sent"],
                p["files_total"],
                p["error"]
                    .as_str()
                    .map(|e| format!("  ({e})"))
                    .unwrap_or_default()
            );
        }
        shown = frames.len();
        if frames.last().is_some_and(|f| {
            matches!(
                f["payload"]["status"].as_str(),
                Some("completed" | "failed" | "cancelled")
            )
        }) {
            println!("laminate-proxy demo: done — replay it from the status page; Ctrl-C to stop");
            return sim;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The embedded receiver: an ingest SCP with its own store, on its own thread.
fn start_pacs(dir: &Path) -> Result<SocketAddr, String> {
    let (tx, rx) = std::sync::mpsc::channel();
    let dir = dir.to_path_buf();
    std::thread::Builder::new()
        .name("demo-pacs".into())
        .spawn(move || {
            let sys = actix_rt::System::new();
            sys.block_on(async move {
                let store = match Store::open_temporary() {
                    Ok(s) => s,
                    Err(e) => {
                        let _ = tx.send(Err(e.to_string()));
                        return;
                    }
                };
                let addr: SocketAddr = SocketAddr::from(([127, 0, 0, 1], 0));
                let mut settings = IngestSettings::new(addr, PACS_AE, dir);
                settings.accept_any_called_ae = true;
                let health = HealthRegistry::new().register("demo-pacs");
                match IngestActor::start(health, settings, store) {
                    Ok(h) => {
                        let _ = tx.send(Ok(h.local_addr));
                        // Runs until the process ends.
                        std::future::pending::<()>().await;
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e.to_string()));
                    }
                }
            });
        })
        .map_err(|e| e.to_string())?;
    rx.recv_timeout(Duration::from_secs(10))
        .map_err(|_| "the demo PACS did not start".to_owned())?
}
