//! Every operator action (a POST, to the API or the page's forms) leaves an audit
//! record: what was asked, of which dispatch or node, from which client address,
//! whether a bearer token was given and accepted, and how it ended. One middleware
//! sees every POST; the token rule (`auth.rs`) and the forms (`forms.rs`) leave
//! what they decided in the request's and response's extensions for it.

use std::future::Future;

use actix_web::dev::{Service, ServiceRequest, ServiceResponse};
use actix_web::http::Method;
use actix_web::{web, HttpMessage, HttpRequest};
use laminate_actors::audit::{AuditEvent, AuditRecorded, TokenUse};

use super::AppState;

/// What the token rule decided for this request.
#[derive(Debug, Clone, Copy)]
pub struct TokenChecked {
    pub token: TokenUse,
    pub refusal: Option<&'static str>,
}

/// A form's outcome (the response is a 303 either way): its error, if any.
#[derive(Debug, Clone)]
pub struct FormFailed(pub String);

/// Leaves the token rule's verdict on the request.
pub fn note_token(req: &HttpRequest, token: TokenUse, refusal: Option<&'static str>) {
    req.extensions_mut().insert(TokenChecked { token, refusal });
}

/// The middleware (`App::wrap_fn`).
pub fn observe<S, B>(
    req: ServiceRequest,
    srv: &S,
) -> impl Future<Output = Result<ServiceResponse<B>, actix_web::Error>> + 'static
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error>,
    S::Future: 'static,
    B: 'static,
{
    let post = req.method() == Method::POST;
    let client = req.peer_addr().map(|a| a.ip().to_string());
    let path = req.path().to_owned();
    let fut = srv.call(req);
    async move {
        let res = fut.await?;
        if post {
            record(&res, client, path);
        }
        Ok(res)
    }
}

fn record<B>(res: &ServiceResponse<B>, client: Option<String>, path: String) {
    let req = res.request();
    let Some(state) = req.app_data::<web::Data<AppState>>() else {
        return;
    };
    let checked = req.extensions().get::<TokenChecked>().copied();
    let form_error = res.response().extensions().get::<FormFailed>().cloned();
    let status = res.status().as_u16();
    let error = checked
        .and_then(|c| c.refusal.map(str::to_owned))
        .or(form_error.map(|f| f.0))
        .or_else(|| (status >= 400).then(|| format!("HTTP {status}")));
    let event = AuditEvent::OperatorAction {
        action: format!("POST {}", req.match_pattern().unwrap_or(path)),
        target: req.match_info().get("id").map(str::to_owned),
        client,
        token: checked.map_or(TokenUse::NotChecked, |c| c.token),
        status,
        error,
    };
    state.running.peers.audit.do_send(AuditRecorded::now(event));
}
