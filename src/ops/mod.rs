//! Operator commands that talk to a running appliance's local API:
//! `healthcheck`, `nodes list`, `nodes echo`.

mod client;

use std::process::ExitCode;

use crate::cli::{LocalApiArgs, NodesCommand};
use client::LocalApi;

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
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("laminate-proxy nodes: {e}");
            ExitCode::FAILURE
        }
    }
}
