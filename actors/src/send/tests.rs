//! The sender against real peers started here on free loopback ports: dcmtk
//! `storescp` in its various modes, and a small dicom-ul SCP that answers
//! chosen statuses.

use std::collections::{BTreeMap, BTreeSet};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use dicom_core::value::PixelFragmentSequence;
use dicom_core::{DataElement, PrimitiveValue, VR};
use dicom_dictionary_std::{tags, uids};
use dicom_object::{FileMetaTableBuilder, InMemDicomObject, OpenFileOptions};
use dicom_transfer_syntax_registry::entries::IMPLICIT_VR_LITTLE_ENDIAN;
use dicom_ul::association::server::ServerAssociationOptions;
use dicom_ul::pdu::{PDataValueType, Pdu};

use super::*;
use crate::dimse::{self, EXPLICIT_VR_LE, IMPLICIT_VR_LE};

const JPEG_BASELINE: &str = "1.2.840.10008.1.2.4.50";
const CT: &str = uids::CT_IMAGE_STORAGE;

// ---------------------------------------------------------------- fixtures

pub(super) fn new_uid() -> String {
    format!("2.25.{}", rand::random::<u128>())
}

/// A generated instance on disk.
pub(super) struct Fixture {
    pub(super) path: PathBuf,
    pub(super) uid: String,
    pub(super) ts: String,
}

/// Writes a small image of `class` in `ts` (encapsulated fake JPEG data for
/// encapsulated syntaxes); `meta_uid` overrides the meta group's instance UID.
pub(super) fn write_instance(
    dir: &Path,
    class: &str,
    ts: &str,
    side: u16,
    meta_uid: Option<&str>,
) -> Fixture {
    let uid = new_uid();
    let encapsulated = ts == JPEG_BASELINE;
    let mut obj = InMemDicomObject::from_element_iter([
        DataElement::new(tags::SOP_CLASS_UID, VR::UI, PrimitiveValue::from(class)),
        DataElement::new(
            tags::SOP_INSTANCE_UID,
            VR::UI,
            PrimitiveValue::from(uid.as_str()),
        ),
        DataElement::new(
            tags::PATIENT_NAME,
            VR::PN,
            PrimitiveValue::from("Send^Test"),
        ),
        DataElement::new(tags::PATIENT_ID, VR::LO, PrimitiveValue::from("SEND-1")),
        DataElement::new(
            tags::STUDY_INSTANCE_UID,
            VR::UI,
            PrimitiveValue::from("2.25.1111"),
        ),
        DataElement::new(
            tags::SERIES_INSTANCE_UID,
            VR::UI,
            PrimitiveValue::from("2.25.2222"),
        ),
        DataElement::new(tags::MODALITY, VR::CS, PrimitiveValue::from("CT")),
    ]);
    if side > 0 {
        let bits: u16 = if encapsulated { 8 } else { 16 };
        for (tag, vr, v) in [
            (tags::SAMPLES_PER_PIXEL, VR::US, PrimitiveValue::from(1_u16)),
            (
                tags::PHOTOMETRIC_INTERPRETATION,
                VR::CS,
                PrimitiveValue::from("MONOCHROME2"),
            ),
            (tags::ROWS, VR::US, PrimitiveValue::from(side)),
            (tags::COLUMNS, VR::US, PrimitiveValue::from(side)),
            (tags::BITS_ALLOCATED, VR::US, PrimitiveValue::from(bits)),
            (tags::BITS_STORED, VR::US, PrimitiveValue::from(bits)),
            (tags::HIGH_BIT, VR::US, PrimitiveValue::from(bits - 1)),
            (
                tags::PIXEL_REPRESENTATION,
                VR::US,
                PrimitiveValue::from(0_u16),
            ),
        ] {
            obj.put(DataElement::new(tag, vr, v));
        }
        if encapsulated {
            let mut fake_jpeg = vec![0xFF, 0xD8, 0xFF, 0xE0];
            fake_jpeg.extend((0..1000_u32).map(|i| (i % 200) as u8));
            fake_jpeg.extend([0xFF, 0xD9]);
            obj.put(DataElement::new(
                tags::PIXEL_DATA,
                VR::OB,
                PixelFragmentSequence::new(Vec::<u32>::new(), vec![fake_jpeg]),
            ));
        } else {
            let n = side as usize * side as usize * 2;
            let pixels: Vec<u8> = (0..n).map(|i| (i * 7 % 256) as u8).collect();
            obj.put(DataElement::new(
                tags::PIXEL_DATA,
                VR::OW,
                PrimitiveValue::from(pixels),
            ));
        }
    }
    let meta = FileMetaTableBuilder::new()
        .transfer_syntax(ts)
        .media_storage_sop_class_uid(class)
        .media_storage_sop_instance_uid(meta_uid.unwrap_or(&uid))
        .build()
        .expect("meta");
    let path = dir.join(format!("{uid}.dcm"));
    obj.with_exact_meta(meta)
        .write_to_file(&path)
        .expect("write file");
    Fixture {
        path,
        uid,
        ts: ts.to_string(),
    }
}

