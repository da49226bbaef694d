//! The ingest SCP against real senders: dcmtk's `storescu`/`echoscu`
//! (installed at /usr/bin) and a raw dicom-ul client for what storescu
//! cannot be made to do (exact statuses, packed PDUs, aborts, bad UIDs).

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use dicom_core::{DataElement, PrimitiveValue, VR};
use dicom_dictionary_std::tags;
use dicom_object::{FileMetaTableBuilder, InMemDicomObject, OpenFileOptions};
use dicom_ul::association::client::ClientAssociation;
use dicom_ul::pdu::{AssociationRJResult, PDataValue, PDataValueType, Pdu};
use dicom_ul::ClientAssociationOptions;
use laminate_store::{Catalog, InstanceSource, Store};
use tempfile::TempDir;

use super::*;
use crate::dimse::{self, EXPLICIT_VR_LE, IMPLICIT_VR_LE};
use crate::health::HealthRegistry;

const CT_IMAGE_STORAGE: &str = "1.2.840.10008.5.1.4.1.1.2";
const AE: &str = "LAMINATE_PROXY";
const STORESCU: &str = "/usr/bin/storescu";
const ECHOSCU: &str = "/usr/bin/echoscu";
const STORESCP: &str = "/usr/bin/storescp";
const STUDY: &str = "1.2.826.0.1.3680043.2.1125.1";

/// A running ingest SCP on a free loopback port with its own data dir and store.
struct Scp {
    dir: TempDir,
    store: Store,
    addr: SocketAddr,
    _handle: IngestHandle,
}

impl Scp {
    /// Starts one inside the current actix System. The disk floor is off
    /// (the test machine's free space is not what is tested) unless `tweak`
    /// sets it.
    fn start(tweak: impl FnOnce(&mut IngestSettings)) -> Scp {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open_temporary().expect("store");
        let mut settings =
            IngestSettings::new("127.0.0.1:0".parse().expect("addr"), AE, dir.path());
        settings.min_free = crate::disk::Floor::fixed(0);
        tweak(&mut settings);
        let health = HealthRegistry::new().register("ingest");
        let handle = IngestActor::start(health, settings, store.clone()).expect("ingest starts");
        Scp {
            addr: handle.local_addr,
            dir,
            store,
            _handle: handle,
        }
    }

    fn port(&self) -> String {
        self.addr.port().to_string()
    }

    fn stored_path(&self, inst: &Instance) -> PathBuf {
        self.dir.path().join(format!(
            "storage/{}/{}/{}.dcm",
            inst.study, inst.series, inst.sop
        ))
    }

    /// No temporary file in `.incoming` (an association's own directory
    /// there goes when its thread ends, a moment after its last answer).
    fn incoming_is_empty(&self) -> bool {
        fn has_file(dir: &Path) -> bool {
            std::fs::read_dir(dir)
                .into_iter()
                .flatten()
                .flatten()
                .any(|e| {
                    let path = e.path();
                    if path.is_dir() {
                        has_file(&path)
                    } else {
                        true
                    }
                })
        }
        !has_file(&self.dir.path().join("storage/.incoming"))
    }

