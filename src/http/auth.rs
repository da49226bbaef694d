//! The rule for operator actions (APPLIANCE.md): with a token set, POSTs need
//! `Authorization: Bearer {token}`; without one, they are allowed only while the
//! server listens on loopback, and refused with 403 otherwise.

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse};

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

    /// `Ok` if the request may act; otherwise why not.
    pub fn check(&self, req: &HttpRequest) -> Result<(), Refusal> {
        if let Some(why) = self.disabled_reason() {
            return Err(Refusal::Disabled(why));
        }
        let Some(token) = &self.token else {
            return Ok(());
        };
        let given = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
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
}

impl Refusal {
    pub fn response(self) -> HttpResponse {
        match self {
            Refusal::Disabled(why) => {
                HttpResponse::Forbidden().json(serde_json::json!({ "error": why }))
            }
            Refusal::BadToken => HttpResponse::Unauthorized()
                .insert_header((header::WWW_AUTHENTICATE, "Bearer"))
                .json(serde_json::json!({ "error": "operator actions need Authorization: Bearer <status token>" })),
        }
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
    }
}