pub(super) fn items_of(fixtures: &[Fixture]) -> Vec<Item> {
    fixtures
        .iter()
        .map(|f| Item::from_file(&f.path).expect("item"))
        .collect()
}

pub(super) fn uids_of(fixtures: &[Fixture]) -> BTreeSet<String> {
    fixtures.iter().map(|f| f.uid.clone()).collect()
}

// ---------------------------------------------------------------- peers

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// A dcmtk `storescp` child on a free loopback port, killed on drop.
struct StoreScp {
    child: Child,
    port: u16,
    out: tempfile::TempDir,
    log: PathBuf,
    _logdir: tempfile::TempDir,
}

impl StoreScp {
    fn start(args: &[&str]) -> StoreScp {
        let out = tempfile::tempdir().expect("tempdir");
        let logdir = tempfile::tempdir().expect("tempdir");
        let log = logdir.path().join("storescp.log");
        let log_file = std::fs::File::create(&log).expect("log");
        let port = free_port();
        let child = Command::new("storescp")
            .args(args)
            .args(["-v", "-aet", "STORESCP", "-od"])
            .arg(out.path())
            .arg(port.to_string())
            .stdout(Stdio::from(log_file.try_clone().expect("clone")))
            .stderr(Stdio::from(log_file))
            .spawn()
            .expect("storescp runs (dcmtk installed?)");
        let scp = StoreScp {
            child,
            port,
            out,
            log,
            _logdir: logdir,
        };
        scp.wait_listening();
        scp
    }

    /// Waits until the port is in LISTEN state, without connecting to it
    /// (a probe connection would show up as an association attempt).
    fn wait_listening(&self) {
        let needle = format!(":{:04X} 00000000:0000 0A", self.port);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            let tcp = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
            if tcp.contains(&needle) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("storescp did not listen on {}", self.port);
    }

    fn target(&self, max_associations: u32) -> Target {
        Target {
            node_id: "node-1".into(),
            host: "127.0.0.1".into(),
            port: self.port,
            called_ae: "STORESCP".into(),
            calling_ae: "LAMINATE".into(),
            max_associations,
            tls: None,
            prefer_ts: None,
        }
    }

    /// SOP Instance UID → transfer syntax of every file storescp wrote.
    fn received(&self) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        for entry in std::fs::read_dir(self.out.path()).expect("read dir") {
            let path = entry.expect("entry").path();
            let obj = OpenFileOptions::new()
                .read_until(tags::PIXEL_DATA)
                .open_file(&path)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            let uid = obj
                .element(tags::SOP_INSTANCE_UID)
                .expect("uid")
                .to_str()
                .expect("str")
                .trim_end_matches('\0')
                .to_string();
            out.insert(uid, obj.meta().transfer_syntax().to_string());
        }
        out
    }

    fn file_of(&self, uid: &str) -> PathBuf {
        std::fs::read_dir(self.out.path())
            .expect("dir")
            .map(|e| e.expect("entry").path())
            .find(|p| p.to_string_lossy().ends_with(uid))
            .expect("received file")
    }

    fn log_count(&self, needle: &str) -> usize {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .matches(needle)
            .count()
    }
}

impl Drop for StoreScp {
    fn drop(&mut self) {
        // Our own child, by its handle.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(super) fn options() -> SendOptions {
    SendOptions {
        connect_timeout: Duration::from_secs(5),
        io_timeout: Duration::from_secs(10),
        max_pdu: DEFAULT_MAX_PDU,
    }
}

/// Collects the events of a batch.
#[derive(Default)]
pub(super) struct Events {
    acks: Mutex<Vec<(String, ItemOutcome)>>,
    transients: Mutex<Vec<String>>,
}

impl Events {
    pub(super) fn record(&self, event: SendEvent) {
        match event {
            SendEvent::Acknowledged {
                sop_instance_uid,
                outcome,
                ..
            } => self
                .acks
                .lock()
                .expect("lock")
                .push((sop_instance_uid, outcome)),
            SendEvent::Transient { error } => self.transients.lock().expect("lock").push(error),
        }
    }

    pub(super) fn acks(&self) -> Vec<(String, ItemOutcome)> {
        self.acks.lock().expect("lock").clone()
    }

