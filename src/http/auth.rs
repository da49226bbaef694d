//! The rule for operator actions (APPLIANCE.md): with a token set, POSTs need
//! `Authorization: Bearer {token}`; without one, they are allowed only while the
//! server listens on loopback, and refused with 403 otherwise. A browser's POST
//! from another site's page is refused too (403), whatever the token.

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse};
use laminate_actors::audit::TokenUse;

#[derive(Clone)]
pub struct ActionPolicy {
    token: Option<String>,
    loopback_only: bool,
}

impl ActionPolicy {
    pub fn new(token: Option<String>, loopback_only: bool) -> Self {
        Self {
            token: token.filter(|t| !t.is_empty()),
            loopback_only,
        }
    }

    /// Why actions are disabled, if they are whatever the caller sends.
    pub fn disabled_reason(&self) -> Option<&'static str> {
        if self.token.is_none() && !self.loopback_only {
            Some("operator actions are disabled: the status page listens beyond loopback and no --status-token is set")
        } else {
            None
        }
    }

    /// Whether actions need a token (the page then asks for one).
    pub fn token_required(&self) -> bool {
        self.token.is_some()
    }

    /// `Ok` if the request may act; otherwise why not.
    pub fn check(&self, req: &HttpRequest) -> Result<(), Refusal> {
        if !same_origin(req) {
            return Err(Refusal::CrossOrigin);
        }
        let given = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        let verdict = self.check_token(given);
        self.note(req, &verdict);
        verdict
    }

    /// Leaves the verdict for the audit record of the action.
    pub fn note(&self, req: &HttpRequest, verdict: &Result<(), Refusal>) {
        let token = match verdict {
            Err(_) => TokenUse::Refused,
            Ok(()) if self.token.is_some() => TokenUse::Accepted,
            Ok(()) => TokenUse::NotNeeded,
        };
        let refusal = verdict.err().map(Refusal::sentence);
        super::operator_audit::note_token(req, token, refusal);
    }

    /// The same rule for a token given another way (the page's no-JavaScript forms).
    pub fn check_token(&self, given: Option<&str>) -> Result<(), Refusal> {
        if let Some(why) = self.disabled_reason() {
            return Err(Refusal::Disabled(why));
        }
        let Some(token) = &self.token else {
            return Ok(());
        };
        if given.is_some_and(|g| constant_time_eq(g.as_bytes(), token.as_bytes())) {
            Ok(())
        } else {
            Err(Refusal::BadToken)
        }
    }
}

/// Why an operator action was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// 403: no token while listening beyond loopback.
    Disabled(&'static str),
    /// 401: the token is missing or wrong.
    BadToken,
    /// 403: a browser posted from another site's page.
    CrossOrigin,
}

impl Refusal {
    pub fn response(self) -> HttpResponse {
        match self {
            Refusal::Disabled(why) => {
                HttpResponse::Forbidden().json(serde_json::json!({ "error": why }))
            }
            Refusal::CrossOrigin => HttpResponse::Forbidden().json(
                serde_json::json!({ "error": Refusal::CrossOrigin.sentence() }),
            ),
            Refusal::BadToken => HttpResponse::Unauthorized()
                .insert_header((header::WWW_AUTHENTICATE, "Bearer"))
                .json(serde_json::json!({ "error": "operator actions need Authorization: Bearer <status token>" })),
        }
    }
}

impl Refusal {
    /// One sentence for the page.
    pub fn sentence(self) -> &'static str {
        match self {
            Refusal::Disabled(why) => why,
            Refusal::BadToken => "refused: the status token is missing or wrong",
            Refusal::CrossOrigin => {
                "refused: operator actions come only from this appliance's own page"
            }
        }
    }
}

/// A browser's POST must come from this server's own page: a form on any other
/// site could otherwise make a browser on the appliance's network act (CSRF),
/// and without a token the loopback rule is the only guard. Requests without
/// `Origin` (the CLI, curl) are not browsers' cross-site requests.
pub fn same_origin(req: &HttpRequest) -> bool {
    let Some(origin) = req.headers().get(header::ORIGIN) else {
        return true;
    };
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok());
    match (origin.to_str().ok(), host) {
        (Some(o), Some(h)) => o == format!("http://{h}") || o == format!("https://{h}"),
        _ => false,
    }
}

/// Compares without an early exit, so response timing does not leak the token.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::test::TestRequest;

    #[test]
    fn token_rule() {
        let open = ActionPolicy::new(None, true);
        assert!(open
            .check(&TestRequest::default().to_http_request())
            .is_ok());

        let exposed = ActionPolicy::new(None, false);
        let r = exposed.check(&TestRequest::default().to_http_request());
        assert_eq!(r.err().map(|r| r.response().status().as_u16()), Some(403));

        let guarded = ActionPolicy::new(Some("s3cret".into()), false);
        let none = guarded.check(&TestRequest::default().to_http_request());
        assert_eq!(none, Err(Refusal::BadToken));
        let wrong = TestRequest::default()
            .insert_header((header::AUTHORIZATION, "Bearer nope"))
            .to_http_request();
        assert_eq!(
            guarded
                .check(&wrong)
                .err()
                .map(|r| r.response().status().as_u16()),
            Some(401)
        );
        let right = TestRequest::default()
            .insert_header((header::AUTHORIZATION, "Bearer s3cret"))
            .to_http_request();
        assert!(guarded.check(&right).is_ok());
        assert!(guarded.check_token(Some("s3cret")).is_ok());
        assert_eq!(guarded.check_token(Some("")), Err(Refusal::BadToken));
        assert!(guarded.token_required() && !open.token_required());
    }

    #[test]
    fn only_the_pages_own_origin_may_post() {
        let cli = TestRequest::default().insert_header((header::HOST, "127.0.0.1:8080"));
        assert!(same_origin(&cli.to_http_request()));
        let page = TestRequest::default()
            .insert_header((header::HOST, "127.0.0.1:8080"))
            .insert_header((header::ORIGIN, "http://127.0.0.1:8080"));
        assert!(same_origin(&page.to_http_request()));
        let other = TestRequest::default()
            .insert_header((header::HOST, "127.0.0.1:8080"))
            .insert_header((header::ORIGIN, "http://evil.example"));
        assert!(!same_origin(&other.to_http_request()));
    }
}
