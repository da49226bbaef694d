//! Tests of the simulator itself, driving it with awc as the appliance would.

use std::sync::Arc;
use std::time::Duration;

use awc::ws::{CloseCode, Frame, Message};
use bytes::Bytes;
use futures_util::{SinkExt, Stream, StreamExt};
use serde_json::json;

use super::downloads::{parse_path, parse_range, resolve_range};
use super::*;

const KEY: &str = "test-key";
const WAIT: Duration = Duration::from_secs(5);

fn sim() -> BackendSim {
    BackendSim::start(SimOptions {
        proxy_key: KEY.into(),
        tls: None,
        port: 0,
    })
    .expect("start sim")
}

fn ws_url(sim: &BackendSim, key: &str) -> String {
    format!("{}proxy/ws?proxy_key={key}", sim.backend_url())
}

/// Next frame other than Ping/Pong noise we did not ask for, or `None` on EOF/timeout.
async fn next_frame<S>(conn: &mut S) -> Option<Frame>
where
    S: Stream<Item = Result<Frame, awc::error::WsProtocolError>> + Unpin,
{
    tokio::time::timeout(WAIT, conn.next())
        .await
        .ok()?
        .and_then(Result::ok)
}

/// Reads until a Close frame and returns its code (None: the stream ended first).
async fn close_code<S>(conn: &mut S) -> Option<u16>
where
    S: Stream<Item = Result<Frame, awc::error::WsProtocolError>> + Unpin,
{
    loop {
        match next_frame(conn).await? {
            Frame::Close(reason) => return reason.map(|r| r.code.into()),
            _ => continue,
        }
    }
}

/// A pseudo-random archive, so that slicing mistakes show up as wrong bytes.
fn archive(len: usize) -> Bytes {
    let mut x: u32 = 0x1234_5678;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect::<Vec<u8>>()
        .into()
}

#[actix_rt::test]
async fn correct_key_connects_and_frames_are_recorded() {
    let sim = sim();
    let (_, mut conn) = awc::Client::new()
        .ws(ws_url(&sim, KEY))
        .connect()
        .await
        .expect("connect");
    assert!(sim.wait_connected(WAIT));
    conn.send(Message::Text(
        json!({"event_type": "proxy.heartbeat"}).to_string().into(),
    ))
    .await
    .unwrap();
    conn.send(Message::Text("not json".into())).await.unwrap();

    let hb = sim
        .wait_frame(WAIT, |f| f["event_type"] == "proxy.heartbeat")
        .expect("heartbeat");
    assert_eq!(hb["event_type"], "proxy.heartbeat");
    assert_eq!(sim.wait_frames(WAIT, 2, |_| true).len(), 2);
    assert_eq!(sim.frames()[1], Value::String("not json".into()));
    assert_eq!(sim.connections(), 1);
    let attempts = sim.attempts();
    assert_eq!(attempts.len(), 1);
    assert!(attempts[0].key_ok && attempts[0].path_ok);

    sim.clear_frames();
    assert!(sim.frames().is_empty());

    // The appliance closing its side is recorded and ends the connection.
    conn.send(Message::Close(Some(CloseCode::Normal.into())))
        .await
        .unwrap();
    assert_eq!(close_code(&mut conn).await, Some(1000));
    assert!(sim
        .shared
        .wait_for(WAIT, |s| s.current.is_none().then_some(()))
        .is_some());
    assert_eq!(sim.closes_received(), vec![Some(1000)]);
}

#[actix_rt::test]
async fn wrong_key_is_closed_with_4003() {
    let sim = sim();
    let (_, mut conn) = awc::Client::new()
        .ws(ws_url(&sim, "wrong"))
        .connect()
        .await
        .expect("upgrade accepted");
    assert_eq!(close_code(&mut conn).await, Some(CLOSE_BAD_KEY));
    assert_eq!(sim.connections(), 0);
    assert!(!sim.is_connected());
    let attempts = sim.attempts();
    assert!(!attempts[0].key_ok && attempts[0].path_ok);
}

#[actix_rt::test]
async fn prefix_path_works_and_wrong_path_is_recorded() {
    let sim = sim();
    let url = format!(
        "ws://127.0.0.1:{}/laminate/proxy/ws?proxy_key={KEY}",
        sim.port()
    );
    let (_, _conn) = awc::Client::new()
        .ws(url)
        .connect()
        .await
        .expect("prefixed path");
    assert!(sim.wait_connected(WAIT));

    let url = format!("ws://127.0.0.1:{}/other/ws?proxy_key={KEY}", sim.port());
    assert!(awc::Client::new().ws(url).connect().await.is_err());
    let attempts = sim.attempts();
    assert_eq!(attempts.len(), 2);
    assert!(attempts[1].key_ok && !attempts[1].path_ok);
}