    pub(super) fn stored(&self) -> BTreeSet<String> {
        self.acks()
            .into_iter()
            .filter(|(_, o)| matches!(o, ItemOutcome::Stored { .. }))
            .map(|(u, _)| u)
            .collect()
    }
}

fn send(target: &Target, items: Vec<Item>, cancel: &AtomicBool, events: &Events) -> BatchOutcome {
    send_batch(target, items, &options(), cancel, &|e| events.record(e))
}

// ---------------------------------------------------------------- storescp

#[test]
fn one_association_delivers_every_instance_and_is_reused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fixtures: Vec<Fixture> = (0..12)
        .map(|i| {
            let ts = if i % 2 == 0 {
                EXPLICIT_VR_LE
            } else {
                IMPLICIT_VR_LE
            };
            write_instance(dir.path(), CT, ts, 64, None)
        })
        .collect();
    let scp = StoreScp::start(&["+xa"]);
    let events = Events::default();
    let outcome = send(
        &scp.target(1),
        items_of(&fixtures),
        &AtomicBool::new(false),
        &events,
    );

    assert_eq!(outcome.remaining, vec![]);
    assert_eq!(outcome.transient_error, None);
    assert_eq!(outcome.associations, 1);
    assert_eq!(scp.log_count("Association Received"), 1);
    let acks = events.acks();
    assert_eq!(acks.len(), 12);
    assert!(acks
        .iter()
        .all(|(_, o)| *o == ItemOutcome::Stored { status: 0 }));
    let received = scp.received();
    assert_eq!(
        received.keys().cloned().collect::<BTreeSet<_>>(),
        uids_of(&fixtures)
    );
    // Each went in its own syntax: nothing converted.
    for f in &fixtures {
        assert_eq!(received[&f.uid], f.ts);
    }
}

/// Stock storescp writes each C-STORE-RSP in two small writes with Nagle on:
/// a sender that delays its ACK waits ~40 ms per instance (40 instances would
/// take over 1.6 s). Quick ACKs keep it far below.
#[test]
fn no_delayed_ack_stall_against_a_stock_receiver() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fixtures: Vec<Fixture> = (0..40)
        .map(|_| write_instance(dir.path(), CT, EXPLICIT_VR_LE, 64, None))
        .collect();
    let items = items_of(&fixtures);
    let scp = StoreScp::start(&["--ignore"]);
    let events = Events::default();
    let started = Instant::now();
    let outcome = send(&scp.target(1), items, &AtomicBool::new(false), &events);
    let took = started.elapsed();
    assert_eq!(outcome.remaining, vec![]);
    assert_eq!(events.stored().len(), 40);
    assert!(
        took < Duration::from_millis(1000),
        "40 instances took {took:?}"
    );
}

#[test]
fn four_associations_deliver_exactly_the_set() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fixtures: Vec<Fixture> = (0..40)
        .map(|_| write_instance(dir.path(), CT, EXPLICIT_VR_LE, 128, None))
        .collect();
    let scp = StoreScp::start(&["+xa", "--fork"]);
    let events = Events::default();
    let outcome = send(
        &scp.target(4),
        items_of(&fixtures),
        &AtomicBool::new(false),
        &events,
    );

    assert_eq!(outcome.remaining, vec![]);
    assert_eq!(outcome.transient_error, None);
    assert_eq!(outcome.associations, 4);
    let acks = events.acks();
    assert_eq!(acks.len(), 40, "each instance acknowledged once");
    assert_eq!(events.stored(), uids_of(&fixtures));
    assert_eq!(
        scp.received().keys().cloned().collect::<BTreeSet<_>>(),
        uids_of(&fixtures)
    );
}

