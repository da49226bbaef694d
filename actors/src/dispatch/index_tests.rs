//! Tests of [`super::index`]: header fields, the dataset offset, non-DICOM and broken files.

use std::io::Cursor;
use std::path::Path;

use dicom_dictionary_std::tags;
use dicom_object::{FileMetaTable, InMemDicomObject};
use dicom_transfer_syntax_registry::{TransferSyntaxIndex, TransferSyntaxRegistry};
use proptest::prelude::*;

use super::fixtures::{
    CtInstance, CT_IMAGE_STORAGE, EXPLICIT_VR_LE, IMPLICIT_VR_LE, JPEG_BASELINE, SERIES_1_UID,
    STUDY_UID,
};
use super::index::{index_dir, index_file, IndexError};

const SOP: &str = "1.2.826.0.1.3680043.8.498.1.1.1";

fn instance() -> CtInstance {
    CtInstance::new(STUDY_UID, SERIES_1_UID, SOP)
        .series_number("7")
        .patient_id("PID-42")
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> std::path::PathBuf {
    let path = dir.join(name);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).unwrap();
    }
    std::fs::write(&path, bytes).unwrap();
    path
}

#[test]
fn header_fields_explicit_and_implicit() {
    let dir = tempfile::tempdir().unwrap();
    for (inst, ts) in [
        (instance(), EXPLICIT_VR_LE),
        (instance().implicit(), IMPLICIT_VR_LE),
        (instance().jpeg_baseline(), JPEG_BASELINE),
    ] {
        let bytes = inst.to_bytes();
        let path = write(dir.path(), "f.dcm", &bytes);
        let h = index_file(&path).unwrap().expect("a DICOM file");
        assert_eq!(h.sop_class_uid, CT_IMAGE_STORAGE);
        assert_eq!(h.sop_instance_uid, SOP);
        assert_eq!(h.meta_sop_instance_uid, SOP);
        assert_eq!(h.transfer_syntax, ts);
        assert_eq!(h.study_instance_uid, STUDY_UID);
        assert_eq!(h.series_instance_uid, SERIES_1_UID);
        assert_eq!(h.series_number, Some(7));
        assert_eq!(h.patient_id.as_deref(), Some("PID-42"));
        assert_eq!(h.file_size, bytes.len() as u64);
        // UIDs of odd length are padded with \0 in the file: none left here.
        assert!(!h.study_instance_uid.ends_with('\0') && !h.transfer_syntax.ends_with('\0'));
    }
}

#[test]
fn dataset_offset_lets_the_raw_dataset_be_parsed() {
    let dir = tempfile::tempdir().unwrap();
    for inst in [
        instance(),
        instance().implicit(),
        instance().jpeg_baseline(),
    ] {
        let bytes = inst.to_bytes();
        let path = write(dir.path(), "f.dcm", &bytes);
        let h = index_file(&path).unwrap().unwrap();

        // Independently: where dicom-object's meta reader stops.
        let mut cursor = Cursor::new(&bytes[128..]);
        FileMetaTable::from_reader(&mut cursor).unwrap();
        assert_eq!(h.dataset_offset, 128 + cursor.position());

        let ts = TransferSyntaxRegistry.get(&h.transfer_syntax).unwrap();
        let dataset =
            InMemDicomObject::read_dataset_with_ts(&bytes[h.dataset_offset as usize..], ts)
                .unwrap();
        assert_eq!(
            dataset
                .element(tags::SOP_INSTANCE_UID)
                .unwrap()
                .to_str()
                .unwrap()
                .trim_end_matches('\0'),
            SOP
        );
        let pixel_data = dataset.element(tags::PIXEL_DATA).unwrap();
        if inst.is_encapsulated() {
            assert_eq!(pixel_data.fragments().unwrap(), [CtInstance::fragment()]);
        } else {
            assert_eq!(
                pixel_data.to_multi_int::<u16>().unwrap(),
                CtInstance::pixels()
            );
        }
        assert!(dataset
            .element(tags::REFERENCED_IMAGE_SEQUENCE)
            .unwrap()
            .items()
            .is_some());
    }
}

#[test]
fn the_datasets_sop_instance_uid_wins_over_the_metas() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "f.dcm",
        &instance().meta_sop_uid("9.9.9").to_bytes(),
    );
    let h = index_file(&path).unwrap().unwrap();
    assert_eq!(h.sop_instance_uid, SOP);
    assert_eq!(h.meta_sop_instance_uid, "9.9.9");
}