#[actix_rt::test]
async fn second_connection_closes_the_first_with_4000() {
    let sim = sim();
    let (_, mut first) = awc::Client::new()
        .ws(ws_url(&sim, KEY))
        .connect()
        .await
        .unwrap();
    assert!(sim.wait_connected(WAIT));
    let (_, mut second) = awc::Client::new()
        .ws(ws_url(&sim, KEY))
        .connect()
        .await
        .unwrap();
    assert_eq!(close_code(&mut first).await, Some(CLOSE_REPLACED));
    assert_eq!(sim.connections(), 2);
    assert!(sim.is_connected());

    // Orders go to the newest connection.
    assert!(sim.send_event(&json!({"event_type": "ping", "correlation_id": "c1"})));
    match next_frame(&mut second).await {
        Some(Frame::Text(t)) => assert_eq!(
            serde_json::from_slice::<Value>(&t).unwrap()["correlation_id"],
            "c1"
        ),
        other => panic!("expected the event, got {other:?}"),
    }
}

#[actix_rt::test]
async fn events_pings_and_kick() {
    let sim = sim();
    assert!(
        !sim.send_event(&json!({"event_type": "ping"})),
        "no connection yet"
    );
    let (_, mut conn) = awc::Client::new()
        .ws(ws_url(&sim, KEY))
        .connect()
        .await
        .unwrap();
    assert!(sim.wait_connected(WAIT));

    assert!(sim.send_text("{broken"));
    assert!(matches!(next_frame(&mut conn).await, Some(Frame::Text(t)) if &t[..] == b"{broken"));
    assert!(sim.send_binary(b"\x00\x01"));
    assert!(matches!(next_frame(&mut conn).await, Some(Frame::Binary(b)) if &b[..] == b"\x00\x01"));

    conn.send(Message::Ping(Bytes::from_static(b"p1")))
        .await
        .unwrap();
    assert!(matches!(next_frame(&mut conn).await, Some(Frame::Pong(p)) if &p[..] == b"p1"));
    assert_eq!(sim.pings_received(), 1);

    // A silent backend: the Ping is counted but not answered; the next thing the client
    // sees is the event we send after it.
    sim.set_answer_pings(false);
    conn.send(Message::Ping(Bytes::from_static(b"p2")))
        .await
        .unwrap();
    assert!(sim
        .shared
        .wait_for(WAIT, |s| (s.pings == 2).then_some(()))
        .is_some());
    assert!(sim.send_event(&json!({"event_type": "after"})));
    assert!(matches!(next_frame(&mut conn).await, Some(Frame::Text(_))));

    sim.kick(4001, "go away");
    assert!(!sim.is_connected());
    assert_eq!(close_code(&mut conn).await, Some(4001));
    assert!(!sim.send_event(&json!({"event_type": "ping"})));
}

#[actix_rt::test]
async fn go_down_and_come_up_on_the_same_port() {
    let sim = sim();
    let port = sim.port();
    let (_, mut conn) = awc::Client::new()
        .ws(ws_url(&sim, KEY))
        .connect()
        .await
        .unwrap();
    assert!(sim.wait_connected(WAIT));

    sim.go_down();
    assert!(!sim.is_connected());
    // The connection is dropped without a Close frame.
    assert_eq!(close_code(&mut conn).await, None);
    // Nobody listens: connections are refused, not left hanging in a backlog.
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err());
    assert!(awc::Client::new()
        .ws(ws_url(&sim, KEY))
        .connect()
        .await
        .is_err());

    sim.come_up().expect("come up");
    assert_eq!(sim.port(), port);
    let (_, _conn) = awc::Client::new()
        .ws(ws_url(&sim, KEY))
        .connect()
        .await
        .expect("reconnect");
    assert!(sim.wait_connected(WAIT));
    assert_eq!(sim.connections(), 2);
}

fn download_url(sim: &BackendSim, id: &str) -> String {
    format!("{}/api/proxy/sessions/{id}/download", sim.api_url())
}

