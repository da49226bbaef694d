//! Operator commands that talk to a running appliance's local API:
//! `healthcheck`, `nodes list|echo`, `dispatches list|replay`.

mod client;

use std::process::ExitCode;

use crate::cli::{DispatchesCommand, LocalApiArgs, NodesCommand};
use client::LocalApi;

/// `laminate-proxy rebuild-index`: the operator's last resort when the index is
/// damaged — clears the catalog and indexes every file under `storage/` again.
/// The store's lock refuses it while the appliance runs.
pub fn rebuild_index(data_dir: Option<std::path::PathBuf>) -> ExitCode {
    let Some(dir) = data_dir.or_else(|| {
        std::env::var_os("HOME").map(|h| std::path::PathBuf::from(h).join(".laminate-proxy"))
    }) else {
        eprintln!("laminate-proxy rebuild-index: --data-dir (LAMINATE_PROXY_DATA_DIR) is required when HOME is not set");
        return ExitCode::from(2);
    };
    let store = match laminate_store::Store::open(&dir.join("store")) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("laminate-proxy rebuild-index: {e} (stop the appliance first)");
            return ExitCode::FAILURE;
        }
    };
    match laminate_actors::system::rebuild_cache_index(&store, &dir) {
        Ok(r) => {
            println!(
                "index rebuilt from {}: {} instances indexed, {} unreadable files removed",
                dir.join("storage").display(),
                r.reindexed,
                r.removed_unreadable
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("laminate-proxy rebuild-index: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `laminate-proxy healthcheck`: exit 0 when `/readyz` answers ready.
pub fn healthcheck(api: LocalApiArgs) -> ExitCode {
    let api = match LocalApi::new(&api) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("laminate-proxy healthcheck: {e}");
            return ExitCode::from(2);
        }
    };
    match api.get("/readyz") {
        Ok((200, _)) => ExitCode::SUCCESS,
        Ok((code, body)) => {
            eprintln!("not ready ({code}): {}", body.trim());
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("laminate-proxy healthcheck: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `laminate-proxy nodes …`.
pub fn nodes(cmd: NodesCommand, api: LocalApiArgs) -> ExitCode {
    let api = match LocalApi::new(&api) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("laminate-proxy nodes: {e}");
            return ExitCode::from(2);
        }
    };
    let outcome = match cmd {
        NodesCommand::List => api.get("/api/nodes").and_then(|(code, body)| {
            if code != 200 {
                return Err(format!("{code}: {body}"));
            }
            let rows: Vec<serde_json::Value> =
                serde_json::from_str(&body).map_err(|e| format!("bad answer: {e}"))?;
            println!(
                "{:<16} {:<16} {:<24} {:<7} {:<7} {:>9}",
                "NODE", "AE TITLE", "ADDRESS", "ACTIVE", "ONLINE", "ECHO MS"
            );
            for r in rows {
                println!(
                    "{:<16} {:<16} {:<24} {:<7} {:<7} {:>9}",
                    r["node_id"].as_str().unwrap_or("?"),
                    r["ae_title"].as_str().unwrap_or("?"),
                    format!("{}:{}", r["host"].as_str().unwrap_or("?"), r["port"]),
                    r["is_active"],
                    r["online"],
                    r["echo_rtt_ms"]
                        .as_f64()
                        .map(|m| format!("{m:.1}"))
                        .unwrap_or_else(|| "-".into()),
                );
            }
            Ok(())
        }),
        NodesCommand::Echo { node_id } => {
            api.post(&format!("/api/nodes/{node_id}/echo"))
                .and_then(|(code, body)| {
                    let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
                    match code {
                        200 if v["ok"] == true => {
                            println!(
                                "{node_id}: C-ECHO ok in {:.1} ms",
                                v["rtt_ms"].as_f64().unwrap_or(0.0)
                            );
                            Ok(())
                        }
                        200 => Err(format!(
                            "{node_id}: C-ECHO failed: {}",
                            v["error"].as_str().unwrap_or("?")
                        )),
                        _ => Err(format!(
                            "{code}: {}",
                            v["error"].as_str().unwrap_or(body.trim())
                        )),
                    }
                })
        }
        NodesCommand::Reload => api.post("/api/nodes/reload").and_then(|(code, body)| {
            let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
            match code {
                200 => {
                    println!(
                        "node-settings.json applied: settings for {} nodes",
                        v["nodes"]
                    );
                    Ok(())
                }
                _ => Err(format!(
                    "{code}: {}",
                    v["error"].as_str().unwrap_or(body.trim())
                )),
            }
        }),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("laminate-proxy nodes: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `laminate-proxy dispatches …`.
pub fn dispatches(cmd: DispatchesCommand, api: LocalApiArgs) -> ExitCode {
    let api = match LocalApi::new(&api) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("laminate-proxy dispatches: {e}");
            return ExitCode::from(2);
        }
    };
    let outcome = match cmd {
        DispatchesCommand::List { status, limit, all } => {
            let mut query = Vec::new();
            if let Some(s) = status {
                query.push(format!("status={s}"));
            }
            if let Some(n) = limit {
                query.push(format!("limit={n}"));
            }
            list_dispatches(&api, &query, all)
        }
        DispatchesCommand::Replay {
            ids,
            failed,
            since,
            nodes,
        } => {
            if failed {
                let mut path = "/api/dispatches/replay?status=failed".to_owned();
                if let Some(s) = since {
                    path.push_str("&since=");
                    path.push_str(&s.replace('+', "%2B"));
                }
                api.post(&path).and_then(|(code, body)| {
                    let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
                    if code == 200 {
                        let ids = v["replayed"].as_array().map(|a| a.len()).unwrap_or(0);
                        println!("replayed {ids} failed dispatch(es): {}", v["replayed"]);
                        Ok(())
                    } else {
                        Err(format!(
                            "{code}: {}",
                            v["error"].as_str().unwrap_or(body.trim())
                        ))
                    }
                })
            } else if ids.is_empty() {
                Err("name the dispatches to replay, or use --failed".into())
            } else {
                let body = if nodes.is_empty() {
                    None
                } else {
                    Some(serde_json::json!({ "nodes": nodes }).to_string())
                };
                let mut errors = Vec::new();
                for id in ids {
                    match api.post_body(&format!("/api/dispatches/{id}/replay"), body.clone()) {
                        Ok((200, _)) => println!("{id}: replaying"),
                        Ok((code, b)) => {
                            let v: serde_json::Value = serde_json::from_str(&b).unwrap_or_default();
                            errors.push(format!(
                                "{id}: {code} {}",
                                v["error"].as_str().unwrap_or(b.trim())
                            ));
                        }
                        Err(e) => errors.push(format!("{id}: {e}")),
                    }
                }
                if errors.is_empty() {
                    Ok(())
                } else {
                    Err(errors.join("; "))
                }
            }
        }
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("laminate-proxy dispatches: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Prints the dispatch list: the first page, or with `all` every page (following the
/// `X-Next-Before` cursor).
fn list_dispatches(api: &LocalApi, query: &[String], all: bool) -> Result<(), String> {
    println!(
        "{:<9} {:<10} {:<8} {:<28} {:<24} NODES",
        "ID", "STATE", "PRIORITY", "ENTITY", "UPDATED"
    );
    let mut before: Option<String> = None;
    loop {
        let mut q = query.to_vec();
        if let Some(c) = &before {
            q.push(format!("before={c}"));
        }
        let path = if q.is_empty() {
            "/api/dispatches".to_owned()
        } else {
            format!("/api/dispatches?{}", q.join("&"))
        };
        let (code, body, next) = api.get_page(&path)?;
        if code != 200 {
            return Err(format!("{code}: {body}"));
        }
        let rows: Vec<serde_json::Value> =
            serde_json::from_str(&body).map_err(|e| format!("bad answer: {e}"))?;
        for r in rows {
            print_dispatch(&r);
        }
        match next {
            Some(c) if all => before = Some(c),
            Some(_) => {
                eprintln!("(more: --all lists every page)");
                return Ok(());
            }
            None => return Ok(()),
        }
    }
}

fn print_dispatch(r: &serde_json::Value) {
    let nodes: Vec<String> = r["nodes"]
        .as_array()
        .map(|ns| {
            ns.iter()
                .map(|n| {
                    format!(
                        "{}={} {}/{}",
                        n["node_id"].as_str().unwrap_or("?"),
                        n["status"].as_str().unwrap_or("?"),
                        n["files_sent"],
                        n["files_total"]
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    println!(
        "{:<9} {:<10} {:<8} {:<28} {:<24} {}",
        r["id"].as_str().unwrap_or("?"),
        r["state"].as_str().unwrap_or("?"),
        r["priority"].as_str().unwrap_or("?"),
        format!(
            "{} {}",
            r["entity_type"].as_str().unwrap_or("?"),
            r["entity_id"].as_str().unwrap_or("?")
        ),
        r["updated_at"].as_str().unwrap_or("?"),
        nodes.join(", ")
    );
}
