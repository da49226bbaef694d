//! The doctor's audit check: does the syslog collector of `--audit-syslog`
//! accept a TCP connection? Only a warning when it does not: the appliance keeps
//! every record in `audit/` and forwards them once the collector is reachable.

use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use laminate_actors::audit::syslog::check_target;

use super::Report;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
const CHECK: &str = "audit syslog";

/// Checks `target` (`host:port`).
pub fn syslog(r: &mut Report, target: &str) {
    if let Err(e) = check_target(target) {
        r.fail(
            CHECK,
            e,
            "give --audit-syslog (LAMINATE_PROXY_AUDIT_SYSLOG) as host:port, e.g. collector.example:6514",
        );
        return;
    }
    let addrs = match target.to_socket_addrs() {
        Ok(a) => a.collect::<Vec<_>>(),
        Err(e) => {
            r.warn(
                CHECK,
                format!("{target}: cannot resolve: {e}"),
                "check the collector's name in DNS; records wait in audit/ meanwhile",
            );
            return;
        }
    };
    let mut last = String::from("no address");
    for addr in &addrs {
        match TcpStream::connect_timeout(addr, CONNECT_TIMEOUT) {
            Ok(_) => {
                r.ok(CHECK, format!("{target} ({addr}) accepts TCP connections"));
                return;
            }
            Err(e) => last = format!("{addr}: {e}"),
        }
    }
    r.warn(
        CHECK,
        format!("{target}: {last}"),
        "start the collector's TCP input or open the firewall; records wait in audit/ meanwhile",
    );
}
