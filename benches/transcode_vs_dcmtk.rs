//! Transcoding throughput: a compressed study sent to a stock `storescp` that
//! accepts only native syntaxes (issue 13, "Prove it").
//!
//! ```text
//! cargo bench --bench transcode_vs_dcmtk
//! ```
//!
//! The study: `BENCH_TRANSCODE_INSTANCES` (100) CT-like 512×512 12-bit images
//! (a phantom of discs on a gradient, with noise), compressed by dcmtk, half
//! JPEG-LS lossless (`dcmcjpls`), half JPEG Lossless SV1 (`dcmcjpeg +e1`).
//! Rows, on the same files in one run, round-robin, median of `BENCH_RUNS` (3):
//! - ours: `send_batch` (the dispatch's send path) with 1 and 2 associations;
//!   the node refuses the compressed syntaxes, so each instance is decoded
//!   (CharLS, jpeg-decoder) and sent in Explicit VR Little Endian;
//! - dcmtk's pipeline: `dcmdjpls` / `dcmdjpeg` on each file, then one
//!   `storescu` of the decompressed files (1 association).
//!
//! With `pydicom` and `pylibjpeg-openjpeg` installed, an extra row sends the
//! same images as JPEG 2000 lossless (dcmtk has no JPEG 2000 codec: no
//! pipeline to compare with). Results: stdout and
//! `{target}/bench-results/transcode_vs_dcmtk.md`.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use dicom_core::value::PrimitiveValue;
use dicom_core::{DataElement, VR};
use dicom_dictionary_std::{tags, uids};
use dicom_object::{FileMetaTableBuilder, InMemDicomObject};
use laminate_actors::send::{send_batch, Item, ItemOutcome, SendEvent, SendOptions, Target};
use laminate_proxy::sim::study::fresh_uid;
use support::*;

const SIDE: u16 = 512;
const SCP_AE: &str = "STORESCP";

/// A CT-like image: discs of different densities on a gradient, plus noise,
/// so codecs see realistic structure rather than pure noise.
fn phantom(index: usize) -> Vec<u8> {
    let side = usize::from(SIDE);
    let mut x = (index as u32).wrapping_mul(2_654_435_761).wrapping_add(7);
    let mut out = Vec::with_capacity(side * side * 2);
    let c = side as i64 / 2;
    for r in 0..side as i64 {
        for col in 0..side as i64 {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            let noise = (x % 24) as i64;
            let d2 = (r - c).pow(2) + (col - c).pow(2);
            let mut v = if d2 < (c - 20).pow(2) { 1000 } else { 0 };
            let (dr, dc) = (r - c / 2 - (index as i64 % 7), col - c);
            if dr * dr + dc * dc < 900 {
                v += 600;
            }
            if (r - c).pow(2) + (col - c - c / 2).pow(2) < 400 {
                v += 1800;
            }
            let v = (v + r / 4 + noise).clamp(0, 4095) as u16;
            out.extend_from_slice(&v.to_le_bytes());
        }
    }
    out
}

fn write_image(path: &Path, index: usize, study_uid: &str, series_uid: &str) {
    let uid = fresh_uid();
    let mut ds = InMemDicomObject::new_empty();
    let s = |tag, vr, v: &str| DataElement::new(tag, vr, PrimitiveValue::from(v));
    let us = |tag, v: u16| DataElement::new(tag, VR::US, PrimitiveValue::from(v));
    ds.put(s(tags::SOP_CLASS_UID, VR::UI, uids::CT_IMAGE_STORAGE));
    ds.put(s(tags::SOP_INSTANCE_UID, VR::UI, &uid));
    ds.put(s(tags::STUDY_INSTANCE_UID, VR::UI, study_uid));
    ds.put(s(tags::SERIES_INSTANCE_UID, VR::UI, series_uid));
    ds.put(s(tags::PATIENT_ID, VR::LO, "BENCH-TC"));
    ds.put(s(tags::MODALITY, VR::CS, "CT"));
    ds.put(s(tags::INSTANCE_NUMBER, VR::IS, &(index + 1).to_string()));
    ds.put(us(tags::SAMPLES_PER_PIXEL, 1));
    ds.put(s(tags::PHOTOMETRIC_INTERPRETATION, VR::CS, "MONOCHROME2"));
    ds.put(us(tags::ROWS, SIDE));
    ds.put(us(tags::COLUMNS, SIDE));
    ds.put(us(tags::BITS_ALLOCATED, 16));
    ds.put(us(tags::BITS_STORED, 12));
    ds.put(us(tags::HIGH_BIT, 11));
    ds.put(us(tags::PIXEL_REPRESENTATION, 0));
    ds.put(DataElement::new(
        tags::PIXEL_DATA,
        VR::OW,
        PrimitiveValue::from(phantom(index)),
    ));
    let meta = FileMetaTableBuilder::new()
        .media_storage_sop_class_uid(uids::CT_IMAGE_STORAGE)
        .media_storage_sop_instance_uid(&uid)
        .transfer_syntax(uids::EXPLICIT_VR_LITTLE_ENDIAN)
        .build()
        .expect("meta");
    ds.with_exact_meta(meta)
        .write_to_file(path)
        .expect("write image");
}

