//! Parsing incoming WebSocket frames (PROTOCOL.md §2): a typical dispatch
//! event, and garbage that must be refused cheaply.
//!
//! `cargo bench --bench envelope`

use criterion::{criterion_group, criterion_main, Criterion};
use laminate_actors::envelope::parse_incoming;
use std::hint::black_box;
use std::time::Duration;

/// A `session.dispatch` as the backend sends it.
const DISPATCH: &[u8] = br#"{"event_type":"session.dispatch","workspace_id":"ws_7f3a9c","timestamp":"2025-10-04T10:30:00.000Z","correlation_id":"corr_8d4e2b1a-9f3c-4e6d-b7a2-5c1f0e9d8b7a","entity_type":"session","entity_id":"sess_01HF3K9Z8Q","payload":{"nodes":["node_1","node_2"],"priority":"high","subject_id":"subj_01HF3K9Y2M","session_label":"MRI-2025-10-04","requested_by":"user_42"}}"#;

/// Not JSON at all.
const GARBAGE: &[u8] = b"\x00\xffGET / HTTP/1.1\r\nHost: nope\r\n\r\n{{{{\"event_type\":";

/// Valid JSON of the wrong shape (event_type a number, payload a list).
const WRONG_SHAPE: &[u8] =
    br#"{"event_type":12,"workspace_id":"ws","correlation_id":"c","payload":[1,2,3]}"#;

fn parse(c: &mut Criterion) {
    let mut g = c.benchmark_group("parse_incoming");
    g.sample_size(50)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    g.bench_function("dispatch_frame", |b| {
        b.iter(|| parse_incoming(black_box(DISPATCH)).expect("valid"))
    });
    g.bench_function("garbage", |b| {
        b.iter(|| parse_incoming(black_box(GARBAGE)).expect_err("refused"))
    });
    g.bench_function("wrong_shape", |b| {
        b.iter(|| parse_incoming(black_box(WRONG_SHAPE)).expect_err("refused"))
    });
    g.finish();
}

criterion_group!(benches, parse);
criterion_main!(benches);