    /// Checks that every instance is stored, parses, matches what was sent
    /// and is in the catalog.
    fn assert_stored(&self, sent: &[(Instance, PathBuf)]) {
        for (inst, original) in sent {
            let path = self.stored_path(inst);
            let stored = OpenFileOptions::new()
                .open_file(&path)
                .unwrap_or_else(|e| panic!("{} does not parse: {e}", path.display()));
            assert_eq!(text(&stored, tags::SOP_INSTANCE_UID), inst.sop);
            assert_eq!(stored.meta().media_storage_sop_instance_uid(), inst.sop);
            assert_eq!(
                stored.meta().implementation_class_uid(),
                IMPLEMENTATION_CLASS_UID
            );
            let sent_obj = OpenFileOptions::new()
                .open_file(original)
                .expect("original");
            assert_eq!(
                pixels(&stored),
                pixels(&sent_obj),
                "pixel data of {}",
                inst.sop
            );
            let rec = self
                .store
                .get_instance(&inst.sop)
                .expect("catalog")
                .unwrap_or_else(|| panic!("{} not in the catalog", inst.sop));
            assert_eq!(rec.study_instance_uid, inst.study);
            assert_eq!(rec.series_instance_uid, inst.series);
            assert_eq!(rec.series_number, Some(inst.series_number));
            assert_eq!(rec.patient_id.as_deref(), Some(inst.patient_id.as_str()));
            assert_eq!(rec.source, InstanceSource::Ingest);
            assert_eq!(rec.transfer_syntax, stored.meta().transfer_syntax());
            assert_eq!(
                rec.size,
                std::fs::metadata(&path).expect("stored file").len()
            );
            assert_eq!(self.dir.path().join(&rec.path), path);
        }
        assert!(self.incoming_is_empty(), "temporary files left behind");
    }
}

fn text(obj: &InMemDicomObject, tag: dicom_core::Tag) -> String {
    obj.element(tag)
        .expect("element")
        .to_str()
        .expect("text")
        .trim_end_matches(['\0', ' '])
        .to_owned()
}

fn pixels(obj: &InMemDicomObject) -> Vec<u8> {
    obj.element(tags::PIXEL_DATA)
        .expect("pixel data")
        .to_bytes()
        .expect("bytes")
        .to_vec()
}

/// One generated CT instance.
#[derive(Debug, Clone)]
struct Instance {
    study: String,
    series: String,
    series_number: i32,
    sop: String,
    patient_id: String,
    transfer_syntax: &'static str,
}

impl Instance {
    fn new(series_number: i32, index: usize, ts: &'static str) -> Instance {
        Instance {
            study: STUDY.into(),
            series: format!("{STUDY}.{series_number}"),
            series_number,
            sop: format!("{STUDY}.{series_number}.{index}"),
            patient_id: "PAT-0042".into(),
            transfer_syntax: ts,
        }
    }

    /// The data set: a CT image of `side`×`side` 16-bit pixels.
    fn dataset(&self, side: u16) -> InMemDicomObject {
        let mut obj = InMemDicomObject::new_empty();
        let mut put = |tag, vr, value: PrimitiveValue| obj.put(DataElement::new(tag, vr, value));
        put(tags::SOP_CLASS_UID, VR::UI, CT_IMAGE_STORAGE.into());
        put(tags::SOP_INSTANCE_UID, VR::UI, self.sop.as_str().into());
        put(tags::STUDY_INSTANCE_UID, VR::UI, self.study.as_str().into());
        put(
            tags::SERIES_INSTANCE_UID,
            VR::UI,
            self.series.as_str().into(),
        );
        put(
            tags::SERIES_NUMBER,
            VR::IS,
            self.series_number.to_string().into(),
        );
        put(tags::PATIENT_ID, VR::LO, self.patient_id.as_str().into());
        put(tags::PATIENT_NAME, VR::PN, "Test^Ingest".into());
        put(tags::MODALITY, VR::CS, "CT".into());
        put(tags::SAMPLES_PER_PIXEL, VR::US, 1u16.into());
        put(
            tags::PHOTOMETRIC_INTERPRETATION,
            VR::CS,
            "MONOCHROME2".into(),
        );
        put(tags::ROWS, VR::US, side.into());
        put(tags::COLUMNS, VR::US, side.into());
        put(tags::BITS_ALLOCATED, VR::US, 16u16.into());
        put(tags::BITS_STORED, VR::US, 16u16.into());
        put(tags::HIGH_BIT, VR::US, 15u16.into());
        put(tags::PIXEL_REPRESENTATION, VR::US, 0u16.into());
        let seed = self.sop.len() as u16 ^ self.series_number as u16;
        let pixels: Vec<u16> = (0..u32::from(side) * u32::from(side))
            .map(|i| (i as u16).wrapping_mul(31).wrapping_add(seed))
            .collect();
        put(tags::PIXEL_DATA, VR::OW, PrimitiveValue::U16(pixels.into()));
        obj
    }