#[actix_rt::test]
async fn downloads_with_key_without_key_and_unknown() {
    let sim = sim();
    let zip = archive(300 * 1024 + 17);
    sim.put_download(EntityKind::Session, "s1", zip.clone());
    let client = awc::Client::new();

    let mut resp = client
        .get(download_url(&sim, "s1"))
        .insert_header(("X-Proxy-Key", KEY))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers().get("content-type").unwrap(),
        "application/zip"
    );
    assert_eq!(resp.headers().get("accept-ranges").unwrap(), "bytes");
    assert!(
        resp.headers().get("content-length").is_none(),
        "body must be streamed"
    );
    assert_eq!(resp.headers().get("transfer-encoding").unwrap(), "chunked");
    assert_eq!(resp.body().limit(1 << 20).await.unwrap(), zip);

    let resp = client.get(download_url(&sim, "s1")).send().await.unwrap();
    assert_eq!(resp.status(), 401);
    let resp = client
        .get(download_url(&sim, "s1"))
        .insert_header(("X-Proxy-Key", "wrong"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    let resp = client
        .get(download_url(&sim, "nope"))
        .insert_header(("X-Proxy-Key", KEY))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);

    let reqs = sim.download_requests();
    assert_eq!(reqs.len(), 4);
    assert_eq!(
        (reqs[0].kind, reqs[0].id.as_str(), reqs[0].key_ok),
        (EntityKind::Session, "s1", true)
    );
    assert!(!reqs[1].key_ok && !reqs[2].key_ok);
    assert_eq!(reqs[3].id, "nope");
}

