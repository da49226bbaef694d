//! The end-to-end rows of `cstore_vs_peers`: a study dispatched through the
//! appliance binary and the backend simulator against download alone plus send
//! alone, and the appliance's peak RSS while it dispatches a 2 GiB archive.

use super::*;

/// Seconds between two RFC 3339 timestamps of the appliance's events.
fn seconds_between(a: &str, b: &str) -> Option<f64> {
    use time::format_description::well_known::Rfc3339;
    let a = time::OffsetDateTime::parse(a, &Rfc3339).ok()?;
    let b = time::OffsetDateTime::parse(b, &Rfc3339).ok()?;
    Some((b - a).as_seconds_f64())
}

/// When each status of (corr, node_1) was first reported, in seconds after `queued`.
fn stage_times(sim: &BackendSim, corr: &str) -> String {
    let frames: Vec<Value> = sim
        .frames()
        .into_iter()
        .filter(|f| f["event_type"] == "dispatch.status" && f["correlation_id"] == corr)
        .collect();
    let Some(t0) = frames.first().and_then(|f| f["timestamp"].as_str()) else {
        return "no statuses".into();
    };
    let mut seen: Vec<String> = Vec::new();
    let mut out = Vec::new();
    for f in &frames {
        let st = f["payload"]["status"].as_str().unwrap_or("?").to_owned();
        if seen.contains(&st) {
            continue;
        }
        let at = f["timestamp"]
            .as_str()
            .and_then(|t| seconds_between(t0, t))
            .unwrap_or(f64::NAN);
        out.push(format!("{st} +{at:.2} s"));
        seen.push(st);
    }
    out.join(", ")
}

fn dispatch_event(entity: &str, corr: &str) -> Value {
    event(
        "session.dispatch",
        corr,
        ("session", entity),
        json!({"nodes": ["node_1"], "priority": "high", "subject_id": "subj_bench",
               "session_label": "CT-1"}),
    )
}

/// Starts an appliance whose only node is `port`, connected to `sim`.
fn appliance_for(sim: &BackendSim, port: u16, parent: &Path) -> Appliance {
    let before = sim.connections();
    let app = Appliance::start(
        &sim.backend_url(),
        json!([node("node_1", SCP_AE, port)]),
        "off",
        parent,
    );
    let ok = eventually(Duration::from_secs(30), Duration::from_millis(20), || {
        (sim.connections() > before && sim.is_connected()).then_some(())
    });
    assert!(ok.is_some(), "appliance not connected:\n{}", app.logs());
    app
}

/// Dispatches `entity` and waits for its final status; (time, final payload).
fn dispatch_and_wait(
    sim: &BackendSim,
    app: &Appliance,
    entity: &str,
    corr: &str,
    timeout: Duration,
    mut tick: impl FnMut(),
) -> (Duration, Value) {
    let c = corr.to_owned();
    let is_final = move |f: &Value| {
        f["event_type"] == "dispatch.status"
            && f["correlation_id"] == c.as_str()
            && matches!(
                f["payload"]["status"].as_str(),
                Some("completed" | "failed" | "cancelled")
            )
    };
    let started = Instant::now();
    assert!(
        sim.send_event(&dispatch_event(entity, corr)),
        "not connected"
    );
    loop {
        if let Some(f) = sim.wait_frame(Duration::from_millis(100), &is_final) {
            let took = started.elapsed();
            return (took, f["payload"].clone());
        }
        tick();
        assert!(
            started.elapsed() < timeout,
            "no final status for {corr}:\n{}",
            app.logs()
        );
    }
}

fn write_zip(spec: &StudySpec, path: &Path) {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(spec.write_zip(path))
        .expect("zip");
}

