//! C-STORE throughput: our sender against stock dcmtk `storescu`, both into
//! `storescp --ignore` on loopback, on the same generated CT instances.
//!
//! ```text
//! cargo run --release -p laminate-actors --example send_bench -- [count] [side] [runs] [storescp max PDU]
//! ```
//! Defaults: 600 instances of 512×512×16 bit (≈512 KiB each), 3 runs (medians),
//! storescp's default max PDU (16384). Set `QUICKACK_SO=/path/quickack.so`
//! to also time `storescu` with the LD_PRELOAD shim of `shared/bench/`.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use dicom_core::{DataElement, PrimitiveValue, VR};
use dicom_dictionary_std::{tags, uids};
use dicom_object::{FileMetaTableBuilder, InMemDicomObject};
use laminate_actors::send::{send_batch, Item, ItemOutcome, SendEvent, SendOptions, Target};

const EXPLICIT_VR_LE: &str = "1.2.840.10008.1.2.1";

fn write_ct(dir: &Path, i: usize, side: u16) -> PathBuf {
    let uid = format!("2.25.{}{:06}", rand::random::<u64>(), i);
    let n = side as usize * side as usize * 2;
    let pixels: Vec<u8> = (0..n).map(|k| ((k * 31 + i) % 256) as u8).collect();
    let mut obj = InMemDicomObject::from_element_iter([
        DataElement::new(
            tags::SOP_CLASS_UID,
            VR::UI,
            PrimitiveValue::from(uids::CT_IMAGE_STORAGE),
        ),
        DataElement::new(
            tags::SOP_INSTANCE_UID,
            VR::UI,
            PrimitiveValue::from(uid.as_str()),
        ),
        DataElement::new(
            tags::PATIENT_NAME,
            VR::PN,
            PrimitiveValue::from("Bench^Send"),
        ),
        DataElement::new(tags::PATIENT_ID, VR::LO, PrimitiveValue::from("BENCH")),
        DataElement::new(
            tags::STUDY_INSTANCE_UID,
            VR::UI,
            PrimitiveValue::from("2.25.42"),
        ),
        DataElement::new(
            tags::SERIES_INSTANCE_UID,
            VR::UI,
            PrimitiveValue::from("2.25.43"),
        ),
        DataElement::new(tags::MODALITY, VR::CS, PrimitiveValue::from("CT")),
        DataElement::new(tags::SAMPLES_PER_PIXEL, VR::US, PrimitiveValue::from(1_u16)),
        DataElement::new(
            tags::PHOTOMETRIC_INTERPRETATION,
            VR::CS,
            PrimitiveValue::from("MONOCHROME2"),
        ),
        DataElement::new(tags::ROWS, VR::US, PrimitiveValue::from(side)),
        DataElement::new(tags::COLUMNS, VR::US, PrimitiveValue::from(side)),
        DataElement::new(tags::BITS_ALLOCATED, VR::US, PrimitiveValue::from(16_u16)),
        DataElement::new(tags::BITS_STORED, VR::US, PrimitiveValue::from(16_u16)),
        DataElement::new(tags::HIGH_BIT, VR::US, PrimitiveValue::from(15_u16)),
        DataElement::new(
            tags::PIXEL_REPRESENTATION,
            VR::US,
            PrimitiveValue::from(0_u16),
        ),
    ]);
    obj.put(DataElement::new(
        tags::PIXEL_DATA,
        VR::OW,
        PrimitiveValue::from(pixels),
    ));
    let meta = FileMetaTableBuilder::new()
        .transfer_syntax(EXPLICIT_VR_LE)
        .media_storage_sop_class_uid(uids::CT_IMAGE_STORAGE)
        .media_storage_sop_instance_uid(uid.as_str())
        .build()
        .expect("meta");
    let path = dir.join(format!("ct{i:05}.dcm"));
    obj.with_exact_meta(meta)
        .write_to_file(&path)
        .expect("write");
    path
}

struct Scp(Child, u16);