#[test]
fn series_number_and_patient_id_may_be_absent_or_garbage() {
    let dir = tempfile::tempdir().unwrap();
    for (raw, expected) in [
        ("", None),
        ("abc", None),
        ("12", Some(12)),
        ("-3", Some(-3)),
    ] {
        let path = write(
            dir.path(),
            "f.dcm",
            &instance().series_number(raw).patient_id("").to_bytes(),
        );
        let h = index_file(&path).unwrap().unwrap();
        assert_eq!(h.series_number, expected, "series number {raw:?}");
        assert_eq!(h.patient_id, None);
    }
}

#[test]
fn non_dicom_files_are_none() {
    let dir = tempfile::tempdir().unwrap();
    let mut dicm_at_0 = b"DICM".to_vec();
    dicm_at_0.extend_from_slice(&[0; 300]);
    for (name, bytes) in [
        ("README", &b"Exported by Laminate.\n"[..]),
        ("manifest.json", br#"{"instances": 3}"#),
        ("empty", b""),
        ("zeros", &[0_u8; 400]),
        ("dicm-at-0", &dicm_at_0),
    ] {
        let path = write(dir.path(), name, bytes);
        assert!(index_file(&path).unwrap().is_none(), "{name}");
    }
}

#[test]
fn truncated_or_broken_dicom_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = instance().to_bytes();
    let offset = {
        let path = write(dir.path(), "whole.dcm", &bytes);
        index_file(&path).unwrap().unwrap().dataset_offset as usize
    };
    let end = bytes.len();
    for cut in [
        132,
        140,
        150,
        offset - 3,
        offset + 20,
        offset + 60,
        end - 10,
        end - 1,
    ] {
        let path = write(dir.path(), "cut.dcm", &bytes[..cut]);
        assert!(index_file(&path).is_err(), "cut at {cut} of {end}");
    }
    // Encapsulated: cut inside the fragment, or before the sequence delimiter.
    let jpeg = instance().jpeg_baseline().to_bytes();
    for cut in [jpeg.len() - 20, jpeg.len() - 4] {
        let path = write(dir.path(), "cut.dcm", &jpeg[..cut]);
        assert!(
            matches!(index_file(&path), Err(IndexError::Dataset { .. })),
            "cut at {cut} of {}",
            jpeg.len()
        );
    }

    let mut garbage = vec![0_u8; 128];
    garbage.extend_from_slice(b"DICM");
    garbage.extend_from_slice(&[0xAB; 200]);
    let path = write(dir.path(), "garbage.dcm", &garbage);
    assert!(matches!(index_file(&path), Err(IndexError::Meta(_))));

    // A group length that disagrees with the meta elements.
    let mut lying = bytes.clone();
    let len = u32::from_le_bytes(lying[140..144].try_into().unwrap());
    lying[140..144].copy_from_slice(&(len - 2).to_le_bytes());
    let path = write(dir.path(), "lying.dcm", &lying);
    assert!(matches!(index_file(&path), Err(IndexError::Meta(_))));
}

#[test]
fn a_missing_study_uid_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let inst = instance();
    let mut obj = inst.file_object();
    obj.remove_element(tags::STUDY_INSTANCE_UID);
    let path = dir.path().join("f.dcm");
    obj.write_to_file(&path).unwrap();
    assert!(matches!(
        index_file(&path),
        Err(IndexError::Missing { tag, .. }) if tag == tags::STUDY_INSTANCE_UID
    ));
}

#[test]
fn index_dir_walks_recursively_and_skips_non_dicom() {
    let dir = tempfile::tempdir().unwrap();
    let a = CtInstance::new(STUDY_UID, SERIES_1_UID, "1.2.3.1");
    let b = CtInstance::new(STUDY_UID, SERIES_1_UID, "1.2.3.2").implicit();
    let c = CtInstance::new(STUDY_UID, SERIES_1_UID, "1.2.3.3");
    write(dir.path(), "s/1/a.dcm", &a.to_bytes());
    write(dir.path(), "s/1/b", &b.to_bytes());
    write(dir.path(), "s/2/deep/c.dcm", &c.to_bytes());
    write(dir.path(), "README.txt", b"hello");
    write(dir.path(), "s/manifest.json", b"{}");
    let broken = write(dir.path(), "s/2/broken.dcm", &a.to_bytes()[..150]);

    let (found, failed) = index_dir(dir.path());
    let names: Vec<_> = found
        .iter()
        .map(|(p, _)| {
            p.strip_prefix(dir.path())
                .unwrap()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    assert_eq!(names, ["s/1/a.dcm", "s/1/b", "s/2/deep/c.dcm"]);
    assert_eq!(found[1].1.sop_instance_uid, "1.2.3.2");
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].0, broken);
}