#[test]
fn implicit_only_node_gets_converted_instances_and_the_jpeg_fails_alone() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut fixtures: Vec<Fixture> = (0..3)
        .map(|_| write_instance(dir.path(), CT, EXPLICIT_VR_LE, 64, None))
        .collect();
    fixtures.extend((0..2).map(|_| write_instance(dir.path(), CT, IMPLICIT_VR_LE, 64, None)));
    let jpeg = write_instance(dir.path(), CT, JPEG_BASELINE, 32, None);
    let mut items = items_of(&fixtures);
    items.insert(2, Item::from_file(&jpeg.path).expect("item"));

    let scp = StoreScp::start(&["+xi"]);
    let events = Events::default();
    let outcome = send(&scp.target(1), items, &AtomicBool::new(false), &events);

    assert_eq!(outcome.remaining, vec![]);
    assert_eq!(outcome.transient_error, None);
    assert_eq!(events.stored(), uids_of(&fixtures));
    let failed: Vec<_> = events
        .acks()
        .into_iter()
        .filter(|(_, o)| matches!(o, ItemOutcome::Failed { .. }))
        .collect();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].0, jpeg.uid);
    match &failed[0].1 {
        ItemOutcome::Failed {
            status: None,
            error,
        } => {
            assert!(error.contains(JPEG_BASELINE), "{error}");
            // Its fake JPEG stream cannot be decoded for the native node.
            assert!(error.contains("cannot decode"), "{error}");
        }
        other => panic!("{other:?}"),
    }
    let received = scp.received();
    assert_eq!(
        received.keys().cloned().collect::<BTreeSet<_>>(),
        uids_of(&fixtures)
    );
    assert!(received.values().all(|ts| ts == IMPLICIT_VR_LE));
    // A converted instance kept its content.
    let original = dicom_object::open_file(&fixtures[0].path).expect("original");
    let arrived = dicom_object::open_file(scp.file_of(&fixtures[0].uid)).expect("arrived");
    for tag in [tags::PIXEL_DATA, tags::PATIENT_ID, tags::ROWS] {
        assert_eq!(
            original.element(tag).expect("o").to_bytes().expect("o"),
            arrived.element(tag).expect("a").to_bytes().expect("a"),
        );
    }
}

#[test]
fn accept_all_node_gets_the_jpeg_as_it_is() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fixtures = vec![
        write_instance(dir.path(), CT, JPEG_BASELINE, 32, None),
        write_instance(dir.path(), CT, EXPLICIT_VR_LE, 32, None),
    ];
    let scp = StoreScp::start(&["+xa"]);
    let events = Events::default();
    let outcome = send(
        &scp.target(2),
        items_of(&fixtures),
        &AtomicBool::new(false),
        &events,
    );
    assert_eq!(outcome.remaining, vec![]);
    assert_eq!(events.stored(), uids_of(&fixtures));
    let received = scp.received();
    assert_eq!(received[&fixtures[0].uid], JPEG_BASELINE);
    let original = dicom_object::open_file(&fixtures[0].path).expect("original");
    let arrived = dicom_object::open_file(scp.file_of(&fixtures[0].uid)).expect("arrived");
    let frags = |o: &dicom_object::DefaultDicomObject| {
        o.element(tags::PIXEL_DATA)
            .expect("pixels")
            .fragments()
            .expect("encapsulated")
            .to_vec()
    };
    assert_eq!(frags(&original), frags(&arrived));
}

#[test]
fn node_down_is_transient_at_once_with_every_item_remaining() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fixtures: Vec<Fixture> = (0..5)
        .map(|_| write_instance(dir.path(), CT, EXPLICIT_VR_LE, 16, None))
        .collect();
    let target = Target {
        node_id: "down".into(),
        host: "127.0.0.1".into(),
        port: free_port(),
        called_ae: "NOBODY".into(),
        calling_ae: "LAMINATE".into(),
        max_associations: 4,
        tls: None,
        prefer_ts: None,
    };
    let items = items_of(&fixtures);
    let events = Events::default();
    let started = Instant::now();
    let outcome = send(&target, items.clone(), &AtomicBool::new(false), &events);
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(outcome.associations, 0);
    let error = outcome.transient_error.expect("transient");
    assert!(error.contains("cannot associate"), "{error}");
    let left: BTreeSet<_> = outcome
        .remaining
        .iter()
        .map(|i| i.sop_instance_uid.clone())
        .collect();
    assert_eq!(left, uids_of(&fixtures));
    assert!(events.acks().is_empty());
}

#[test]
fn cancel_stops_after_the_in_flight_instance() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fixtures: Vec<Fixture> = (0..30)
        .map(|_| write_instance(dir.path(), CT, EXPLICIT_VR_LE, 32, None))
        .collect();
    let scp = StoreScp::start(&["+xa"]);
    let cancel = AtomicBool::new(false);
    let events = Events::default();
    let count = AtomicUsize::new(0);
    let outcome = send_batch(
        &scp.target(1),
        items_of(&fixtures),
        &options(),
        &cancel,
        &|e| {
            events.record(e);
            if count.fetch_add(1, Ordering::SeqCst) + 1 == 5 {
                cancel.store(true, Ordering::SeqCst);
            }
        },
    );
    assert_eq!(outcome.transient_error, None);
    assert_eq!(events.acks().len(), 5);
    assert_eq!(outcome.remaining.len(), 25);
    let acked = events.stored();
    let left: BTreeSet<_> = outcome
        .remaining
        .iter()
        .map(|i| i.sop_instance_uid.clone())
        .collect();
    assert!(acked.is_disjoint(&left));
    assert_eq!(&acked | &left, uids_of(&fixtures));
    assert_eq!(
        scp.received().keys().cloned().collect::<BTreeSet<_>>(),
        acked
    );
}