#[actix_rt::test]
async fn download_range_gives_206() {
    let sim = sim();
    let zip = archive(200_000);
    sim.put_download(EntityKind::Session, "s1", zip.clone());
    let client = awc::Client::new();

    let mut resp = client
        .get(download_url(&sim, "s1"))
        .insert_header(("X-Proxy-Key", KEY))
        .insert_header(("Range", "bytes=70000-"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 206);
    assert_eq!(
        resp.headers().get("content-range").unwrap(),
        "bytes 70000-199999/200000"
    );
    assert_eq!(resp.headers().get("accept-ranges").unwrap(), "bytes");
    assert_eq!(
        resp.body().limit(1 << 20).await.unwrap(),
        zip.slice(70_000..)
    );
    assert_eq!(
        sim.download_requests()[0].range.as_deref(),
        Some("bytes=70000-")
    );

    let resp = client
        .get(download_url(&sim, "s1"))
        .insert_header(("X-Proxy-Key", KEY))
        .insert_header(("Range", "bytes=200000-"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 416);
    assert_eq!(
        resp.headers().get("content-range").unwrap(),
        "bytes */200000"
    );
}

#[actix_rt::test]
async fn scripted_downloads() {
    let sim = sim();
    let zip = archive(500_000);
    sim.put_download(EntityKind::Session, "s1", zip.clone());
    sim.script_download(
        EntityKind::Session,
        "s1",
        vec![
            DownloadStep::Status(500),
            DownloadStep::CutAfter(100_000),
            DownloadStep::RedirectTo("http://elsewhere.invalid/x".into()),
            DownloadStep::Body(Bytes::from_static(b"another archive")),
            DownloadStep::Normal,
        ],
    );
    let client = awc::Client::builder().disable_redirects().finish();
    let get = || {
        client
            .get(download_url(&sim, "s1"))
            .insert_header(("X-Proxy-Key", KEY))
    };

    // A request with a wrong key does not consume a step.
    assert_eq!(
        client
            .get(download_url(&sim, "s1"))
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    assert_eq!(get().send().await.unwrap().status(), 500);

    // The cut, seen on the wire: awc reports a chunked body cut at a chunk boundary as a
    // clean end (its payload stream maps EOF to `None`), so check the raw bytes instead.
    let (head, body, complete) = raw_get(sim.port(), "/api/proxy/sessions/s1/download");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(!complete, "a cut body must not end with the last chunk");
    assert_eq!(body, zip.slice(..100_000));

    let resp = get().send().await.unwrap();
    assert_eq!(resp.status(), 302);
    assert_eq!(
        resp.headers().get("location").unwrap(),
        "http://elsewhere.invalid/x"
    );

    // The archive changed on the server: other bytes, ranges applied to them.
    let mut resp = get()
        .insert_header(("Range", "bytes=8-"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 206);
    assert_eq!(&resp.body().await.unwrap()[..], b"archive");

    let mut resp = get().send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.body().limit(1 << 20).await.unwrap(), zip);
    // Script used up: served normally.
    let (_, body, complete) = raw_get(sim.port(), "/api/proxy/sessions/s1/download");
    assert!(complete);
    assert_eq!(body, zip);
    assert_eq!(sim.download_requests().len(), 7);
}

/// A GET with the key over a plain socket: (response head, de-chunked body, whether the
/// chunked body ended properly with its last chunk).
fn raw_get(port: u16, path: &str) -> (String, Vec<u8>, bool) {
    use std::io::{Read, Write};
    let mut sock = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    sock.set_read_timeout(Some(WAIT)).unwrap();
    write!(
        sock,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Proxy-Key: {KEY}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = Vec::new();
    // A reset after the cut is fine: what arrived before it is what we check.
    let _ = sock.read_to_end(&mut raw);
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("response head")
        + 4;
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut rest = &raw[split..];
    let mut body = Vec::new();
    loop {
        let Some(eol) = rest.windows(2).position(|w| w == b"\r\n") else {
            return (head, body, false);
        };
        let size =
            usize::from_str_radix(std::str::from_utf8(&rest[..eol]).unwrap().trim(), 16).unwrap();
        rest = &rest[eol + 2..];
        if size == 0 {
            return (head, body, rest.starts_with(b"\r\n"));
        }
        if rest.len() < size + 2 {
            body.extend_from_slice(&rest[..size.min(rest.len())]);
            return (head, body, false);
        }
        body.extend_from_slice(&rest[..size]);
        rest = &rest[size + 2..];
    }
}

#[actix_rt::test]
async fn large_download_streams() {
    let sim = sim();
    let zip = Bytes::from(vec![7u8; 64 * 1024 * 1024 + 3]);
    sim.put_download(EntityKind::Scan, "big", zip.clone());
    let url = format!("{}/api/proxy/scans/big/download", sim.api_url());
    let mut resp = awc::Client::new()
        .get(url)
        .insert_header(("X-Proxy-Key", KEY))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut got = 0;
    while let Some(chunk) = resp.next().await {
        let chunk = chunk.expect("chunk");
        assert!(chunk.iter().all(|b| *b == 7));
        got += chunk.len();
    }
    assert_eq!(got, zip.len());
}

#[actix_rt::test]
async fn wss_and_https_with_a_self_signed_ca() {
    let (config, ca_der, ca_pem) = super::tls::self_signed_tls().expect("tls");
    assert!(ca_pem.starts_with("-----BEGIN CERTIFICATE-----"));
    let sim = BackendSim::start(SimOptions {
        proxy_key: KEY.into(),
        tls: Some(config),
        port: 0,
    })
    .unwrap();
    assert!(sim.backend_url().starts_with("wss://localhost:"));
    assert!(sim.api_url().starts_with("https://localhost:"));

    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca_der).unwrap();
    let mut client_config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    // http/1.1 only: WebSocket upgrades do not work over h2.
    client_config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let client = awc::Client::builder()
        .connector(awc::Connector::new().rustls_0_23(Arc::new(client_config)))
        .finish();

    let (_, mut conn) = client
        .ws(ws_url(&sim, KEY))
        .connect()
        .await
        .expect("wss connect");
    assert!(sim.wait_connected(WAIT));
    conn.send(Message::Text(r#"{"event_type":"proxy.heartbeat"}"#.into()))
        .await
        .unwrap();
    assert!(sim
        .wait_frame(WAIT, |f| f["event_type"] == "proxy.heartbeat")
        .is_some());

    sim.put_download(EntityKind::Subject, "subj", archive(1000));
    let url = format!("{}/api/proxy/subjects/subj/download", sim.api_url());
    let mut resp = client
        .get(url)
        .insert_header(("X-Proxy-Key", KEY))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.body().await.unwrap(), archive(1000));
}

#[test]
fn drop_stops_the_server() {
    let sim = sim();
    let port = sim.port();
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_ok());
    drop(sim);
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err());
}

#[test]
fn download_paths() {
    assert_eq!(
        parse_path("/api/proxy/scans/s1/download"),
        Some((EntityKind::Scan, "s1".into()))
    );
    assert_eq!(
        parse_path("/laminate/api/proxy/subjects/x/download"),
        Some((EntityKind::Subject, "x".into()))
    );
    assert_eq!(parse_path("/api/proxy/things/x/download"), None);
    assert_eq!(parse_path("/api/proxy/scans//download"), None);
    assert_eq!(parse_path("/proxy/scans/x/download"), None);
}

#[test]
fn range_headers() {
    assert_eq!(parse_range("bytes=10-"), Some((10, None)));
    assert_eq!(parse_range("bytes=10-19"), Some((10, Some(19))));
    assert_eq!(parse_range("bytes=-5"), None);
    assert_eq!(parse_range("bytes=10-5"), None);
    assert_eq!(parse_range("bytes=0-1,5-6"), None);
    assert_eq!(parse_range("items=1-"), None);
    // Suffix ranges: the last N bytes, all of them when N is larger.
    assert_eq!(resolve_range("bytes=-5", 100), Some((95, None)));
    assert_eq!(resolve_range("bytes=-500", 100), Some((0, None)));
    assert_eq!(resolve_range("bytes=-0", 100), None);
    assert_eq!(resolve_range("bytes=10-", 100), Some((10, None)));
}