pub fn end_to_end(work: &Path, runs: usize, report: &mut Report) -> String {
    let count: usize = env_or("BENCH_E2E_INSTANCES", 600);
    let spec = ct_study(count, PIXEL_BYTES);
    let zip_path = work.join("e2e.zip");
    write_zip(&spec, &zip_path);
    let archive = bytes::Bytes::from(std::fs::read(&zip_path).expect("zip"));
    let _ = std::fs::remove_file(&zip_path);
    let zip_len = archive.len() as u64;
    let zip_mb = zip_len as f64 / 1e6;
    let files_dir = work.join("e2e-files");
    let files: Vec<PathBuf> = spec
        .write_files(&files_dir)
        .expect("files")
        .iter()
        .map(|i| files_dir.join(format!("{}.dcm", i.sop_instance_uid)))
        .collect();
    let files_mb = total_bytes(&files) as f64 / 1e6;

    let sim = BackendSim::start(SimOptions {
        proxy_key: KEY.into(),
        tls: None,
        port: 0,
    })
    .expect("simulator");
    sim.put_download(EntityKind::Session, "sess_e2e", archive);
    let scp = StoreScp::ignoring(SCP_AE);

    // Download alone: the same archive from the same simulator, to a file on the same disk.
    let dest = work.join("dl/archive.zip");
    let job = Download {
        url: url::Url::parse(&format!(
            "{}/api/proxy/sessions/sess_e2e/download",
            sim.api_url()
        ))
        .expect("url"),
        proxy_key: KEY.into(),
        dest: dest.clone(),
        tls: laminate_actors::link::tls::client_config(None).expect("tls"),
        idle_timeout: laminate_actors::dispatch::download::IDLE_TIMEOUT,
        disk: None,
    };
    let dl = median_of(
        runs,
        // A file left from the run before would be resumed with Range.
        || {
            let _ = std::fs::remove_file(&dest);
        },
        || {
            let started = Instant::now();
            let size = actix_rt::System::new()
                .block_on(download(&job, &|_| {}))
                .expect("download");
            let took = started.elapsed();
            assert_eq!(size, zip_len);
            took
        },
    );
    // Not part of the target, to see where the rest goes: extracting the downloaded
    // archive alone (the appliance's `extract_archive` on an actix System, as in a
    // job), and reading every extracted file's header alone (`index_dir`).
    let out = work.join("extracted");
    let extract = median_of(
        runs,
        || {
            let _ = std::fs::remove_dir_all(&out);
        },
        || {
            let started = Instant::now();
            actix_rt::System::new()
                .block_on(extract_archive(&dest, &out, &ExtractLimits::default()))
                .expect("extract");
            started.elapsed()
        },
    );
    let headers = median_of(
        runs,
        || {},
        || {
            let started = Instant::now();
            let (found, broken) = index_dir(&out);
            assert_eq!((found.len(), broken.len()), (count, 0));
            started.elapsed()
        },
    );
    let _ = std::fs::remove_dir_all(&out);
    let _ = std::fs::remove_file(&dest);
    // Send alone: the same instances as files, 4 associations, headers read beforehand
    // (the appliance reads them while extracting).
    let send = median_of(runs, || {}, || ours(&files, scp.port, SCP_AE, 4, false));
    let _ = std::fs::remove_dir_all(&files_dir);

    let mut times = Vec::new();
    let mut stages = Vec::new();
    for run in 0..runs.max(1) {
        settle_disk();
        let app = appliance_for(&sim, scp.port, work);
        let corr = format!("corr_e2e_{run}");
        let (took, last) = dispatch_and_wait(
            &sim,
            &app,
            "sess_e2e",
            &corr,
            Duration::from_secs(900),
            || {},
        );
        assert_eq!(last["status"], "completed", "{last}\n{}", app.logs());
        assert_eq!(last["files_sent"], count, "{last}");
        stages.push((took, stage_times(&sim, &corr)));
        // The appliance's own stage timings (download, extract, index, send), for the record.
        for line in app.logs().lines().filter(|l| {
            l.contains("archive downloaded")
                || l.contains("extracted and indexed")
                || l.contains("prepare_s")
                || l.contains("batch ended")
        }) {
            println!("    appliance: {line}");
        }
        times.push(took);
    }
    let e2e = median(times);
    let base = dl + send;
    let ratio = e2e.as_secs_f64() / base.as_secs_f64();
    report.line("");
    report.line("## End to end (appliance binary, simulator → storescp --ignore)");
    report.line(format!(
        "{count} instances, archive {zip_mb:.1} MB; medians of {runs}"
    ));
    report.line(format!(
        "- download alone (download(), same sim): {:.2} s ({:.1} MB/s)",
        dl.as_secs_f64(),
        zip_mb / dl.as_secs_f64()
    ));
    report.line(format!(
        "- send alone (send_batch, 4 assoc): {:.2} s ({:.1} MB/s)",
        send.as_secs_f64(),
        files_mb / send.as_secs_f64()
    ));
    report.line(format!(
        "- for comparison, not in the target: extract_archive alone {:.2} s ({:.1} MB/s); \
         index_dir (headers of the extracted files) alone {:.2} s",
        extract.as_secs_f64(),
        zip_mb / extract.as_secs_f64(),
        headers.as_secs_f64()
    ));
    report.line(format!(
        "- dispatch event → completed: {:.2} s ({:.1} MB/s of archive)",
        e2e.as_secs_f64(),
        zip_mb / e2e.as_secs_f64()
    ));
    for (t, s) in stages {
        report.line(format!("  - run {:.2} s: {s}", t.as_secs_f64()));
    }
    format!(
        "- end to end: {:.2} s = {ratio:.2} × (download {:.2} s + send {:.2} s), target ≤ 1.2× → {}",
        e2e.as_secs_f64(),
        dl.as_secs_f64(),
        send.as_secs_f64(),
        if ratio <= 1.2 { "PASS" } else { "FAIL" }
    )
}