/// 70 SOP classes in two syntaxes need 210 contexts: two associations.
/// (dcmtk 3.6.7's storescp refuses the Defined Procedure Protocol and
/// Protocol Approval classes even with `-pm`: they are not in this list.)
const SEVENTY_CLASSES: [&str; 70] = [
    uids::CT_IMAGE_STORAGE,
    uids::ENHANCED_CT_IMAGE_STORAGE,
    uids::LEGACY_CONVERTED_ENHANCED_CT_IMAGE_STORAGE,
    uids::MR_IMAGE_STORAGE,
    uids::ENHANCED_MR_IMAGE_STORAGE,
    uids::MR_SPECTROSCOPY_STORAGE,
    uids::ENHANCED_MR_COLOR_IMAGE_STORAGE,
    uids::LEGACY_CONVERTED_ENHANCED_MR_IMAGE_STORAGE,
    uids::COMPUTED_RADIOGRAPHY_IMAGE_STORAGE,
    uids::ENCAPSULATED_PDF_STORAGE,
    uids::ENCAPSULATED_CDA_STORAGE,
    uids::ENCAPSULATED_STL_STORAGE,
    uids::ENCAPSULATED_OBJ_STORAGE,
    uids::ENCAPSULATED_MTL_STORAGE,
    uids::GRAYSCALE_SOFTCOPY_PRESENTATION_STATE_STORAGE,
    uids::SEGMENTED_VOLUME_RENDERING_VOLUMETRIC_PRESENTATION_STATE_STORAGE,
    uids::MULTIPLE_VOLUME_RENDERING_VOLUMETRIC_PRESENTATION_STATE_STORAGE,
    uids::VARIABLE_MODALITY_LUT_SOFTCOPY_PRESENTATION_STATE_STORAGE,
    uids::COLOR_SOFTCOPY_PRESENTATION_STATE_STORAGE,
    uids::PSEUDO_COLOR_SOFTCOPY_PRESENTATION_STATE_STORAGE,
    uids::BLENDING_SOFTCOPY_PRESENTATION_STATE_STORAGE,
    uids::XAXRF_GRAYSCALE_SOFTCOPY_PRESENTATION_STATE_STORAGE,
    uids::GRAYSCALE_PLANAR_MPR_VOLUMETRIC_PRESENTATION_STATE_STORAGE,
    uids::COMPOSITING_PLANAR_MPR_VOLUMETRIC_PRESENTATION_STATE_STORAGE,
    uids::ADVANCED_BLENDING_PRESENTATION_STATE_STORAGE,
    uids::VOLUME_RENDERING_VOLUMETRIC_PRESENTATION_STATE_STORAGE,
    uids::X_RAY_ANGIOGRAPHIC_IMAGE_STORAGE,
    uids::ENHANCED_XA_IMAGE_STORAGE,
    uids::X_RAY_RADIOFLUOROSCOPIC_IMAGE_STORAGE,
    uids::ENHANCED_XRF_IMAGE_STORAGE,
    uids::POSITRON_EMISSION_TOMOGRAPHY_IMAGE_STORAGE,
    uids::LEGACY_CONVERTED_ENHANCED_PET_IMAGE_STORAGE,
    uids::X_RAY3_D_ANGIOGRAPHIC_IMAGE_STORAGE,
    uids::X_RAY3_D_CRANIOFACIAL_IMAGE_STORAGE,
    uids::BREAST_TOMOSYNTHESIS_IMAGE_STORAGE,
    uids::ENHANCED_PET_IMAGE_STORAGE,
    uids::BASIC_STRUCTURED_DISPLAY_STORAGE,
    uids::NUCLEAR_MEDICINE_IMAGE_STORAGE,
    uids::SECONDARY_CAPTURE_IMAGE_STORAGE,
    uids::CT_PERFORMED_PROCEDURE_PROTOCOL_STORAGE,
    uids::ULTRASOUND_IMAGE_STORAGE,
    uids::DIGITAL_X_RAY_IMAGE_STORAGE_FOR_PRESENTATION,
    uids::XA_PERFORMED_PROCEDURE_PROTOCOL_STORAGE,
    uids::INVENTORY_STORAGE,
    uids::ULTRASOUND_MULTI_FRAME_IMAGE_STORAGE,
    uids::PARAMETRIC_MAP_STORAGE,
    uids::RT_IMAGE_STORAGE,
    uids::RT_PHYSICIAN_INTENT_STORAGE,
    uids::RT_SEGMENT_ANNOTATION_STORAGE,
    uids::RT_RADIATION_SET_STORAGE,
    uids::C_ARM_PHOTON_ELECTRON_RADIATION_STORAGE,
    uids::TOMOTHERAPEUTIC_RADIATION_STORAGE,
    uids::ROBOTIC_ARM_RADIATION_STORAGE,
    uids::RT_RADIATION_RECORD_SET_STORAGE,
    uids::RT_RADIATION_SALVAGE_RECORD_STORAGE,
    uids::TOMOTHERAPEUTIC_RADIATION_RECORD_STORAGE,
    uids::C_ARM_PHOTON_ELECTRON_RADIATION_RECORD_STORAGE,
    uids::RT_DOSE_STORAGE,
    uids::ROBOTIC_RADIATION_RECORD_STORAGE,
    uids::RT_RADIATION_SET_DELIVERY_INSTRUCTION_STORAGE,
    uids::RT_TREATMENT_PREPARATION_STORAGE,
    uids::ENHANCED_RT_IMAGE_STORAGE,
    uids::ENHANCED_CONTINUOUS_RT_IMAGE_STORAGE,
    uids::RT_PATIENT_POSITION_ACQUISITION_INSTRUCTION_STORAGE,
    uids::RT_STRUCTURE_SET_STORAGE,
    uids::RT_BEAMS_TREATMENT_RECORD_STORAGE,
    uids::RT_PLAN_STORAGE,
    uids::RT_BRACHY_TREATMENT_RECORD_STORAGE,
    uids::RT_TREATMENT_SUMMARY_RECORD_STORAGE,
    uids::RT_ION_PLAN_STORAGE,
];