/// Far above the milliseconds a small file takes, far below a 4 GiB allocation's minute.
const MAX_INDEX_TIME: std::time::Duration = std::time::Duration::from_secs(10);

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

    /// Whatever follows `DICM`, indexing returns (an error or a header), never panics,
    /// and never takes long.
    #[test]
    fn arbitrary_bytes_after_dicm_never_panic(tail in proptest::collection::vec(any::<u8>(), 0..600)) {
        let dir = tempfile::tempdir().unwrap();
        let mut bytes = vec![0_u8; 128];
        bytes.extend_from_slice(b"DICM");
        bytes.extend_from_slice(&tail);
        let path = write(dir.path(), "f", &bytes);
        let started = std::time::Instant::now();
        let _ = index_file(&path);
        prop_assert!(started.elapsed() < MAX_INDEX_TIME);
    }

    /// Random byte edits of a valid file: never a panic, never a long stall.
    #[test]
    fn mutated_dicom_never_panics(
        syntax in 0..3_usize,
        edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..6),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let inst = [instance(), instance().implicit(), instance().jpeg_baseline()][syntax].clone();
        let mut bytes = inst.to_bytes();
        for (at, byte) in edits {
            let at = 128 + at % (bytes.len() - 128);
            bytes[at] = byte;
        }
        let path = write(dir.path(), "f", &bytes);
        let started = std::time::Instant::now();
        let _ = index_file(&path);
        prop_assert!(started.elapsed() < MAX_INDEX_TIME, "a small file took {:?}", started.elapsed());
    }
}

#[test]
fn a_huge_declared_length_is_refused_without_reading_it() {
    // dicom-object alone allocates the declared 4 GiB and takes over a minute here.
    let dir = tempfile::tempdir().unwrap();
    for inst in [instance(), instance().implicit()] {
        let mut bytes = inst.to_bytes();
        let at = bytes
            .windows(4)
            .position(|w| w == [0x10, 0x00, 0x10, 0x00])
            .unwrap(); // (0010,0010)
        if inst.transfer_syntax == IMPLICIT_VR_LE {
            bytes[at + 4..at + 8].copy_from_slice(&0xFFFF_FFF0_u32.to_le_bytes());
        } else {
            bytes[at + 4..at + 6].copy_from_slice(b"UN");
            bytes[at + 8..at + 12].copy_from_slice(&0xFFFF_FFF0_u32.to_le_bytes());
        }
        let path = write(dir.path(), "f.dcm", &bytes);
        let started = std::time::Instant::now();
        assert!(matches!(index_file(&path), Err(IndexError::Dataset { .. })));
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
    }
}

/// One explicit VR little endian element.
fn el(group: u16, element: u16, vr: &[u8; 2], value: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend(group.to_le_bytes());
    out.extend(element.to_le_bytes());
    out.extend(vr);
    if vr == b"SQ" || vr == b"OB" {
        out.extend([0, 0]);
        out.extend((value.len() as u32).to_le_bytes());
    } else {
        out.extend((value.len() as u16).to_le_bytes());
    }
    out.extend(value);
    out
}

fn item(body: &[u8]) -> Vec<u8> {
    let mut out = vec![0xFE, 0xFF, 0x00, 0xE0];
    out.extend((body.len() as u32).to_le_bytes());
    out.extend(body);
    out
}

#[test]
fn defined_length_sequences_are_walked_and_checked() {
    let dir = tempfile::tempdir().unwrap();
    let fixture = instance().to_bytes();
    let path = write(dir.path(), "f.dcm", &fixture);
    let meta_end = index_file(&path).unwrap().unwrap().dataset_offset as usize;

    let build = |inner_len_patch: Option<u16>| {
        let mut inner = el(0x0008, 0x1155, b"UI", b"1.2.3.4\0");
        if let Some(len) = inner_len_patch {
            inner[6..8].copy_from_slice(&len.to_le_bytes());
        }
        let mut file = fixture[..meta_end].to_vec();
        file.extend(el(0x0008, 0x0016, b"UI", b"1.2.840.10008.5.1.4.1.1.2\0"));
        file.extend(el(0x0008, 0x0018, b"UI", format!("{SOP}\0").as_bytes()));
        file.extend(el(0x0008, 0x1140, b"SQ", &item(&inner)));
        file.extend(el(0x0020, 0x000D, b"UI", b"1.2.3.10"));
        file.extend(el(0x0020, 0x000E, b"UI", b"1.2.3.11"));
        file.extend(el(0x7FE0, 0x0010, b"OB", &[1, 2, 3, 4]));
        file
    };
    let path = write(dir.path(), "seq.dcm", &build(None));
    let h = index_file(&path).unwrap().unwrap();
    assert_eq!(
        (
            h.study_instance_uid.as_str(),
            h.series_instance_uid.as_str()
        ),
        ("1.2.3.10", "1.2.3.11")
    );

    // An element inside the item whose value runs past the item's end.
    let path = write(dir.path(), "seq-bad.dcm", &build(Some(40)));
    assert!(matches!(index_file(&path), Err(IndexError::Dataset { .. })));
}
