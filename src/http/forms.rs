//! The page's operator actions without JavaScript: plain HTML forms post to
//! `/ui/...` (URL-encoded, the token as a form field when one is set), the
//! action goes to the same actor as the JSON API's, and the browser is sent
//! back to `/` with `303 See Other`, where a one-line note says how it went.
//!
//! The note is kept here and the redirect names it by number, so nothing a
//! link could carry is ever shown on the page.

use std::collections::VecDeque;
use std::sync::Mutex;

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use laminate_actors::dispatch::{CancelRequested, ReplayFailedRequested, ReplayRequested};
use laminate_actors::health::lock;
use laminate_actors::nodes::EchoRequested;
use serde::Deserialize;

use super::auth::{same_origin, Refusal};
use super::AppState;

/// Notes kept for the redirect to pick up (old ones are dropped).
const KEEP_NOTES: usize = 32;

/// One form post's outcome.
struct Note {
    id: u64,
    text: String,
    ok: bool,
}

#[derive(Default)]
struct Notes {
    last_id: u64,
    kept: VecDeque<Note>,
}

/// The notes of recent form posts, by number.
#[derive(Default)]
pub struct Flashes(Mutex<Notes>);

impl Flashes {
    fn put(&self, text: String, ok: bool) -> u64 {
        let mut notes = lock(&self.0);
        notes.last_id += 1;
        let id = notes.last_id;
        if notes.kept.len() == KEEP_NOTES {
            notes.kept.pop_front();
        }
        notes.kept.push_back(Note { id, text, ok });
        id
    }

    /// The note and whether the action succeeded.
    pub fn get(&self, id: u64) -> Option<(String, bool)> {
        lock(&self.0)
            .kept
            .iter()
            .find(|n| n.id == id)
            .map(|n| (n.text.clone(), n.ok))
    }
}

#[derive(Deserialize, Default)]
pub struct ActionForm {
    token: Option<String>,
    since: Option<String>,
}

fn back(flashes: &Flashes, outcome: Result<String, String>, anchor: &str) -> HttpResponse {
    let (msg, ok) = match outcome {
        Ok(m) => (m, true),
        Err(m) => (m, false),
    };
    let failed = (!ok).then(|| super::operator_audit::FormFailed(msg.clone()));
    let id = flashes.put(msg, ok);
    let mut resp = HttpResponse::SeeOther()
        .insert_header((header::LOCATION, format!("/?flash={id}#{anchor}")))
        .finish();
    if let Some(f) = failed {
        resp.extensions_mut().insert(f);
    }
    resp
}

/// The token rule, with the token from the form.
fn allowed(req: &HttpRequest, state: &AppState, form: &ActionForm) -> Result<(), String> {
    let verdict = if same_origin(req) {
        state.policy.check_token(form.token.as_deref())
    } else {
        Err(Refusal::CrossOrigin)
    };
    state.policy.note(req, &verdict);
    verdict.map_err(|r| r.sentence().to_owned())
}

pub async fn echo(
    req: HttpRequest,
    state: web::Data<AppState>,
    flashes: web::Data<Flashes>,
    path: web::Path<String>,
    form: web::Form<ActionForm>,
) -> HttpResponse {
    let node_id = path.into_inner();
    let outcome = match allowed(&req, &state, &form) {
        Err(e) => Err(e),
        Ok(()) => match state
            .running
            .peers
            .nodes
            .send(EchoRequested {
                node_id: node_id.clone(),
            })
            .await
        {
            Ok(Ok(r)) if r.ok => Ok(format!(
                "C-ECHO to {node_id}: answered in {:.1} ms",
                r.rtt_ms.unwrap_or_default()
            )),
            Ok(Ok(r)) => Err(format!(
                "C-ECHO to {node_id} failed: {}",
                r.error.unwrap_or_default()
            )),
            Ok(Err(e)) => Err(e),
            Err(e) => Err(format!("node monitor unavailable: {e}")),
        },
    };
    back(&flashes, outcome, "nodes")
}

pub async fn replay(
    req: HttpRequest,
    state: web::Data<AppState>,
    flashes: web::Data<Flashes>,
    path: web::Path<String>,
    form: web::Form<ActionForm>,
) -> HttpResponse {
    let id = path.into_inner();
    let outcome = match allowed(&req, &state, &form) {
        Err(e) => Err(e),
        Ok(()) => match state
            .running
            .peers
            .dispatcher
            .send(ReplayRequested {
                id: id.clone(),
                nodes: None,
            })
            .await
        {
            Ok(Ok(r)) => Ok(format!(
                "Dispatch {} replayed (replay {}).",
                r.id, r.replays
            )),
            Ok(Err(e)) => Err(e),
            Err(e) => Err(format!("dispatcher unavailable: {e}")),
        },
    };
    back(&flashes, outcome, "dispatches")
}

pub async fn cancel(
    req: HttpRequest,
    state: web::Data<AppState>,
    flashes: web::Data<Flashes>,
    path: web::Path<String>,
    form: web::Form<ActionForm>,
) -> HttpResponse {
    let id = path.into_inner();
    let outcome = match allowed(&req, &state, &form) {
        Err(e) => Err(e),
        Ok(()) => match state
            .running
            .peers
            .dispatcher
            .send(CancelRequested { id: id.clone() })
            .await
        {
            Ok(Ok(r)) => Ok(format!("Dispatch {} cancelled.", r.id)),
            Ok(Err(e)) => Err(e),
            Err(e) => Err(format!("dispatcher unavailable: {e}")),
        },
    };
    back(&flashes, outcome, "dispatches")
}

pub async fn replay_failed(
    req: HttpRequest,
    state: web::Data<AppState>,
    flashes: web::Data<Flashes>,
    form: web::Form<ActionForm>,
) -> HttpResponse {
    let since_ms = match form.since.as_deref().map(str::trim) {
        None | Some("") => Ok(None),
        Some(t) => super::dispatches::parse_since(t).map(Some),
    };
    let outcome = match (allowed(&req, &state, &form), since_ms) {
        (Err(e), _) | (Ok(()), Err(e)) => Err(e),
        (Ok(()), Ok(since_ms)) => match state
            .running
            .peers
            .dispatcher
            .send(ReplayFailedRequested { since_ms })
            .await
        {
            Ok(Ok(ids)) if ids.is_empty() => Ok("No failed dispatch to replay.".to_owned()),
            Ok(Ok(ids)) => Ok(format!(
                "{} failed dispatches replayed: {}",
                ids.len(),
                ids.join(", ")
            )),
            Ok(Err(e)) => Err(e),
            Err(e) => Err(format!("dispatcher unavailable: {e}")),
        },
    };
    back(&flashes, outcome, "dispatches")
}