#[test]
fn more_than_128_contexts_go_over_several_associations() {
    let dir = tempfile::tempdir().expect("tempdir");
    let classes: BTreeSet<&str> = SEVENTY_CLASSES.iter().copied().collect();
    assert_eq!(classes.len(), 70);
    let fixtures: Vec<Fixture> = SEVENTY_CLASSES
        .iter()
        .flat_map(|class| {
            [EXPLICIT_VR_LE, IMPLICIT_VR_LE]
                .map(|ts| write_instance(dir.path(), class, ts, 0, None))
        })
        .collect();
    let scp = StoreScp::start(&["+xa", "-pm"]);
    let events = Events::default();
    let outcome = send(
        &scp.target(1),
        items_of(&fixtures),
        &AtomicBool::new(false),
        &events,
    );
    assert_eq!(outcome.remaining, vec![]);
    assert_eq!(outcome.transient_error, None);
    assert_eq!(outcome.associations, 2);
    let failed: Vec<_> = events
        .acks()
        .into_iter()
        .filter(|(_, o)| !matches!(o, ItemOutcome::Stored { .. }))
        .collect();
    assert_eq!(failed, vec![]);
    assert_eq!(events.stored(), uids_of(&fixtures));
    assert_eq!(scp.received().len(), 140);
}

#[test]
fn the_dataset_uid_is_sent_when_the_meta_disagrees() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fixture = write_instance(dir.path(), CT, EXPLICIT_VR_LE, 16, Some("1.2.3.999"));
    let item = Item::from_file(&fixture.path).expect("item");
    assert_eq!(item.sop_instance_uid, fixture.uid);
    assert_eq!(item.sop_class_uid, CT);
    assert_eq!(item.transfer_syntax, EXPLICIT_VR_LE);
    // The dataset starts with its first element, (0008,0016) here.
    let bytes = std::fs::read(&fixture.path).expect("read");
    let at = item.dataset_offset as usize;
    assert_eq!(&bytes[at..at + 4], &[0x08, 0x00, 0x16, 0x00]);

    let scp = StoreScp::start(&["+xa"]);
    let events = Events::default();
    let outcome = send(&scp.target(1), vec![item], &AtomicBool::new(false), &events);
    assert_eq!(outcome.remaining, vec![]);
    assert_eq!(events.stored(), BTreeSet::from([fixture.uid.clone()]));
    assert!(scp.received().contains_key(&fixture.uid));
}

#[test]
fn a_node_aborting_every_instance_is_an_outage_and_nothing_acknowledged_is_returned() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fixtures: Vec<Fixture> = (0..4)
        .map(|_| write_instance(dir.path(), CT, EXPLICIT_VR_LE, 32, None))
        .collect();
    let scp = StoreScp::start(&["+xa", "--abort-after"]);
    let events = Events::default();
    let outcome = send(
        &scp.target(1),
        items_of(&fixtures),
        &AtomicBool::new(false),
        &events,
    );
    let error = outcome.transient_error.expect("transient");
    assert!(error.contains("no C-STORE response"), "{error}");
    // Two different instances aborted in a row: the node's doing, not theirs.
    assert_eq!(outcome.remaining.len(), 4);
    let remaining: BTreeSet<String> = outcome
        .remaining
        .iter()
        .map(|i| i.sop_instance_uid.clone())
        .collect();
    assert_eq!(remaining, uids_of(&fixtures));
    assert!(events.acks().is_empty());
    assert_eq!(events.transients.lock().expect("lock").len(), 1);
}