    /// Writes it as a Part 10 file in `dir`.
    fn write(&self, dir: &Path, side: u16) -> PathBuf {
        let path = dir.join(format!("{}.dcm", self.sop));
        self.dataset(side)
            .with_meta(
                FileMetaTableBuilder::new()
                    .transfer_syntax(self.transfer_syntax)
                    .media_storage_sop_class_uid(CT_IMAGE_STORAGE)
                    .media_storage_sop_instance_uid(self.sop.as_str()),
            )
            .expect("meta")
            .write_to_file(&path)
            .expect("write test file");
        path
    }
}

/// `per_series` instances in each of `series`, written in `dir`.
fn study_files(
    dir: &Path,
    series: std::ops::RangeInclusive<i32>,
    per_series: usize,
    side: u16,
    ts_of: impl Fn(i32) -> &'static str,
) -> Vec<(Instance, PathBuf)> {
    let mut out = Vec::new();
    for s in series {
        for i in 1..=per_series {
            let inst = Instance::new(s, i, ts_of(s));
            let path = inst.write(dir, side);
            out.push((inst, path));
        }
    }
    out
}

/// Runs a dcmtk tool off the actix thread.
async fn run(tool: &'static str, args: Vec<String>) -> Output {
    tokio::task::spawn_blocking(move || {
        Command::new(tool)
            .args(&args)
            .output()
            .unwrap_or_else(|e| panic!("cannot run {tool} (dcmtk installed?): {e}"))
    })
    .await
    .expect("join")
}

async fn storescu(called_ae: &str, port: &str, files: &[(Instance, PathBuf)]) -> Output {
    let mut args = vec![
        "-aec".into(),
        called_ae.into(),
        "127.0.0.1".into(),
        port.into(),
    ];
    args.extend(files.iter().map(|(_, p)| p.display().to_string()));
    run(STORESCU, args).await
}

