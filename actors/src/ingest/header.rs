//! Reading what the catalog needs from a received data set, which is
//! untrusted.
//!
//! dicom-rs's parser allocates and zero-fills each value's *declared* length
//! before reading it: a 20-byte data set declaring a 2 GiB element costs 2 GiB
//! of memory and half a minute of CPU. So this reader walks the data set as a
//! token stream and refuses any element or item whose declared length exceeds
//! what the data set can hold *before* its value is read. It reads only up to
//! Pixel Data (never the pixels), stops as soon as it has every attribute it
//! wants, and takes them from the top level only.

use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::Path;

use dicom_core::header::{HasLength, Length};
use dicom_core::{PrimitiveValue, Tag};
use dicom_dictionary_std::tags;
use dicom_encoding::transfer_syntax::{Codec, TransferSyntaxIndex};
use dicom_encoding::TransferSyntax;
use dicom_parser::dataset::read::DataSetReader;
use dicom_parser::dataset::DataToken;
use dicom_transfer_syntax_registry::TransferSyntaxRegistry;

use super::command::trim_uid;
use super::writer::IngestFailure;

/// In a deflated data set the inflated size is unknown: no element before
/// Pixel Data may declare more than this.
pub const DEFLATED_ELEMENT_CAP: u64 = 64 * 1024 * 1024;

/// What the catalog needs from a data set.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Header {
    pub sop_class_uid: String,
    pub sop_instance_uid: String,
    pub study_instance_uid: String,
    pub series_instance_uid: String,
    pub series_number: Option<i32>,
    pub patient_id: Option<String>,
}

/// The top-level attributes looked for, as found so far.
#[derive(Debug, Default)]
struct Found {
    sop_class_uid: Option<String>,
    sop_instance_uid: Option<String>,
    study_instance_uid: Option<String>,
    series_instance_uid: Option<String>,
    series_number: Option<String>,
    patient_id: Option<String>,
}

impl Found {
    fn slot(&mut self, tag: Tag) -> Option<&mut Option<String>> {
        match tag {
            tags::SOP_CLASS_UID => Some(&mut self.sop_class_uid),
            tags::SOP_INSTANCE_UID => Some(&mut self.sop_instance_uid),
            tags::STUDY_INSTANCE_UID => Some(&mut self.study_instance_uid),
            tags::SERIES_INSTANCE_UID => Some(&mut self.series_instance_uid),
            tags::SERIES_NUMBER => Some(&mut self.series_number),
            tags::PATIENT_ID => Some(&mut self.patient_id),
            _ => None,
        }
    }

    fn complete(&self) -> bool {
        self.sop_class_uid.is_some()
            && self.sop_instance_uid.is_some()
            && self.study_instance_uid.is_some()
            && self.series_instance_uid.is_some()
            && self.series_number.is_some()
            && self.patient_id.is_some()
    }

    fn into_header(self) -> Result<Header, IngestFailure> {
        let need = |v: Option<String>, name| v.ok_or(IngestFailure::MissingUid(name));
        Ok(Header {
            sop_class_uid: need(self.sop_class_uid, "SOPClassUID")?,
            sop_instance_uid: need(self.sop_instance_uid, "SOPInstanceUID")?,
            study_instance_uid: need(self.study_instance_uid, "StudyInstanceUID")?,
            series_instance_uid: need(self.series_instance_uid, "SeriesInstanceUID")?,
            // IS may be empty, multi-valued or junk: the first value if it is a number.
            series_number: self
                .series_number
                .and_then(|s| s.split('\\').next().and_then(|v| v.trim().parse().ok())),
            patient_id: self.patient_id,
        })
    }
}

/// Reads the header of the Part 10 file at `path`, whose data set starts at
/// `dataset_offset` and is encoded in `ts_uid`.
pub fn read_header(
    path: &Path,
    dataset_offset: u64,
    ts_uid: &str,
) -> Result<Header, IngestFailure> {
    let ts = TransferSyntaxRegistry
        .get(ts_uid)
        .ok_or_else(|| IngestFailure::Unparseable(format!("unknown transfer syntax {ts_uid}")))?;
    let mut file = File::open(path)?;
    let dataset_len = file.metadata()?.len().saturating_sub(dataset_offset);
    file.seek(SeekFrom::Start(dataset_offset))?;
    let reader = BufReader::new(file);
    match ts.codec() {
        Codec::Dataset(Some(adapter)) => scan(
            adapter.adapt_reader(Box::new(reader)),
            ts,
            DEFLATED_ELEMENT_CAP,
        ),
        Codec::Dataset(None) => Err(IngestFailure::Unparseable(format!(
            "cannot read data sets in {ts_uid}"
        ))),
        _ => scan(reader, ts, dataset_len),
    }
}