#[test]
fn a_permanent_rejection_fails_every_item_with_the_reason() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fixtures: Vec<Fixture> = (0..3)
        .map(|_| write_instance(dir.path(), CT, EXPLICIT_VR_LE, 16, None))
        .collect();
    let scp = StoreScp::start(&["+xa", "--refuse"]);
    let events = Events::default();
    let outcome = send(
        &scp.target(2),
        items_of(&fixtures),
        &AtomicBool::new(false),
        &events,
    );
    assert_eq!(outcome.remaining, vec![]);
    assert_eq!(outcome.transient_error, None);
    let acks = events.acks();
    assert_eq!(acks.len(), 3);
    for (_, o) in acks {
        match o {
            ItemOutcome::Failed {
                status: None,
                error,
            } => assert!(error.contains("rejected permanently"), "{error}"),
            other => panic!("{other:?}"),
        }
    }
}

// ---------------------------------------------------------------- status SCP

/// One association to the [`status_scp`] on `port` (it accepts any called AE).
pub(super) fn status_target(port: u16) -> Target {
    Target {
        node_id: "status".into(),
        host: "127.0.0.1".into(),
        port,
        called_ae: "ANY-SCP".into(),
        calling_ae: "LAMINATE".into(),
        max_associations: 1,
        tls: None,
        prefer_ts: None,
    }
}

/// A one-association SCP answering `statuses[i]` to the i-th C-STORE.
fn status_scp(statuses: Vec<u16>) -> (u16, std::thread::JoinHandle<Vec<String>>) {
    let (port, handle, _) = counting_status_scp(statuses);
    (port, handle)
}

/// [`status_scp`], also counting the instances it received whole (their last
/// fragment arrived).
fn counting_status_scp(
    statuses: Vec<u16>,
) -> (
    u16,
    std::thread::JoinHandle<Vec<String>>,
    std::sync::Arc<AtomicUsize>,
) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let complete = std::sync::Arc::new(AtomicUsize::new(0));
    let counter = complete.clone();
    let handle = std::thread::spawn(move || {
        let (stream, _) = listener.accept().expect("accept");
        let mut assoc = ServerAssociationOptions::new()
            .promiscuous(true)
            .with_abstract_syntax(CT)
            .with_transfer_syntax(EXPLICIT_VR_LE)
            .with_transfer_syntax(IMPLICIT_VR_LE)
            .max_pdu_length(16384)
            .read_timeout(Duration::from_secs(10))
            .establish(stream)
            .expect("association");
        let mut received = Vec::new();
        let mut current: Option<(u8, u16, String)> = None;
        loop {
            match assoc.receive() {
                Ok(Pdu::PData { data }) => {
                    for pdv in data {
                        if pdv.value_type == PDataValueType::Command {
                            let cmd = InMemDicomObject::read_dataset_with_ts(
                                &pdv.data[..],
                                &IMPLICIT_VR_LITTLE_ENDIAN.erased(),
                            )
                            .expect("command");
                            let id = cmd
                                .element(tags::MESSAGE_ID)
                                .expect("id")
                                .to_int::<u16>()
                                .expect("id");
                            let uid = cmd
                                .element(tags::AFFECTED_SOP_INSTANCE_UID)
                                .expect("uid")
                                .to_str()
                                .expect("uid")
                                .trim_end_matches('\0')
                                .to_string();
                            current = Some((pdv.presentation_context_id, id, uid));
                        } else if pdv.is_last {
                            let (pc, id, uid) = current.take().expect("command first");
                            let status = statuses[received.len()];
                            received.push(uid.clone());
                            counter.fetch_add(1, Ordering::SeqCst);
                            let rsp = dimse::encode_command(vec![
                                DataElement::new(
                                    tags::AFFECTED_SOP_CLASS_UID,
                                    VR::UI,
                                    PrimitiveValue::from(CT),
                                ),
                                DataElement::new(
                                    tags::COMMAND_FIELD,
                                    VR::US,
                                    PrimitiveValue::from(dimse::C_STORE_RSP),
                                ),
                                DataElement::new(
                                    tags::MESSAGE_ID_BEING_RESPONDED_TO,
                                    VR::US,
                                    PrimitiveValue::from(id),
                                ),
                                DataElement::new(
                                    tags::COMMAND_DATA_SET_TYPE,
                                    VR::US,
                                    PrimitiveValue::from(dimse::NO_DATA_SET),
                                ),
                                DataElement::new(
                                    tags::STATUS,
                                    VR::US,
                                    PrimitiveValue::from(status),
                                ),
                                DataElement::new(
                                    tags::AFFECTED_SOP_INSTANCE_UID,
                                    VR::UI,
                                    PrimitiveValue::from(uid.as_str()),
                                ),
                            ])
                            .expect("rsp");
                            assoc.send(&dimse::command_pdu(pc, rsp)).expect("send rsp");
                        }
                    }
                }
                Ok(Pdu::ReleaseRQ) => {
                    let _ = assoc.send(&Pdu::ReleaseRP);
                    break;
                }
                _ => break,
            }
        }
        received
    });
    (port, handle, complete)
}