fn dcmtk(tool: &str, opts: &[&str], input: &Path, output: &Path) {
    let out = Command::new(tool)
        .args(opts)
        .arg(input)
        .arg(output)
        .output()
        .unwrap_or_else(|e| panic!("{tool} (dcmtk): {e}"));
    assert!(
        out.status.success(),
        "{tool} {}: {}",
        input.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Our send path: `send_batch` to the native-only node, which transcodes.
fn ours(files: &[PathBuf], port: u16, associations: u32) -> Duration {
    let target = Target {
        node_id: "bench".into(),
        host: "127.0.0.1".into(),
        port,
        called_ae: SCP_AE.into(),
        calling_ae: "BENCH".into(),
        max_associations: associations,
        tls: None,
        prefer_ts: None,
    };
    let stored = AtomicUsize::new(0);
    let failed = std::sync::Mutex::new(Vec::new());
    let started = Instant::now();
    let items: Vec<Item> = files
        .iter()
        .map(|p| Item::from_file(p).expect("item"))
        .collect();
    let outcome = send_batch(
        &target,
        items,
        &SendOptions::default(),
        &AtomicBool::new(false),
        &|e| match e {
            SendEvent::Acknowledged {
                outcome: ItemOutcome::Stored { .. },
                ..
            } => {
                stored.fetch_add(1, Ordering::Relaxed);
            }
            SendEvent::Acknowledged {
                outcome: ItemOutcome::Failed { error, .. },
                ..
            } => {
                if let Ok(mut f) = failed.lock() {
                    f.push(error);
                }
            }
            SendEvent::Transient { .. } => {}
        },
    );
    let took = started.elapsed();
    assert_eq!(outcome.transient_error, None, "send_batch failed");
    let failed = failed.into_inner().unwrap_or_default();
    assert!(failed.is_empty(), "instances failed: {:?}", &failed[..1]);
    assert_eq!(stored.into_inner(), files.len(), "every instance stored");
    took
}

/// dcmtk's pipeline: decompress each file with its tool, then one storescu.
/// Returns the whole time and the decompression's part.
fn dcmtk_pipeline(
    files: &[(PathBuf, &'static str)],
    out_dir: &Path,
    port: u16,
) -> (Duration, Duration) {
    let _ = std::fs::remove_dir_all(out_dir);
    std::fs::create_dir_all(out_dir).expect("out dir");
    let started = Instant::now();
    let mut plain = Vec::with_capacity(files.len());
    for (i, (f, tool)) in files.iter().enumerate() {
        let out = out_dir.join(format!("{i}.dcm"));
        dcmtk(tool, &[], f, &out);
        plain.push(out);
    }
    let decompressed = started.elapsed();
    dcmtk_storescu(&plain, port, SCP_AE, 1, None);
    (started.elapsed(), decompressed)
}

/// JPEG 2000 lossless copies made by pydicom (pylibjpeg-openjpeg), if it can.
fn j2k_copies(sources: &[PathBuf], dir: &Path) -> Option<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).ok()?;
    let script = r#"
import sys, os, pydicom
from pydicom.uid import JPEG2000Lossless
out = sys.argv[1]
for i, p in enumerate(sys.argv[2:]):
    ds = pydicom.dcmread(p)
    ds.compress(JPEG2000Lossless)
    ds.save_as(os.path.join(out, f"{i}.dcm"))
"#;
    let ok = Command::new("python3")
        .args(["-c", script])
        .arg(dir)
        .args(sources)
        .output()
        .is_ok_and(|o| o.status.success());
    ok.then(|| {
        (0..sources.len())
            .map(|i| dir.join(format!("{i}.dcm")))
            .collect()
    })
}

fn per_second(n: usize, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64().max(1e-9)
}

fn main() {
    if !run_requested("transcode_vs_dcmtk") {
        return;
    }
    as_the_binary_runs();
    let count: usize = env_or("BENCH_TRANSCODE_INSTANCES", 100);
    let runs: usize = env_or("BENCH_RUNS", 3);
    let mut report = Report::new("transcode_vs_dcmtk");
    report.line("# Transcoding to a native-only storescp: ours vs dcmtk's pipeline (issue 13)");
    report.line("");

    let work = tempfile::tempdir().expect("work dir");
    let plain_dir = work.path().join("plain");
    let comp_dir = work.path().join("compressed");
    std::fs::create_dir_all(&plain_dir).expect("dir");
    std::fs::create_dir_all(&comp_dir).expect("dir");
    let (study, series) = (fresh_uid(), fresh_uid());
    let made = Instant::now();
    let mut plain = Vec::new();
    let mut compressed: Vec<(PathBuf, &'static str)> = Vec::new();
    for i in 0..count {
        let p = plain_dir.join(format!("{i}.dcm"));
        write_image(&p, i, &study, &series);
        let c = comp_dir.join(format!("{i}.dcm"));
        if i % 2 == 0 {
            dcmtk("dcmcjpls", &["+el"], &p, &c);
            compressed.push((c, "dcmdjpls"));
        } else {
            dcmtk("dcmcjpeg", &["+e1"], &p, &c);
            compressed.push((c, "dcmdjpeg"));
        }
        plain.push(p);
    }
    let files: Vec<PathBuf> = compressed.iter().map(|(p, _)| p.clone()).collect();
    let mb = total_bytes(&files) as f64 / 1e6;
    let raw_mb = total_bytes(&plain) as f64 / 1e6;
    println!(
        "made {count} instances in {:.1} s",
        made.elapsed().as_secs_f64()
    );
    report.line(format!(
        "{count} CT-like 512×512 12-bit instances, half JPEG-LS lossless, half JPEG Lossless SV1: \
         {mb:.1} MB compressed ({raw_mb:.1} MB decoded); stock `storescp --fork --ignore` \
         (native syntaxes only); medians of {runs} runs; loopback"
    ));
    report.line("");

    let scp = StoreScp::ignoring(SCP_AE);
    let pipeline_dir = work.path().join("pipeline");
    // Warm-up, untimed: page cache, storescp's first fork.
    ours(&files, scp.port, 1);
    dcmtk_pipeline(&compressed, &pipeline_dir, scp.port);

    let mut t_ours1 = Vec::new();
    let mut t_ours2 = Vec::new();
    let mut t_dcmtk = Vec::new();
    let mut t_decompress = Vec::new();
    for run in 0..runs {
        t_ours1.push(ours(&files, scp.port, 1));
        t_ours2.push(ours(&files, scp.port, 2));
        let (whole, decompress) = dcmtk_pipeline(&compressed, &pipeline_dir, scp.port);
        t_dcmtk.push(whole);
        t_decompress.push(decompress);
        println!(
            "run {}: ours×1 {:.2} s, ours×2 {:.2} s, dcmtk {:.2} s",
            run + 1,
            t_ours1[run].as_secs_f64(),
            t_ours2[run].as_secs_f64(),
            t_dcmtk[run].as_secs_f64()
        );
    }
    let (o1, o2, d) = (median(t_ours1), median(t_ours2), median(t_dcmtk));
    let dps = per_second(count, d);
    report.line("| sender | associations | instances/s | vs dcmtk |");
    report.line("|---|---|---|---|");
    for (name, assoc, t) in [
        ("ours (transcoding send_batch)", 1, o1),
        ("ours (transcoding send_batch)", 2, o2),
    ] {
        let ips = per_second(count, t);
        report.line(format!(
            "| {name} | {assoc} | {ips:.1} | {:.2}× |",
            ips / dps
        ));
    }
    report.line(format!(
        "| dcmtk: dcmdjpls/dcmdjpeg per file, then storescu | 1 | {dps:.1} | 1.00× |"
    ));
    // Stock storescu stalls ~40 ms per instance on delayed ACKs (see the
    // C-STORE bench): the decompression alone is the fairer floor.
    let cps = per_second(count, median(t_decompress));
    report.line(format!(
        "| dcmtk: the decompression alone (no sending) | – | {cps:.1} | ours ×1 is {:.2}× this |",
        per_second(count, o1) / cps
    ));

    match j2k_copies(&plain, &work.path().join("j2k")) {
        Some(j2k) => {
            ours(&j2k, scp.port, 1);
            let t1 = median((0..runs).map(|_| ours(&j2k, scp.port, 1)).collect());
            let t2 = median((0..runs).map(|_| ours(&j2k, scp.port, 2)).collect());
            let jmb = total_bytes(&j2k) as f64 / 1e6;
            report.line(format!(
                "| ours, the same images as JPEG 2000 lossless ({jmb:.1} MB, made by pydicom) | 1 | {:.1} | (dcmtk cannot decode J2K) |",
                per_second(count, t1)
            ));
            report.line(format!(
                "| ours, JPEG 2000 lossless | 2 | {:.1} | |",
                per_second(count, t2)
            ));
        }
        None => {
            report.line("note: pydicom with pylibjpeg-openjpeg is not installed: no JPEG 2000 row")
        }
    }
    report.line("");
    report.line(format!(
        "machine: {} cores; ours decodes on the sending thread (CharLS, jpeg-decoder, OpenJPEG's Rust port)",
        std::thread::available_parallelism().map_or(1, |n| n.get())
    ));
    report.save();
}