pub fn peak_rss(work: &Path, report: &mut Report) -> String {
    let count: usize = env_or("BENCH_RSS_INSTANCES", 4096);
    let spec = ct_study(count, PIXEL_BYTES);
    let zip_path = work.join("rss.zip");
    let generated = Instant::now();
    write_zip(&spec, &zip_path);
    let archive = bytes::Bytes::from(std::fs::read(&zip_path).expect("zip"));
    let _ = std::fs::remove_file(&zip_path);
    let zip_mb = archive.len() as f64 / 1e6;
    let zip_gib = archive.len() as f64 / (1u64 << 30) as f64;
    println!(
        "generated the {zip_gib:.2} GiB archive in {:.1} s",
        generated.elapsed().as_secs_f64()
    );
    let sim = BackendSim::start(SimOptions {
        proxy_key: KEY.into(),
        tls: None,
        port: 0,
    })
    .expect("simulator");
    sim.put_download(EntityKind::Session, "sess_rss", archive);
    let scp = StoreScp::ignoring(SCP_AE);
    let app = appliance_for(&sim, scp.port, work);
    let idle_kib = app.proc_status_kib("VmRSS:").unwrap_or(0);
    let mut max_rss = 0;
    let mut max_at = Duration::ZERO;
    let started = Instant::now();
    let (took, last) = dispatch_and_wait(
        &sim,
        &app,
        "sess_rss",
        "corr_rss",
        Duration::from_secs(1800),
        || {
            let rss = app.proc_status_kib("VmRSS:").unwrap_or(0);
            if rss > max_rss {
                (max_rss, max_at) = (rss, started.elapsed());
            }
        },
    );
    let hwm_kib = app.proc_status_kib("VmHWM:").expect("VmHWM");
    assert_eq!(last["status"], "completed", "{last}\n{}", app.logs());
    assert_eq!(last["files_sent"], count, "{last}");
    let hwm_mib = hwm_kib as f64 / 1024.0;
    report.line("");
    report.line("## Peak RSS while dispatching a large archive");
    report.line(format!(
        "{count} instances, archive {zip_gib:.2} GiB: dispatch → completed in {:.1} s ({:.1} MB/s); \
         appliance VmRSS idle {:.1} MiB, largest sampled {:.1} MiB (at +{:.1} s), VmHWM {hwm_mib:.1} MiB; \
         stages: {}",
        took.as_secs_f64(),
        zip_mb / took.as_secs_f64(),
        idle_kib as f64 / 1024.0,
        max_rss as f64 / 1024.0,
        max_at.as_secs_f64(),
        stage_times(&sim, "corr_rss"),
    ));
    format!(
        "- peak RSS (VmHWM) dispatching {zip_gib:.2} GiB: {hwm_mib:.1} MiB, target ≤ 64 MiB → {}",
        if hwm_mib <= 64.0 { "PASS" } else { "FAIL" }
    )
}