#[test]
fn statuses_decide_per_instance_and_out_of_resources_stops_the_batch() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Big enough to need many 16 KiB fragments.
    let fixtures: Vec<Fixture> = (0..6)
        .map(|_| write_instance(dir.path(), CT, EXPLICIT_VR_LE, 200, None))
        .collect();
    let (port, scp) = status_scp(vec![0x0000, 0xC000, 0xB000, 0xA700]);
    let target = status_target(port);
    let events = Events::default();
    let outcome = send(
        &target,
        items_of(&fixtures),
        &AtomicBool::new(false),
        &events,
    );
    let seen = scp.join().expect("scp");
    assert_eq!(
        seen,
        fixtures[..4]
            .iter()
            .map(|f| f.uid.clone())
            .collect::<Vec<_>>()
    );
    let acks = events.acks();
    assert_eq!(acks.len(), 3);
    assert_eq!(
        acks[0],
        (fixtures[0].uid.clone(), ItemOutcome::Stored { status: 0 })
    );
    assert!(matches!(
        &acks[1].1,
        ItemOutcome::Failed {
            status: Some(0xC000),
            ..
        }
    ));
    assert_eq!(
        acks[2],
        (
            fixtures[2].uid.clone(),
            ItemOutcome::Stored { status: 0xB000 }
        )
    );
    let error = outcome.transient_error.expect("transient");
    assert!(error.contains("0xA700"), "{error}");
    let left: Vec<_> = outcome
        .remaining
        .iter()
        .map(|i| i.sop_instance_uid.clone())
        .collect();
    assert_eq!(
        left,
        fixtures[3..]
            .iter()
            .map(|f| f.uid.clone())
            .collect::<Vec<_>>()
    );
}

/// A sink that makes each acknowledgement durable only when asked, slowly,
/// and notes how many instances the node had received whole by then.
struct SlowJournal {
    complete: std::sync::Arc<AtomicUsize>,
    recorded: AtomicUsize,
    waits: Mutex<Vec<(Ticket, usize)>>,
}

impl EventSink for SlowJournal {
    fn record(&self, _ev: SendEvent) -> Ticket {
        (self.recorded.fetch_add(1, Ordering::SeqCst) + 1) as Ticket
    }

    fn wait_durable(&self, ticket: Ticket) {
        // Long enough for a whole instance to arrive if it were not held back.
        std::thread::sleep(Duration::from_millis(150));
        let whole = self.complete.load(Ordering::SeqCst);
        self.waits.lock().expect("lock").push((ticket, whole));
    }
}

#[test]
fn the_node_gets_the_next_instance_whole_only_after_the_previous_answer_is_durable() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Several fragments each, so most of the next instance goes out while
    // the answer before it is made durable.
    let fixtures: Vec<Fixture> = (0..4)
        .map(|_| write_instance(dir.path(), CT, EXPLICIT_VR_LE, 200, None))
        .collect();
    let (port, scp, complete) = counting_status_scp(vec![0; 4]);
    let target = status_target(port);
    let sink = SlowJournal {
        complete,
        recorded: AtomicUsize::new(0),
        waits: Mutex::new(Vec::new()),
    };
    let outcome = send_batch_to(
        &target,
        items_of(&fixtures),
        &options(),
        &AtomicBool::new(false),
        &sink,
    );
    assert_eq!(outcome.remaining, vec![]);
    assert_eq!(scp.join().expect("scp").len(), 4);
    assert_eq!(sink.recorded.load(Ordering::SeqCst), 4);
    // Before instance k+1 could be completed, answer k was made durable,
    // and the node then held exactly k whole instances (not k+1).
    assert_eq!(
        *sink.waits.lock().expect("lock"),
        vec![(1, 1), (2, 2), (3, 3)]
    );
}
