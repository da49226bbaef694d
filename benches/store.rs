//! The store's durable writes, each flushed as the appliance does it: an
//! outbox push and its acknowledgement, a catalog `put_instance`, and a
//! dispatch-journal ack. The store sits on the real disk (a temporary
//! directory), not in memory, because the flush is most of the cost.
//!
//! `cargo bench --bench store`

use criterion::{criterion_group, criterion_main, Criterion};
use laminate_store::{
    instance_rel_path, Ack, Catalog, InstanceRecord, InstanceSource, Journal, Outbox, Store,
};
use std::hint::black_box;
use std::time::Duration;

/// A `dispatch.status` progress frame of the usual size.
const STATUS: &[u8] = br#"{"event_type":"dispatch.status","workspace_id":"ws_7f3a9c","timestamp":"2025-10-04T10:30:01.250Z","correlation_id":"corr_8d4e2b1a-9f3c-4e6d-b7a2-5c1f0e9d8b7a","entity_type":"session","entity_id":"sess_01HF3K9Z8Q","payload":{"node_id":"node_1","status":"sending","progress":42,"files_sent":252,"files_total":600,"error":null}}"#;

const STUDY: &str = "1.2.826.0.1.3680043.8.498.10000000000000000001";
const SERIES: &str = "1.2.826.0.1.3680043.8.498.10000000000000000001.1";

fn group(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(&dir.path().join("store")).expect("store");
    let mut g = c.benchmark_group("store");
    g.sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));

    g.bench_function("outbox_push_then_ack", |b| {
        b.iter(|| {
            let seq = store
                .outbox_push(black_box(STATUS), Some("corr_8d4e/node_1"), true)
                .expect("push");
            store.outbox_ack(seq).expect("ack")
        })
    });

    let mut n: u64 = 0;
    g.bench_function("catalog_put_instance", |b| {
        b.iter(|| {
            n += 1;
            let sop = format!("{SERIES}.{n}");
            let rec = InstanceRecord {
                path: instance_rel_path(STUDY, SERIES, &sop).expect("valid UIDs"),
                sop_instance_uid: sop,
                sop_class_uid: "1.2.840.10008.5.1.4.1.1.2".into(),
                transfer_syntax: "1.2.840.10008.1.2.1".into(),
                study_instance_uid: STUDY.into(),
                series_instance_uid: SERIES.into(),
                series_number: Some(1),
                patient_id: Some("PAT-1".into()),
                size: 525_312,
                source: InstanceSource::Ingest,
                stored_at_ms: 1_759_573_800_000,
            };
            store.put_instance(black_box(&rec)).expect("put")
        })
    });

    let ack = Ack {
        stored: true,
        status: Some(0),
        error: None,
        converted_to: None,
    };
    let mut m: u64 = 0;
    g.bench_function("journal_ack_flushed", |b| {
        b.iter(|| {
            m += 1;
            store
                .journal_ack("dsp_1", "node_1", &format!("{SERIES}.{m}"), black_box(&ack))
                .expect("ack")
        })
    });
    g.finish();
}

criterion_group!(benches, group);
criterion_main!(benches);
