//! The doctor's DICOM checks: each active node of `nodes.json` (TCP connect,
//! then an association and a C-ECHO with the node's AE titles, over TLS where
//! `node-settings.json` sets it, as the node monitor does), whether the ingest SCP's `--dicom-addr` can be bound,
//! and whether nodes with storage commitment can report to it.

use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::time::Duration;

use laminate_actors::nodes::echo::{c_echo, EchoError};
use laminate_config::{Node, NodesFile};

use super::ports::reachable;
use super::Report;

/// TCP connect deadline per address.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// The calling AE title of the doctor's own echo to the ingest port.
const DOCTOR_AE: &str = "LAMINATE_DOCTOR";

pub fn nodes(r: &mut Report, nodes: &NodesFile, appliance_ae: &str) {
    if nodes.nodes.is_empty() {
        r.ok(
            "nodes",
            "none configured yet (the backend sends them once the link is up)",
        );
    }
    for n in &nodes.nodes {
        node(r, n, appliance_ae);
    }
}

/// Nodes with storage commitment report to the ingest SCP: with it off they
/// can only report on the requesting association, which most PACS do not.
pub fn commitment(
    r: &mut Report,
    nodes: &NodesFile,
    ingest: Option<SocketAddr>,
    appliance_ae: &str,
) {
    for n in nodes
        .nodes
        .iter()
        .filter(|n| n.is_active && n.site.as_ref().is_some_and(|s| s.storage_commitment))
    {
        let check = format!("node {} storage commitment", n.node_id);
        match ingest {
            Some(addr) => r.ok(
                check,
                format!(
                    "reports expected at {} on port {} (declare that AE and this machine's address in the PACS)",
                    n.calling_ae(appliance_ae),
                    addr.port()
                ),
            ),
            None => r.warn(
                check,
                "storage_commitment is on but the ingest SCP is off (--dicom-addr off): the PACS cannot call back with its report, so deliveries to this node will fail at commitment_timeout_s",
                "set --dicom-addr and declare the appliance (AE title, address, port) in the PACS, or turn storage_commitment off for this node",
            ),
        }
    }
}

fn node(r: &mut Report, n: &Node, appliance_ae: &str) {
    let check = format!("node {}", n.node_id);
    let at = format!("{}@{}:{}", n.ae_title, n.host, n.port);
    if !n.is_active {
        r.ok(check, format!("{at} is inactive, not checked"));
        return;
    }
    let calling = n.calling_ae(appliance_ae);
    const ADDRESS_FIX: &str = "start the PACS, or correct host and port for this node in Laminate (nodes.json follows); check firewalls between this machine and the PACS";
    let addrs: Vec<SocketAddr> = match (n.host.as_str(), n.port).to_socket_addrs() {
        Ok(a) => a.collect(),
        Err(e) => {
            r.fail(
                check,
                format!("{at}: cannot resolve {}: {e}", n.host),
                ADDRESS_FIX,
            );
            return;
        }
    };
    if let Err(e) = connect_any(&addrs) {
        r.fail(check, format!("{at}: TCP connect failed: {e}"), ADDRESS_FIX);
        return;
    }
    let tls = n.site.as_ref().and_then(|s| s.tls.as_ref());
    let over = if tls.is_some() { ", TLS" } else { "" };
    match c_echo(&n.host, n.port, &n.ae_title, calling, tls) {
        Ok(rtt) => r.ok(
            check,
            format!(
                "{at}: TCP connect{over}, association and C-ECHO ok in {:.1} ms (calling AE {calling})",
                rtt.as_secs_f64() * 1000.0
            ),
        ),
        Err(e @ EchoError::Association(_)) if tls.is_some() && e.to_string().contains("TLS") => r.fail(
            check,
            format!("{at}: TCP connect ok, {e}"),
            "check node-settings.json's tls for this node: ca_file must hold the CA that signed the PACS's certificate, the certificate must name the host (or set verify_hostname false), and the PACS must accept this appliance's client certificate",
        ),
        Err(e @ EchoError::Association(_)) => r.fail(
            check,
            format!("{at}: TCP connect ok, {e} (calling AE {calling})"),
            format!("check the node's AE title in Laminate, and that the PACS accepts calling AE {calling} from this machine's address"),
        ),
        Err(e @ EchoError::NoContext) => r.fail(
            check,
            format!("{at}: TCP connect ok, {e}"),
            "enable the Verification service (C-ECHO) for this appliance on the PACS",
        ),
        Err(e) => r.fail(
            check,
            format!("{at}: TCP connect and association ok, {e}"),
            "look at the PACS's log for why it refused the C-ECHO",
        ),
    }
}

fn connect_any(addrs: &[SocketAddr]) -> std::io::Result<()> {
    let mut last = std::io::Error::new(std::io::ErrorKind::NotFound, "no address");
    for a in addrs {
        match TcpStream::connect_timeout(a, CONNECT_TIMEOUT) {
            Ok(_) => return Ok(()),
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// Can the ingest SCP listen on `addr`?
pub fn dicom_port(r: &mut Report, addr: SocketAddr, ae_title: &str, appliance_running: bool) {
    const CHECK: &str = "dicom port";
    const FIX: &str = "choose another --dicom-addr (LAMINATE_PROXY_DICOM_ADDR), or `off` if this appliance receives no DICOM";
    match TcpListener::bind(addr) {
        Ok(l) => {
            drop(l);
            r.ok(
                CHECK,
                format!("{addr} can be bound (ingest SCP, AE {ae_title})"),
            );
        }
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
            if appliance_running {
                r.warn(
                    CHECK,
                    format!("{addr} is in use while a laminate-proxy runs here, probably by its ingest SCP"),
                    "nothing to do if it is meant to run; stop it before starting another `run` here",
                );
                return;
            }
            let to = reachable(addr);
            let answers =
                c_echo(&to.ip().to_string(), to.port(), ae_title, DOCTOR_AE, None).is_ok();
            let by = if answers {
                "another DICOM service (it answers C-ECHO)"
            } else {
                "another program"
            };
            r.fail(CHECK, format!("{addr} is in use by {by}"), FIX);
        }
        Err(e) => r.fail(CHECK, format!("{addr} cannot be bound: {e}"), FIX),
    }
}