impl Drop for Scp {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn storescp(extra: &[&str]) -> Scp {
    let port = TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let child = Command::new("storescp")
        .args(["--ignore", "-aet", "STORESCP"])
        .args(extra)
        .arg(port.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("storescp");
    let needle = format!(":{port:04X} 00000000:0000 0A");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !std::fs::read_to_string("/proc/net/tcp")
        .unwrap_or_default()
        .contains(&needle)
    {
        assert!(Instant::now() < deadline, "storescp does not listen");
        std::thread::sleep(Duration::from_millis(20));
    }
    Scp(child, port)
}

fn storescu(dir: &Path, port: u16, preload: Option<&str>) -> Duration {
    let mut cmd = Command::new("storescu");
    cmd.args([
        "-aet",
        "BENCH",
        "-aec",
        "STORESCP",
        "+sd",
        "127.0.0.1",
        &port.to_string(),
    ])
    .arg(dir)
    .stdout(Stdio::null())
    .stderr(Stdio::null());
    if let Some(so) = preload {
        cmd.env("LD_PRELOAD", so);
    }
    let started = Instant::now();
    let status = cmd.status().expect("storescu");
    let took = started.elapsed();
    assert!(status.success(), "storescu failed: {status}");
    took
}

fn ours(files: &[PathBuf], port: u16, associations: u32, with_index: bool) -> Duration {
    let target = Target {
        node_id: "bench".into(),
        host: "127.0.0.1".into(),
        port,
        called_ae: "STORESCP".into(),
        calling_ae: "BENCH".into(),
        max_associations: associations,
    };
    let index = || -> Vec<Item> {
        files
            .iter()
            .map(|p| Item::from_file(p).expect("item"))
            .collect()
    };
    let pre = if with_index { None } else { Some(index()) };
    let started = Instant::now();
    let items = pre.unwrap_or_else(index);
    let n = items.len();
    let stored = std::sync::atomic::AtomicUsize::new(0);
    let outcome = send_batch(
        &target,
        items,
        &SendOptions::default(),
        &AtomicBool::new(false),
        &|e| {
            if let SendEvent::Acknowledged {
                outcome: ItemOutcome::Stored { .. },
                ..
            } = e
            {
                stored.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        },
    );
    let took = started.elapsed();
    assert_eq!(outcome.transient_error, None);
    assert_eq!(stored.into_inner(), n, "every instance stored");
    took
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let count: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(600);
    let side: u16 = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(512);
    let runs: usize = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(3);
    let pdu: Option<String> = args.get(4).cloned();
    let preload = std::env::var("QUICKACK_SO").ok();

    let dir = tempfile::tempdir().expect("tempdir");
    let files: Vec<PathBuf> = (0..count).map(|i| write_ct(dir.path(), i, side)).collect();
    let bytes: u64 = files
        .iter()
        .map(|p| std::fs::metadata(p).expect("meta").len())
        .sum();
    let mb = bytes as f64 / 1e6;
    println!(
        "{count} instances, {mb:.1} MB, {runs} runs (medians), storescp max PDU {}",
        pdu.as_deref().unwrap_or("default")
    );

    let pdu_args: Vec<&str> = match &pdu {
        Some(p) => vec!["-pdu", p.as_str()],
        None => vec![],
    };
    let single = storescp(&pdu_args);
    let mut forking_args = pdu_args.clone();
    forking_args.push("--fork");
    let forking = storescp(&forking_args);

    let rate = |d: Duration| mb / d.as_secs_f64();
    let report = |name: &str, d: Duration| {
        println!(
            "{name:<44} {:>8.2} s {:>8.1} MB/s",
            d.as_secs_f64(),
            rate(d)
        );
        d
    };
    let stock = report(
        "dcmtk storescu (stock), 1 assoc",
        median(
            (0..runs)
                .map(|_| storescu(dir.path(), single.1, None))
                .collect(),
        ),
    );
    if let Some(so) = preload.as_deref() {
        report(
            "dcmtk storescu + quickack shim, 1 assoc",
            median(
                (0..runs)
                    .map(|_| storescu(dir.path(), single.1, Some(so)))
                    .collect(),
            ),
        );
    }
    let ours1 = report(
        "laminate send_batch, 1 assoc (incl. index)",
        median((0..runs).map(|_| ours(&files, single.1, 1, true)).collect()),
    );
    report(
        "laminate send_batch, 1 assoc (send only)",
        median(
            (0..runs)
                .map(|_| ours(&files, single.1, 1, false))
                .collect(),
        ),
    );
    let ours4 = report(
        "laminate send_batch, 4 assoc (incl. index)",
        median(
            (0..runs)
                .map(|_| ours(&files, forking.1, 4, true))
                .collect(),
        ),
    );
    println!(
        "ratio vs stock storescu: 1 assoc {:.1}x, 4 assoc {:.1}x",
        stock.as_secs_f64() / ours1.as_secs_f64(),
        stock.as_secs_f64() / ours4.as_secs_f64()
    );
}
