//! The physical ceiling of any C-STORE sender on this machine (issue 13's
//! limit row): the same file bytes sent over loopback TCP by a minimal Rust
//! sender (an 8-byte length, then the file as read from disk) to a minimal
//! Rust receiver that reads them into one reused buffer and answers 12 bytes
//! per file (the size of a C-STORE response's PDU header and PDV header; no
//! DICOM parsing anywhere). One connection per "association"; each waits for
//! its answer before sending the next file, as a C-STORE sender does. Both
//! ends set TCP_NODELAY (the delayed-ACK × Nagle trap would measure 40 ms
//! stalls, not the wire).
//!
//! The TLS variant (issue 16's ceiling) runs the same exchange inside rustls on
//! both ends with the appliance's own client configuration: what encrypting and
//! decrypting every byte costs on this machine, with no DICOM anywhere.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A receiver on a free loopback port; each connection gets a thread. It
/// lives until the process ends (a bench runs it for minutes, then exits).
pub struct LimitReceiver {
    pub port: u16,
}

impl LimitReceiver {
    pub fn start() -> LimitReceiver {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        let port = listener.local_addr().expect("local addr").port();
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let _ = conn.set_nodelay(true);
                std::thread::spawn(move || serve(conn));
            }
        });
        LimitReceiver { port }
    }

    /// The same receiver inside TLS (rustls, `config`).
    pub fn start_tls(config: Arc<rustls::ServerConfig>) -> LimitReceiver {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        let port = listener.local_addr().expect("local addr").port();
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let config = config.clone();
                std::thread::spawn(move || {
                    let _ = conn.set_nodelay(true);
                    if let Ok(tls) = rustls::ServerConnection::new(config) {
                        serve(rustls::StreamOwned::new(tls, conn));
                    }
                });
            }
        });
        LimitReceiver { port }
    }
}

fn serve(mut conn: impl Read + Write) {
    let mut buf = vec![0u8; 1 << 20];
    let mut len = [0u8; 8];
    while conn.read_exact(&mut len).is_ok() {
        let mut left = u64::from_le_bytes(len) as usize;
        while left > 0 {
            let n = left.min(buf.len());
            if conn.read_exact(&mut buf[..n]).is_err() {
                return;
            }
            left -= n;
        }
        if conn
            .write_all(&[0u8; 12])
            .and_then(|_| conn.flush())
            .is_err()
        {
            return;
        }
    }
}

/// Sends every file over `connections` connections (files dealt round-robin),
/// each file read from disk as it goes; the time until the last answer.
pub fn limit_send(files: &[PathBuf], port: u16, connections: usize) -> Duration {
    limit_send_over(files, port, connections, None)
}

/// [`limit_send`] inside TLS with `config` (the server is `localhost`).
pub fn limit_send_tls(
    files: &[PathBuf],
    port: u16,
    connections: usize,
    config: Arc<rustls::ClientConfig>,
) -> Duration {
    limit_send_over(files, port, connections, Some(config))
}

fn limit_send_over(
    files: &[PathBuf],
    port: u16,
    connections: usize,
    tls: Option<Arc<rustls::ClientConfig>>,
) -> Duration {
    let files = Arc::new(files.to_vec());
    let n = connections.max(1);
    let started = Instant::now();
    let workers: Vec<_> = (0..n)
        .map(|k| {
            let files = files.clone();
            let tls = tls.clone();
            std::thread::spawn(move || {
                let conn = TcpStream::connect(("127.0.0.1", port)).expect("connect");
                conn.set_nodelay(true).expect("nodelay");
                let files = files.iter().skip(k).step_by(n);
                match tls {
                    None => send_files(conn, files),
                    Some(config) => {
                        let name = rustls::pki_types::ServerName::try_from("localhost")
                            .expect("server name");
                        let tls = rustls::ClientConnection::new(config, name).expect("TLS client");
                        send_files(rustls::StreamOwned::new(tls, conn), files)
                    }
                }
            })
        })
        .collect();
    for w in workers {
        w.join().expect("sender thread");
    }
    started.elapsed()
}

fn send_files<'a>(mut conn: impl Read + Write, files: impl Iterator<Item = &'a PathBuf>) {
    let mut answer = [0u8; 12];
    for f in files {
        let bytes = std::fs::read(f).expect("read file");
        conn.write_all(&(bytes.len() as u64).to_le_bytes())
            .expect("send length");
        conn.write_all(&bytes).expect("send file");
        conn.flush().expect("flush");
        conn.read_exact(&mut answer).expect("answer");
    }
}
