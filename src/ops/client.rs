//! A small blocking client for the local API (awc on a throwaway actix System).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use crate::cli::LocalApiArgs;

const TIMEOUT: Duration = Duration::from_secs(10);

pub struct LocalApi {
    base: String,
    token: Option<String>,
}

impl LocalApi {
    pub fn new(args: &LocalApiArgs) -> Result<Self, String> {
        let mut addr: SocketAddr = args.http_addr.parse().map_err(|_| {
            format!(
                "--http-addr (LAMINATE_PROXY_HTTP_ADDR): '{}' is not an address like 127.0.0.1:8080",
                args.http_addr
            )
        })?;
        // A server on every interface is reached on loopback.
        if addr.ip().is_unspecified() {
            addr.set_ip(match addr.ip() {
                IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
                IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::LOCALHOST),
            });
        }
        Ok(Self {
            base: format!("http://{addr}"),
            token: args.status_token.clone().filter(|t| !t.is_empty()),
        })
    }

    pub fn get(&self, path: &str) -> Result<(u16, String), String> {
        self.call(false, path, None)
            .map(|(code, body, _)| (code, body))
    }

    /// A GET of a paged list: also the next page's cursor (`X-Next-Before`), if any.
    pub fn get_page(&self, path: &str) -> Result<(u16, String, Option<String>), String> {
        self.call(false, path, None)
    }

    pub fn post(&self, path: &str) -> Result<(u16, String), String> {
        self.call(true, path, None)
            .map(|(code, body, _)| (code, body))
    }

    pub fn post_body(&self, path: &str, json: Option<String>) -> Result<(u16, String), String> {
        self.call(true, path, json)
            .map(|(code, body, _)| (code, body))
    }

    fn call(
        &self,
        post: bool,
        path: &str,
        json: Option<String>,
    ) -> Result<(u16, String, Option<String>), String> {
        let url = format!("{}{}", self.base, path);
        let token = self.token.clone();
        actix_rt::System::new().block_on(async move {
            let client = awc::Client::builder().timeout(TIMEOUT).finish();
            let mut req = if post {
                client.post(&url)
            } else {
                client.get(&url)
            };
            if let Some(t) = token {
                req = req.bearer_auth(t);
            }
            let sent = match json {
                Some(body) => req.content_type("application/json").send_body(body).await,
                None => req.send().await,
            };
            let mut resp = sent.map_err(|e| format!("cannot reach the appliance at {url}: {e}"))?;
            let body = resp
                .body()
                .limit(16 * 1024 * 1024)
                .await
                .map_err(|e| format!("reading the answer: {e}"))?;
            let next = resp
                .headers()
                .get("x-next-before")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            Ok((
                resp.status().as_u16(),
                String::from_utf8_lossy(&body).into_owned(),
                next,
            ))
        })
    }
}