/// Walks a data set's tokens; no declared length may exceed `bound`.
pub fn scan<R: Read>(source: R, ts: &TransferSyntax, bound: u64) -> Result<Header, IngestFailure> {
    let bad = |e: &dyn std::fmt::Display| IngestFailure::Unparseable(e.to_string());
    let fits = |len: Length| -> Result<(), IngestFailure> {
        match len.get() {
            Some(n) if u64::from(n) > bound => Err(IngestFailure::Unparseable(format!(
                "an element declares {n} bytes; the data set has {bound}"
            ))),
            _ => Ok(()),
        }
    };
    let mut tokens = DataSetReader::new_with_ts(source, ts).map_err(|e| bad(&e))?;
    let mut found = Found::default();
    // Sequence nesting: 0 is the top level.
    let mut depth = 0usize;
    while let Some(token) = tokens.next() {
        match token.map_err(|e| bad(&e))? {
            DataToken::SequenceStart { len, .. } => {
                fits(len)?;
                depth += 1;
            }
            // Encapsulated Pixel Data: at the top level, the end of the header.
            DataToken::PixelSequenceStart if depth == 0 => break,
            DataToken::PixelSequenceStart => depth += 1,
            DataToken::SequenceEnd => depth = depth.saturating_sub(1),
            DataToken::ItemStart { len } => fits(len)?,
            DataToken::ElementHeader(header) => {
                if depth == 0 && header.tag >= tags::PIXEL_DATA {
                    break;
                }
                // Checked before the value is read (and allocated).
                fits(header.length())?;
                let value = match tokens.next() {
                    Some(Ok(DataToken::PrimitiveValue(v))) => v,
                    Some(Err(e)) => return Err(bad(&e)),
                    other => {
                        return Err(IngestFailure::Unparseable(format!(
                            "expected the value of {}, got {other:?}",
                            header.tag
                        )))
                    }
                };
                if depth == 0 {
                    if let Some(slot) = found.slot(header.tag) {
                        *slot = text(&value);
                    }
                    if found.complete() {
                        break;
                    }
                }
            }
            _ => {}
        }
    }
    found.into_header()
}

fn text(value: &PrimitiveValue) -> Option<String> {
    let s = value.to_str();
    let s = trim_uid(&s);
    (!s.is_empty()).then(|| s.to_owned())
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use dicom_core::{DataElement, VR};
    use dicom_object::InMemDicomObject;
    use dicom_transfer_syntax_registry::entries::{
        EXPLICIT_VR_LITTLE_ENDIAN, IMPLICIT_VR_LITTLE_ENDIAN,
    };

    use super::*;

    fn dataset(ts: &TransferSyntax) -> Vec<u8> {
        let mut obj = InMemDicomObject::new_empty();
        let mut put =
            |tag, vr, v: &str| obj.put(DataElement::new(tag, vr, PrimitiveValue::from(v)));
        put(tags::SOP_CLASS_UID, VR::UI, "1.2.840.10008.5.1.4.1.1.2");
        put(tags::SOP_INSTANCE_UID, VR::UI, "1.2.3.4");
        put(tags::PATIENT_ID, VR::LO, "P1");
        put(tags::STUDY_INSTANCE_UID, VR::UI, "1.2.3");
        put(tags::SERIES_INSTANCE_UID, VR::UI, "1.2.3.1");
        put(tags::SERIES_NUMBER, VR::IS, " 7 ");
        obj.put(DataElement::new(
            tags::PIXEL_DATA,
            VR::OW,
            PrimitiveValue::U16(vec![1u16; 32].into()),
        ));
        let mut bytes = Vec::new();
        obj.write_dataset_with_ts(&mut bytes, ts).expect("encode");
        bytes
    }

    #[test]
    fn reads_the_header_in_both_little_endian_syntaxes() {
        for ts in [
            EXPLICIT_VR_LITTLE_ENDIAN.erased(),
            IMPLICIT_VR_LITTLE_ENDIAN.erased(),
        ] {
            let bytes = dataset(&ts);
            let header = scan(&bytes[..], &ts, bytes.len() as u64).expect("header");
            assert_eq!(header.sop_instance_uid, "1.2.3.4");
            assert_eq!(header.series_instance_uid, "1.2.3.1");
            assert_eq!(header.series_number, Some(7));
            assert_eq!(header.patient_id.as_deref(), Some("P1"));
        }
    }

    #[test]
    fn a_huge_declared_length_is_refused_at_once() {
        let ts = EXPLICIT_VR_LITTLE_ENDIAN.erased();
        // (0008,0016) OB with a 2 GiB length, then nothing.
        let mut bytes = vec![0x08, 0x00, 0x16, 0x00, b'O', b'B', 0, 0];
        bytes.extend_from_slice(&0x8000_0000u32.to_le_bytes());
        let started = Instant::now();
        assert!(matches!(
            scan(&bytes[..], &ts, bytes.len() as u64),
            Err(IngestFailure::Unparseable(_))
        ));
        assert!(started.elapsed() < Duration::from_secs(1));
        let started = Instant::now();
        assert!(scan(&b"definitely not DICOM"[..], &ts, 20).is_err());
        assert!(started.elapsed() < Duration::from_secs(1));
    }

    #[test]
    fn missing_uids_are_named() {
        let ts = EXPLICIT_VR_LITTLE_ENDIAN.erased();
        match scan(&[][..], &ts, 0) {
            Err(IngestFailure::MissingUid(name)) => assert_eq!(name, "SOPClassUID"),
            other => panic!("expected MissingUid, got {other:?}"),
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(512))]
        #[test]
        fn arbitrary_bytes_never_panic_nor_allocate_wildly(
            bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..1024),
            implicit in proptest::bool::ANY,
        ) {
            let ts = if implicit { IMPLICIT_VR_LITTLE_ENDIAN.erased() } else { EXPLICIT_VR_LITTLE_ENDIAN.erased() };
            let _ = scan(&bytes[..], &ts, bytes.len() as u64);
        }

        #[test]
        fn corrupted_headers_never_panic(flip in 0usize..200, byte in proptest::num::u8::ANY) {
            let ts = EXPLICIT_VR_LITTLE_ENDIAN.erased();
            let mut bytes = dataset(&ts);
            let at = flip % bytes.len();
            bytes[at] = byte;
            let _ = scan(&bytes[..], &ts, bytes.len() as u64);
        }
    }
}
