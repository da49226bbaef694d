//! The doctor's HTTP port check: can `--http-addr` be bound? When it is taken,
//! is it a laminate-proxy already running there (its `/healthz` answers)? The
//! answer also tells the backend check not to open a second connection with
//! the same key, which would replace the running appliance's one.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener};
use std::time::Duration;

use serde_json::Value;

use super::Report;

/// How long a local HTTP call may take.
const LOCAL_TIMEOUT: Duration = Duration::from_secs(3);

/// A laminate-proxy answering at the HTTP address.
#[derive(Debug, Clone)]
pub struct RunningAppliance {
    /// `http://127.0.0.1:8080`
    pub base: String,
}

impl RunningAppliance {
    /// The `link.state` of its `/api/status`, if it says.
    pub fn link_state(&self) -> Option<(String, Option<String>)> {
        let (code, body) = get(&format!("{}/api/status", self.base))?;
        if code != 200 {
            return None;
        }
        let v: Value = serde_json::from_str(&body).ok()?;
        let link = &v["link"];
        Some((
            link["state"].as_str()?.to_owned(),
            link["last_error"].as_str().map(str::to_owned),
        ))
    }
}

/// Binds `addr` and releases it at once; `Some` when a laminate-proxy is already there.
pub fn http_port(r: &mut Report, addr: SocketAddr) -> Option<RunningAppliance> {
    const CHECK: &str = "http port";
    match TcpListener::bind(addr) {
        Ok(l) => {
            drop(l);
            r.ok(
                CHECK,
                format!("{addr} can be bound (status page and local API)"),
            );
            None
        }
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
            let base = format!("http://{}", reachable(addr));
            match get(&format!("{base}/healthz")) {
                Some((200, body)) if body.trim() == "ok" => {
                    r.warn(
                        CHECK,
                        format!("{addr} is in use by a running laminate-proxy (its /healthz answers)"),
                        "nothing to do if it is meant to run; stop it before starting another `run` here",
                    );
                    Some(RunningAppliance { base })
                }
                _ => {
                    r.fail(
                        CHECK,
                        format!("{addr} is in use by another program"),
                        "stop that program or choose another --http-addr (LAMINATE_PROXY_HTTP_ADDR)",
                    );
                    None
                }
            }
        }
        Err(e) => {
            r.fail(
                CHECK,
                format!("{addr} cannot be bound: {e}"),
                "use an address of this machine and a port above 1023 (or allow it), with --http-addr (LAMINATE_PROXY_HTTP_ADDR)",
            );
            None
        }
    }
}

/// An address on every interface is reached on loopback.
pub fn reachable(mut addr: SocketAddr) -> SocketAddr {
    if addr.ip().is_unspecified() {
        addr.set_ip(match addr.ip() {
            IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::LOCALHOST),
        });
    }
    addr
}

/// A GET on a throwaway actix System: (status, body), `None` when nothing answers.
fn get(url: &str) -> Option<(u16, String)> {
    let url = url.to_owned();
    actix_rt::System::new().block_on(async move {
        let client = awc::Client::builder().timeout(LOCAL_TIMEOUT).finish();
        let mut resp = client.get(&url).send().await.ok()?;
        let body = resp.body().limit(1 << 20).await.ok()?;
        Some((
            resp.status().as_u16(),
            String::from_utf8_lossy(&body).into_owned(),
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doctor::Outcome;

    #[test]
    fn a_port_taken_by_something_else_fails_and_a_free_one_is_ok() {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = l.local_addr().expect("addr");
        let mut r = Report::new(None);
        r.quiet = true;
        assert!(http_port(&mut r, addr).is_none());
        assert_eq!(r.lines()[0].outcome, Outcome::Fail, "{}", r.lines()[0]);
        drop(l);
        assert!(http_port(&mut r, addr).is_none());
        assert_eq!(r.lines()[1].outcome, Outcome::Ok, "{}", r.lines()[1]);
    }
}
