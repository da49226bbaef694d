//! Transcoding through the real binary: a study of compressed instances
//! (JPEG Baseline, JPEG-LS, JPEG 2000 lossless and lossy, RLE, deflate) made
//! from pydicom's files with dcmtk, dispatched to a stock `storescp` that
//! accepts only native syntaxes. Every instance must arrive, in a native
//! syntax, with the pixels the decoders of dcmtk or pydicom give.
//!
//! Needs python3 with pydicom and pydicom-data (skipped, with a message,
//! without them) and dcmtk.

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use dicom_dictionary_std::tags;
use dicom_object::OpenFileOptions;
use laminate_proxy::sim::EntityKind;
use support::*;

const T: Duration = Duration::from_secs(60);

/// pydicom's test files and pydicom-data's files, or None.
fn pydicom_dirs() -> Option<(PathBuf, PathBuf)> {
    let out = Command::new("python3")
        .args([
            "-c",
            "import os, pydicom, data_store\n\
             print(os.path.join(os.path.dirname(pydicom.__file__), 'data', 'test_files'))\n\
             print(os.path.join(os.path.dirname(data_store.__file__), 'data'))",
        ])
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let mut lines = text.lines();
    Some((lines.next()?.into(), lines.next()?.into()))
}

fn run(tool: &str, opts: &[&str], input: &Path, output: &Path) {
    let out = Command::new(tool)
        .args(opts)
        .arg(input)
        .arg(output)
        .output()
        .unwrap_or_else(|e| panic!("{tool} (dcmtk): {e}"));
    assert!(
        out.status.success(),
        "{tool} {opts:?} {}: {}",
        input.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn sop_uid(path: &Path) -> String {
    OpenFileOptions::new()
        .read_until(tags::PIXEL_DATA)
        .open_file(path)
        .expect("open")
        .element(tags::SOP_INSTANCE_UID)
        .expect("uid")
        .to_str()
        .expect("uid")
        .trim_end_matches(['\0', ' '])
        .to_string()
}

fn pixels(path: &Path) -> Vec<u8> {
    OpenFileOptions::new()
        .open_file(path)
        .expect("open")
        .element(tags::PIXEL_DATA)
        .expect("pixel data")
        .to_bytes()
        .expect("native pixel data")
        .to_vec()
}

fn max_difference(a: &[u8], b: &[u8], wide: bool) -> u32 {
    assert_eq!(a.len(), b.len(), "pixel buffers of different sizes");
    if wide {
        a.chunks_exact(2)
            .zip(b.chunks_exact(2))
            .map(|(x, y)| {
                let d =
                    u16::from_le_bytes([x[0], x[1]]).wrapping_sub(u16::from_le_bytes([y[0], y[1]]));
                u32::from(d.min(d.wrapping_neg()))
            })
            .max()
            .unwrap_or(0)
    } else {
        a.iter()
            .zip(b)
            .map(|(x, y)| u32::from(x.abs_diff(*y)))
            .max()
            .unwrap_or(0)
    }
}

/// One instance of the study: the file sent, the reference pixels it must
/// arrive with, and how far lossy decoders may differ.
struct Case {
    file: PathBuf,
    reference: Vec<u8>,
    tolerance: u32,
    wide: bool,
}

/// pydicom's decode of a J2K file, when pylibjpeg-openjpeg is installed.
fn pydicom_decode(path: &Path, out: &Path) -> Option<Vec<u8>> {
    let script = "import sys, pydicom\n\
ds = pydicom.dcmread(sys.argv[1])\n\
a = ds.pixel_array\n\
open(sys.argv[2], 'wb').write(a.astype(a.dtype.newbyteorder('<')).tobytes())";
    let ok = Command::new("python3")
        .args(["-c", script])
        .arg(path)
        .arg(out)
        .output()
        .is_ok_and(|o| o.status.success());
    ok.then(|| std::fs::read(out).ok()).flatten()
}

fn study(test_files: &Path, data_store: &Path, dir: &Path) -> Vec<Case> {
    let mut cases = Vec::new();
    let mut made = |source: PathBuf,
                    compress: &str,
                    opts: &[&str],
                    decompress: &str,
                    name: &str,
                    tolerance: u32,
                    wide: bool| {
        let file = dir.join(format!("{name}.dcm"));
        run(compress, opts, &source, &file);
        let reference = dir.join(format!("{name}.ref.dcm"));
        run(decompress, &[], &file, &reference);
        cases.push(Case {
            file,
            reference: pixels(&reference),
            tolerance,
            wide,
        });
    };
    // RGB 8-bit: lossy baseline (a new SOP Instance UID from dcmcjpeg).
    made(
        data_store.join("SC_rgb.dcm"),
        "dcmcjpeg",
        &["+eb"],
        "dcmdjpeg",
        "jpeg-baseline",
        3,
        false,
    );
    made(
        test_files.join("MR_small.dcm"),
        "dcmcjpls",
        &["+el"],
        "dcmdjpls",
        "jpeg-ls",
        0,
        true,
    );
    made(
        test_files.join("CT_small.dcm"),
        "dcmcrle",
        &[],
        "dcmdrle",
        "rle",
        0,
        true,
    );
    made(
        data_store.join("emri_small.dcm"),
        "dcmcjpeg",
        &["+e1"],
        "dcmdjpeg",
        "jpeg-lossless",
        0,
        true,
    );
    // JPEG 2000 comes from pydicom-data (dcmtk has no J2K codec).
    cases.push(Case {
        file: data_store.join("US1_J2KR.dcm"),
        reference: pixels(&data_store.join("US1_UNCR.dcm")),
        tolerance: 0,
        wide: false,
    });
    let lossy = data_store.join("MR2_J2KI.dcm");
    let (reference, tolerance) = match pydicom_decode(&lossy, &dir.join("mr2.raw")) {
        Some(p) => (p, 1),
        None => (pixels(&data_store.join("MR2_UNCI.dcm")), 1),
    };
    cases.push(Case {
        file: lossy,
        reference,
        tolerance,
        wide: true,
    });
    // Deflated: inflated, pixels untouched.
    let dfl = test_files.join("image_dfl.dcm");
    let inflated = dir.join("dfl.ref.dcm");
    run("dcmconv", &["+te"], &dfl, &inflated);
    cases.push(Case {
        file: dfl,
        reference: pixels(&inflated),
        tolerance: 0,
        wide: false,
    });
    cases
}

#[test]
fn a_native_only_node_receives_every_compressed_instance_decoded() {
    let Some((test_files, data_store)) = pydicom_dirs() else {
        eprintln!(
            "SKIPPED: python3 with pydicom and pydicom-data is not installed \
             (pip install pydicom pydicom-data)"
        );
        return;
    };
    let dir = tempfile::tempdir().expect("tmp");
    let cases = study(&test_files, &data_store, dir.path());
    let entries: Vec<(String, Vec<u8>)> = cases
        .iter()
        .enumerate()
        .map(|(i, c)| {
            (
                format!("study/{i}.dcm"),
                std::fs::read(&c.file).expect("read"),
            )
        })
        .collect();
    let raw: Vec<(&str, &[u8], u32)> = entries
        .iter()
        .map(|(n, d)| (n.as_str(), d.as_slice(), 0))
        .collect();
    let sim = sim();
    sim.put_download(EntityKind::Session, "sess_tc", raw_zip(&raw));
    // Stock storescp: Explicit and Implicit VR Little Endian only.
    let scp = StoreScp::start("PACS_A");
    let app = Appliance::with_one_node(&sim, scp.port, T);
    assert!(sim.send_event(&dispatch_event(
        "session",
        "sess_tc",
        "corr_tc",
        &["node_1"],
        "normal"
    )));
    let last = wait_final(&sim, "corr_tc", "node_1", T)
        .unwrap_or_else(|| panic!("no final status:\n{}", app.logs()));
    assert_eq!(last["status"], "completed", "{last}\n{}", app.logs());
    assert_eq!(last["files_sent"], cases.len());

    let mut received: BTreeMap<String, PathBuf> = BTreeMap::new();
    for e in std::fs::read_dir(scp.dir.path().join("received"))
        .expect("received")
        .flatten()
    {
        received.insert(sop_uid(&e.path()), e.path());
    }
    assert_eq!(received.len(), cases.len());
    let native = ["1.2.840.10008.1.2", "1.2.840.10008.1.2.1"];
    for ts in scp.syntaxes().values() {
        assert!(native.contains(&ts.as_str()), "{ts}");
    }
    for case in &cases {
        let uid = sop_uid(&case.file);
        let got = received
            .get(&uid)
            .unwrap_or_else(|| panic!("{} did not arrive", case.file.display()));
        let d = max_difference(&pixels(got), &case.reference, case.wide);
        assert!(
            d <= case.tolerance,
            "{}: received pixels differ from the reference decode by {d}",
            case.file.display()
        );
    }
    // Every one is listed as transcoded, with the syntax it was sent in and why.
    let detail = app.get_json("/api/dispatches/corr_tc");
    let outcomes = detail["nodes"][0]["outcomes"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(outcomes.len(), cases.len(), "{detail:#}");
    for o in &outcomes {
        assert_eq!(o["outcome"], "transcoded", "{o}");
        assert!(
            native.contains(&o["transfer_syntax"].as_str().unwrap_or("")),
            "{o}"
        );
        assert!(
            o["reason"]
                .as_str()
                .is_some_and(|r| r.starts_with("the node did not take ")),
            "{o}"
        );
        assert!(
            o["file"].as_str().is_some_and(|f| f.ends_with(".dcm")),
            "{o}"
        );
    }
}