fn all_output(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[actix_rt::test]
async fn stores_a_study_in_explicit_and_implicit_vr_sent_by_storescu() {
    let scp = Scp::start(|_| {});
    let src = tempfile::tempdir().expect("tempdir");
    let files = study_files(src.path(), 1..=3, 3, 64, |s| {
        if s == 2 {
            IMPLICIT_VR_LE
        } else {
            EXPLICIT_VR_LE
        }
    });
    let out = storescu(AE, &scp.port(), &files).await;
    assert!(out.status.success(), "storescu: {}", all_output(&out));
    scp.assert_stored(&files);
    assert_eq!(scp.store.instances_of_study(STUDY).expect("study").len(), 9);

    // Implicit VR only: the implicit files arrive, and are stored, as implicit.
    let implicit: Vec<_> = files
        .iter()
        .filter(|(i, _)| i.transfer_syntax == IMPLICIT_VR_LE)
        .cloned()
        .collect();
    let mut args = vec![
        "-xi".into(),
        "-aec".into(),
        AE.into(),
        "127.0.0.1".into(),
        scp.port(),
    ];
    args.extend(implicit.iter().map(|(_, p)| p.display().to_string()));
    let out = run(STORESCU, args).await;
    assert!(out.status.success(), "storescu -xi: {}", all_output(&out));
    scp.assert_stored(&implicit);
    for (inst, _) in &implicit {
        let rec = scp
            .store
            .get_instance(&inst.sop)
            .expect("get")
            .expect("rec");
        assert_eq!(rec.transfer_syntax, IMPLICIT_VR_LE);
    }
    assert_eq!(scp.store.figures().expect("figures").instances, 9);
}

#[actix_rt::test]
async fn many_small_files_from_a_scanned_directory() {
    let scp = Scp::start(|_| {});
    let src = tempfile::tempdir().expect("tempdir");
    let nested = src.path().join("a/b");
    std::fs::create_dir_all(&nested).expect("mkdir");
    // Tiny instances: storescu packs command and data set in one PDU.
    let mut files = study_files(src.path(), 1..=2, 20, 4, |_| EXPLICIT_VR_LE);
    files.extend(study_files(&nested, 3..=3, 20, 4, |_| IMPLICIT_VR_LE));
    let args = vec![
        "+sd".into(),
        "+r".into(),
        "-aec".into(),
        AE.into(),
        "127.0.0.1".into(),
        scp.port(),
        src.path().display().to_string(),
    ];
    let out = run(STORESCU, args).await;
    assert!(out.status.success(), "storescu: {}", all_output(&out));
    scp.assert_stored(&files);
    assert_eq!(scp.store.figures().expect("figures").instances, 60);
}

#[actix_rt::test]
async fn several_senders_at_once() {
    let scp = Scp::start(|_| {});
    let src = tempfile::tempdir().expect("tempdir");
    let files = study_files(src.path(), 1..=4, 8, 32, |_| EXPLICIT_VR_LE);
    let port = scp.port();
    let runs = files
        .chunks(8)
        .map(|chunk| storescu(AE, &port, chunk))
        .collect::<Vec<_>>();
    for out in futures_util::future::join_all(runs).await {
        assert!(out.status.success(), "storescu: {}", all_output(&out));
    }
    scp.assert_stored(&files);
    assert_eq!(scp.store.figures().expect("figures").instances, 32);
}

#[actix_rt::test]
async fn echoscu_verifies_and_the_called_ae_is_checked() {
    let scp = Scp::start(|_| {});
    let echo = |ae: &str| {
        run(
            ECHOSCU,
            vec!["-aec".into(), ae.into(), "127.0.0.1".into(), scp.port()],
        )
    };
    let out = echo(AE).await;
    assert!(out.status.success(), "echoscu: {}", all_output(&out));
    let out = echo("SOMEONE_ELSE").await;
    assert!(!out.status.success(), "a wrong called AE must be rejected");

    let src = tempfile::tempdir().expect("tempdir");
    let files = study_files(src.path(), 1..=1, 1, 8, |_| EXPLICIT_VR_LE);
    let out = storescu("SOMEONE_ELSE", &scp.port(), &files).await;
    assert!(!out.status.success(), "storescu: {}", all_output(&out));
    assert!(
        all_output(&out).contains("Called AE Title Not Recognized"),
        "{}",
        all_output(&out)
    );
    assert_eq!(scp.store.figures().expect("figures").instances, 0);

    let any = Scp::start(|s| s.accept_any_called_ae = true);
    let out = run(
        ECHOSCU,
        vec![
            "-aec".into(),
            "SOMEONE_ELSE".into(),
            "127.0.0.1".into(),
            any.port(),
        ],
    )
    .await;
    assert!(out.status.success(), "echoscu: {}", all_output(&out));
}

#[actix_rt::test]
async fn under_the_disk_floor_storescu_gets_out_of_resources() {
    let scp = Scp::start(|s| s.min_free = crate::disk::Floor::fixed(u64::MAX));
    let src = tempfile::tempdir().expect("tempdir");
    let files = study_files(src.path(), 1..=1, 2, 8, |_| EXPLICIT_VR_LE);
    let mut args = vec![
        "-v".into(),
        "-aec".into(),
        AE.into(),
        "127.0.0.1".into(),
        scp.port(),
    ];
    args.extend(files.iter().map(|(_, p)| p.display().to_string()));
    let out = run(STORESCU, args).await;
    let text = all_output(&out).to_lowercase();
    assert!(!out.status.success(), "storescu: {text}");
    assert!(text.contains("refused: outofresources"), "storescu: {text}");
    assert!(!scp.stored_path(&files[0].0).exists());
    assert_eq!(scp.store.figures().expect("figures").instances, 0);
    assert!(scp.incoming_is_empty());
}

#[actix_rt::test]
async fn a_duplicate_replaces_the_file_without_a_second_entry() {
    let scp = Scp::start(|_| {});
    let src = tempfile::tempdir().expect("tempdir");
    let files = study_files(src.path(), 1..=1, 1, 16, |_| EXPLICIT_VR_LE);
    let out = storescu(AE, &scp.port(), &files).await;
    assert!(out.status.success(), "storescu: {}", all_output(&out));

    // Same SOP Instance UID, other content.
    let mut again = files[0].0.clone();
    again.patient_id = "PAT-0043".into();
    let again_dir = tempfile::tempdir().expect("tempdir");
    let again_path = again.write(again_dir.path(), 16);
    let resent = vec![(again.clone(), again_path)];
    let out = storescu(AE, &scp.port(), &resent).await;
    assert!(out.status.success(), "storescu: {}", all_output(&out));

    scp.assert_stored(&resent);
    assert_eq!(scp.store.figures().expect("figures").instances, 1);
    let stored = OpenFileOptions::new()
        .open_file(scp.stored_path(&again))
        .expect("parses");
    assert_eq!(text(&stored, tags::PATIENT_ID), "PAT-0043");
}

// ---- raw dicom-ul client: exact statuses and misbehaving peers ----

fn client(addr: SocketAddr) -> ClientAssociation<TcpStream> {
    ClientAssociationOptions::new()
        .calling_ae_title("RAW-SCU")
        .called_ae_title(AE)
        .with_presentation_context(CT_IMAGE_STORAGE, vec![EXPLICIT_VR_LE])
        .connection_timeout(Duration::from_secs(5))
        .read_timeout(Duration::from_secs(10))
        .write_timeout(Duration::from_secs(10))
        .establish(addr)
        .expect("association")
}

fn explicit_dataset(obj: &InMemDicomObject) -> Vec<u8> {
    let mut bytes = Vec::new();
    obj.write_dataset_with_ts(
        &mut bytes,
        &dicom_transfer_syntax_registry::entries::EXPLICIT_VR_LITTLE_ENDIAN.erased(),
    )
    .expect("encode");
    bytes
}

/// Sends one C-STORE with command and data set packed in one PDU and
/// returns the response status.
fn store_packed(
    assoc: &mut ClientAssociation<TcpStream>,
    message_id: u16,
    sop: &str,
    data: Vec<u8>,
) -> u16 {
    let pc = assoc.presentation_contexts()[0].id;
    let command = dimse::c_store_rq(message_id, CT_IMAGE_STORAGE, sop).expect("command");
    assoc
        .send(&Pdu::PData {
            data: vec![
                PDataValue {
                    presentation_context_id: pc,
                    value_type: PDataValueType::Command,
                    is_last: true,
                    data: command,
                },
                PDataValue {
                    presentation_context_id: pc,
                    value_type: PDataValueType::Data,
                    is_last: true,
                    data,
                },
            ],
        })
        .expect("send");
    match assoc.receive().expect("response") {
        Pdu::PData { data } => {
            let bytes: Vec<u8> = data.into_iter().flat_map(|p| p.data).collect();
            let rsp = dimse::decode_response(&bytes).expect("decodes");
            assert_eq!(rsp.command_field, dimse::C_STORE_RSP);
            assert_eq!(rsp.responding_to, message_id);
            rsp.status
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[actix_rt::test]
async fn exact_statuses_for_good_and_bad_instances() {
    let scp = Scp::start(|_| {});
    let addr = scp.addr;
    let statuses = tokio::task::spawn_blocking(move || {
        let mut assoc = client(addr);
        let good = Instance::new(1, 1, EXPLICIT_VR_LE);
        let mut bad_uid = Instance::new(1, 2, EXPLICIT_VR_LE);
        bad_uid.series = "..".into();
        let mismatch = Instance::new(1, 3, EXPLICIT_VR_LE);
        let statuses = vec![
            store_packed(&mut assoc, 1, &good.sop, explicit_dataset(&good.dataset(8))),
            store_packed(&mut assoc, 2, "1.2.3.9", b"definitely not DICOM".to_vec()),
            store_packed(
                &mut assoc,
                3,
                &bad_uid.sop,
                explicit_dataset(&bad_uid.dataset(8)),
            ),
            store_packed(
                &mut assoc,
                4,
                "1.2.3.4",
                explicit_dataset(&mismatch.dataset(8)),
            ),
        ];
        assoc.release().expect("release");
        statuses
    })
    .await
    .expect("join");
    assert_eq!(statuses, vec![0x0000, 0xC000, 0xC001, 0xA900]);
    assert_eq!(scp.store.figures().expect("figures").instances, 1);
    assert!(scp.incoming_is_empty());
    assert!(!scp
        .dir
        .path()
        .join("storage/..")
        .join("1.2.3.9.dcm")
        .exists());
}

#[actix_rt::test]
async fn an_abort_mid_instance_leaves_no_temporary_file() {
    let scp = Scp::start(|_| {});
    let addr = scp.addr;
    tokio::task::spawn_blocking(move || {
        let mut assoc = client(addr);
        let pc = assoc.presentation_contexts()[0].id;
        let inst = Instance::new(1, 1, EXPLICIT_VR_LE);
        let data = explicit_dataset(&inst.dataset(64));
        let command = dimse::c_store_rq(1, CT_IMAGE_STORAGE, &inst.sop).expect("command");
        assoc
            .send(&Pdu::PData {
                data: vec![
                    PDataValue {
                        presentation_context_id: pc,
                        value_type: PDataValueType::Command,
                        is_last: true,
                        data: command,
                    },
                    PDataValue {
                        presentation_context_id: pc,
                        value_type: PDataValueType::Data,
                        is_last: false,
                        data: data[..data.len() / 2].to_vec(),
                    },
                ],
            })
            .expect("send");
        assoc.abort().expect("abort");
    })
    .await
    .expect("join");
    let deadline = Instant::now() + Duration::from_secs(5);
    while !scp.incoming_is_empty() && Instant::now() < deadline {
        actix_rt::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(scp.incoming_is_empty());
    assert_eq!(scp.store.figures().expect("figures").instances, 0);
}

#[actix_rt::test]
async fn a_malformed_pdu_aborts_only_its_association() {
    use std::io::Write;
    let scp = Scp::start(|_| {});
    let addr = scp.addr;
    let (reply, other) = tokio::task::spawn_blocking(move || {
        let mut bad = client(addr);
        let mut good = client(addr);
        // A P-DATA-TF whose PDV item claims 100 bytes in a PDU of 8.
        bad.inner_stream()
            .write_all(&[0x04, 0, 0, 0, 0, 8, 0, 0, 0, 100, 1, 3, 0, 0])
            .expect("write");
        let reply = bad.receive().ok();
        // The other association is served as if nothing happened.
        let inst = Instance::new(1, 1, EXPLICIT_VR_LE);
        let status = store_packed(&mut good, 1, &inst.sop, explicit_dataset(&inst.dataset(8)));
        good.release().expect("release");
        (reply, status)
    })
    .await
    .expect("join");
    assert!(
        matches!(reply, Some(Pdu::AbortRQ { .. })),
        "the malformed association is aborted, got {reply:?}"
    );
    assert_eq!(other, 0x0000);
    assert_eq!(scp.store.figures().expect("figures").instances, 1);
}

#[actix_rt::test]
async fn associations_beyond_the_cap_are_rejected_transiently() {
    let scp = Scp::start(|s| s.max_associations = 1);
    let addr = scp.addr;
    tokio::task::spawn_blocking(move || {
        let first = client(addr);
        let second = ClientAssociationOptions::new()
            .called_ae_title(AE)
            .with_abstract_syntax(dimse::VERIFICATION_SOP_CLASS)
            .read_timeout(Duration::from_secs(10))
            .establish(addr);
        match second {
            Err(dicom_ul::association::Error::Rejected { association_rj, .. }) => {
                assert_eq!(association_rj.result, AssociationRJResult::Transient);
            }
            other => panic!("expected a transient rejection, got {other:?}"),
        }
        first.release().expect("release");
    })
    .await
    .expect("join");
    // The slot is free again once the first association's thread ends.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let out = run(
            ECHOSCU,
            vec!["-aec".into(), AE.into(), "127.0.0.1".into(), scp.port()],
        )
        .await;
        if out.status.success() {
            break;
        }
        assert!(Instant::now() < deadline, "echoscu: {}", all_output(&out));
        actix_rt::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The data PDV of part of a data set.
fn data_pdv(pc: u8, data: &[u8], is_last: bool) -> Pdu {
    Pdu::PData {
        data: vec![PDataValue {
            presentation_context_id: pc,
            value_type: PDataValueType::Data,
            is_last,
            data: data.to_vec(),
        }],
    }
}

#[actix_rt::test]
async fn at_shutdown_the_instance_being_received_is_finished_and_every_association_closed() {
    let scp = Scp::start(|_| {});
    let addr = scp.addr;
    let inst = Instance::new(1, 1, EXPLICIT_VR_LE);
    let data = explicit_dataset(&inst.dataset(64));
    let (half_sent, half_sent_rx) = std::sync::mpsc::channel();
    let (go_on, go_on_rx) = std::sync::mpsc::channel::<()>();
    let sop = inst.sop.clone();
    // Mid-instance when the shutdown comes: command and half the data set sent.
    let busy = tokio::task::spawn_blocking(move || {
        let mut assoc = client(addr);
        let pc = assoc.presentation_contexts()[0].id;
        let command = dimse::c_store_rq(1, CT_IMAGE_STORAGE, &sop).expect("command");
        let (first, rest) = data.split_at(data.len() / 2);
        assoc
            .send(&dimse::command_pdu(pc, command))
            .expect("command");
        assoc.send(&data_pdv(pc, first, false)).expect("first half");
        half_sent.send(()).expect("test alive");
        go_on_rx.recv().expect("test alive");
        assoc.send(&data_pdv(pc, rest, true)).expect("second half");
        let status = match assoc.receive().expect("response") {
            Pdu::PData { data } => {
                let bytes: Vec<u8> = data.into_iter().flat_map(|p| p.data).collect();
                dimse::decode_response(&bytes).expect("decodes").status
            }
            other => panic!("expected the C-STORE response, got {other:?}"),
        };
        (status, assoc.receive().ok())
    });
    // Waiting for its next request when the shutdown comes.
    let (idle_up, idle_up_rx) = std::sync::mpsc::channel();
    let idle = tokio::task::spawn_blocking(move || {
        let mut assoc = client(addr);
        idle_up.send(()).expect("test alive");
        let started = Instant::now();
        (assoc.receive().ok(), started.elapsed())
    });
    tokio::task::spawn_blocking(move || {
        half_sent_rx.recv().expect("busy association up");
        idle_up_rx.recv().expect("idle association up");
    })
    .await
    .expect("join");
    // The SCP has taken the request (its temporary file exists): it is mid-instance.
    let deadline = Instant::now() + Duration::from_secs(5);
    while scp.incoming_is_empty() {
        assert!(Instant::now() < deadline, "the request was never taken");
        actix_rt::time::sleep(Duration::from_millis(2)).await;
    }

    let shutdown = actix_rt::spawn(scp._handle.mailbox.send(IngestShutdownRequested));
    let (closed, waited) = idle.await.expect("join");
    assert!(
        matches!(closed, Some(Pdu::AbortRQ { .. })),
        "the waiting association is closed with A-ABORT, got {closed:?}"
    );
    assert!(
        waited < Duration::from_secs(5),
        "closed at once, not at a timeout: {waited:?}"
    );
    assert!(
        !shutdown.is_finished(),
        "the shutdown waits for the instance being received"
    );
    go_on.send(()).expect("busy association alive");
    let (status, after) = busy.await.expect("join");
    assert_eq!(
        status, 0x0000,
        "the instance in flight is stored and answered"
    );
    assert!(
        matches!(after, Some(Pdu::AbortRQ { .. })),
        "then the association is closed with A-ABORT, got {after:?}"
    );
    actix_rt::time::timeout(Duration::from_secs(10), shutdown)
        .await
        .expect("the shutdown ends once every association has")
        .expect("join")
        .expect("delivered");
    let stored = OpenFileOptions::new()
        .open_file(scp.stored_path(&inst))
        .expect("the finished instance is on disk and parses");
    assert_eq!(text(&stored, tags::SOP_INSTANCE_UID), inst.sop);
    assert!(scp
        .store
        .get_instance(&inst.sop)
        .expect("catalog")
        .is_some());
    assert!(scp.incoming_is_empty());
}

// ---- measurement ----

/// 600 CT instances of ~512 KiB sent by stock dcmtk storescu (one
/// association) to this SCP and to dcmtk's storescp writing to disk.
/// `cargo test -p laminate-actors --release ingest::tests::throughput -- --ignored --nocapture`
#[actix_rt::test]
#[ignore = "measurement: ~1 min, prints MB/s"]
async fn throughput_against_storescp() {
    const COUNT: usize = 600;
    let src = tempfile::tempdir().expect("tempdir");
    let files: Vec<(Instance, PathBuf)> = (0..COUNT)
        .map(|i| {
            let inst = Instance::new(1 + (i / 100) as i32, i, EXPLICIT_VR_LE);
            let path = inst.write(src.path(), 512);
            (inst, path)
        })
        .collect();
    let total: u64 = files
        .iter()
        .map(|(_, p)| std::fs::metadata(p).expect("size").len())
        .sum();
    let mb = total as f64 / 1e6;

    let scp = Scp::start(|_| {});
    let started = Instant::now();
    let out = storescu(AE, &scp.port(), &files).await;
    let ours = started.elapsed();
    assert!(out.status.success(), "storescu: {}", all_output(&out));
    assert_eq!(
        scp.store.figures().expect("figures").instances,
        COUNT as u64
    );

    let out_dir = tempfile::tempdir().expect("tempdir");
    let port = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").expect("probe");
        probe.local_addr().expect("addr").port()
    };
    let mut storescp = Command::new(STORESCP)
        .args([
            "-od",
            &out_dir.path().display().to_string(),
            "-aet",
            AE,
            &port.to_string(),
        ])
        .spawn()
        .expect("storescp");
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "storescp did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    let started = Instant::now();
    let out = storescu(AE, &port.to_string(), &files).await;
    let theirs = started.elapsed();
    let _ = storescp.kill();
    let _ = storescp.wait();
    assert!(
        out.status.success(),
        "storescu → storescp: {}",
        all_output(&out)
    );

    let ours_mbs = mb / ours.as_secs_f64();
    let theirs_mbs = mb / theirs.as_secs_f64();
    println!(
        "{COUNT} instances, {mb:.1} MB, 1 association, stock storescu:\n  \
         laminate ingest (fsync + catalog): {ours:?} = {ours_mbs:.1} MB/s\n  \
         dcmtk storescp -od:                {theirs:?} = {theirs_mbs:.1} MB/s\n  \
         ratio: {:.1}x",
        ours_mbs / theirs_mbs
    );
}
