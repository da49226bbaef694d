//! Test fixtures: small valid DICOM files and zip archives built in code.
//!
//! Standalone on purpose (it only depends on dicom-*, async_zip and std), so it can
//! move to a shared test-support crate. Two zip builders:
//! - [`write_with_async_zip`]: archives as a real writer makes them (async_zip's
//!   `ZipFileWriter`), optionally streamed with data descriptors.
//! - [`RawZip`]: a byte-level writer for hostile archives: any name bytes (NUL,
//!   non-UTF-8, `..`), unix modes (symlinks), duplicates, lying declared sizes,
//!   zip64 extra fields and a zip64 end of central directory.
// Not every helper is used by every test module; this is a shared toolbox.
#![allow(dead_code)]

use std::path::Path;

use async_zip::base::write::ZipFileWriter;
use async_zip::{Compression, ZipEntryBuilder};
use dicom_core::value::{DataSetSequence, PixelFragmentSequence, PrimitiveValue, C};
use dicom_core::{DataElement, Length, VR};
use dicom_dictionary_std::tags;
use dicom_object::meta::FileMetaTableBuilder;
use dicom_object::{FileDicomObject, InMemDicomObject};

/// CT Image Storage.
pub const CT_IMAGE_STORAGE: &str = "1.2.840.10008.5.1.4.1.1.2";
/// Explicit VR Little Endian.
pub const EXPLICIT_VR_LE: &str = "1.2.840.10008.1.2.1";
/// Implicit VR Little Endian.
pub const IMPLICIT_VR_LE: &str = "1.2.840.10008.1.2";
/// JPEG Baseline: encapsulated pixel data (the fixture's fragment is not a real JPEG).
pub const JPEG_BASELINE: &str = "1.2.840.10008.1.2.4.50";

/// Rows and columns of the fixture images (16-bit, so 2 bytes a pixel).
pub const IMAGE_SIDE: u16 = 4;

/// One CT instance to build; the fields are the values written, as they are.
#[derive(Debug, Clone, PartialEq)]
pub struct CtInstance {
    pub study_uid: String,
    pub series_uid: String,
    pub sop_uid: String,
    /// The raw Integer String written in (0020,0011): may be empty or garbage.
    pub series_number: String,
    /// Written in (0010,0020) unless empty.
    pub patient_id: String,
    pub transfer_syntax: &'static str,
    /// When set, the file meta's Media Storage SOP Instance UID, disagreeing with the dataset.
    pub meta_sop_uid: Option<String>,
}

impl CtInstance {
    /// Explicit VR LE, series number 1, patient `PAT-001`.
    pub fn new(study_uid: &str, series_uid: &str, sop_uid: &str) -> Self {
        CtInstance {
            study_uid: study_uid.to_owned(),
            series_uid: series_uid.to_owned(),
            sop_uid: sop_uid.to_owned(),
            series_number: "1".to_owned(),
            patient_id: "PAT-001".to_owned(),
            transfer_syntax: EXPLICIT_VR_LE,
            meta_sop_uid: None,
        }
    }

    pub fn implicit(mut self) -> Self {
        self.transfer_syntax = IMPLICIT_VR_LE;
        self
    }

    /// JPEG Baseline with one encapsulated fragment ([`Self::fragment`]).
    pub fn jpeg_baseline(mut self) -> Self {
        self.transfer_syntax = JPEG_BASELINE;
        self
    }

    pub fn is_encapsulated(&self) -> bool {
        self.transfer_syntax != EXPLICIT_VR_LE && self.transfer_syntax != IMPLICIT_VR_LE
    }

    /// The one pixel data fragment of an encapsulated fixture.
    pub fn fragment() -> Vec<u8> {
        let mut f = vec![0xFF, 0xD8];
        f.extend((0..60_u8).map(|i| i.wrapping_mul(37)));
        f.extend([0xFF, 0xD9]);
        f
    }

    pub fn series_number(mut self, raw_is: &str) -> Self {
        self.series_number = raw_is.to_owned();
        self
    }

    pub fn patient_id(mut self, id: &str) -> Self {
        self.patient_id = id.to_owned();
        self
    }

    pub fn meta_sop_uid(mut self, uid: &str) -> Self {
        self.meta_sop_uid = Some(uid.to_owned());
        self
    }

    /// The pixel values: a ramp, so a test can check them.
    pub fn pixels() -> Vec<u16> {
        (0..IMAGE_SIDE * IMAGE_SIDE).map(|i| i * 16).collect()
    }

    /// The dataset alone (no meta group), with a sequence (undefined length, as
    /// dicom-rs writes them) before the pixel data.
    pub fn dataset(&self) -> InMemDicomObject {
        let mut obj = InMemDicomObject::new_empty();
        let referenced = InMemDicomObject::from_element_iter([
            DataElement::new(
                tags::REFERENCED_SOP_CLASS_UID,
                VR::UI,
                PrimitiveValue::from(CT_IMAGE_STORAGE),
            ),
            DataElement::new(
                tags::REFERENCED_SOP_INSTANCE_UID,
                VR::UI,
                PrimitiveValue::from("1.2.3.4.5"),
            ),
        ]);
        obj.put(DataElement::new(
            tags::REFERENCED_IMAGE_SEQUENCE,
            VR::SQ,
            DataSetSequence::new(vec![referenced], Length::UNDEFINED),
        ));
        if self.is_encapsulated() {
            obj.put(DataElement::new(
                tags::PIXEL_DATA,
                VR::OB,
                PixelFragmentSequence::new_fragments(vec![Self::fragment()]),
            ));
        }
        let mut put = |tag, vr, value: PrimitiveValue| {
            obj.put(DataElement::new(tag, vr, value));
        };
        put(tags::SOP_CLASS_UID, VR::UI, CT_IMAGE_STORAGE.into());
        put(tags::SOP_INSTANCE_UID, VR::UI, self.sop_uid.as_str().into());
        put(tags::MODALITY, VR::CS, "CT".into());
        put(tags::PATIENT_NAME, VR::PN, "Test^Patient".into());
        if !self.patient_id.is_empty() {
            put(tags::PATIENT_ID, VR::LO, self.patient_id.as_str().into());
        }
        put(
            tags::STUDY_INSTANCE_UID,
            VR::UI,
            self.study_uid.as_str().into(),
        );
        put(
            tags::SERIES_INSTANCE_UID,
            VR::UI,
            self.series_uid.as_str().into(),
        );
        let series_number = if self.series_number.is_empty() {
            PrimitiveValue::Empty
        } else {
            self.series_number.as_str().into()
        };
        put(tags::SERIES_NUMBER, VR::IS, series_number);
        put(tags::INSTANCE_NUMBER, VR::IS, "1".into());
        put(tags::SAMPLES_PER_PIXEL, VR::US, PrimitiveValue::from(1_u16));
        put(
            tags::PHOTOMETRIC_INTERPRETATION,
            VR::CS,
            "MONOCHROME2".into(),
        );
        put(tags::ROWS, VR::US, PrimitiveValue::from(IMAGE_SIDE));
        put(tags::COLUMNS, VR::US, PrimitiveValue::from(IMAGE_SIDE));
        put(tags::BITS_ALLOCATED, VR::US, PrimitiveValue::from(16_u16));
        put(tags::BITS_STORED, VR::US, PrimitiveValue::from(12_u16));
        put(tags::HIGH_BIT, VR::US, PrimitiveValue::from(11_u16));
        put(
            tags::PIXEL_REPRESENTATION,
            VR::US,
            PrimitiveValue::from(0_u16),
        );
        if !self.is_encapsulated() {
            put(
                tags::PIXEL_DATA,
                VR::OW,
                PrimitiveValue::U16(C::from(Self::pixels())),
            );
        }
        obj
    }

    /// The whole Part 10 file: preamble, `DICM`, meta group, dataset.
    pub fn file_object(&self) -> FileDicomObject<InMemDicomObject> {
        let meta = FileMetaTableBuilder::new()
            .transfer_syntax(self.transfer_syntax)
            .media_storage_sop_class_uid(CT_IMAGE_STORAGE)
            .media_storage_sop_instance_uid(self.meta_sop_uid.as_deref().unwrap_or(&self.sop_uid))
            .build()
            .expect("fixture meta group");
        self.dataset().with_exact_meta(meta)
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.file_object()
            .write_all(&mut out)
            .expect("fixture DICOM file");
        out
    }

    pub fn write_to(&self, path: &Path) {
        std::fs::write(path, self.to_bytes()).expect("write fixture DICOM file");
    }
}

/// How a [`RawZip`] entry's data is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Stored,
    Deflate,
}

/// One entry of a [`RawZip`], every field written as given.
#[derive(Debug, Clone)]
pub struct RawEntry {
    pub name: Vec<u8>,
    pub data: Vec<u8>,
    pub method: Method,
    /// Unix mode for the external attributes (made-by host then "Unix").
    pub unix_mode: Option<u32>,
    /// Uncompressed size to declare instead of the real one (in both headers).
    pub declared_size: Option<u64>,
    /// CRC to declare instead of the real one (in both headers).
    pub declared_crc: Option<u32>,
    /// Compression method to declare instead of the real one (in both headers).
    pub declared_method: Option<u16>,
    /// Write the sizes (and the local header offset) in a zip64 extra field.
    pub zip64: bool,
    /// With `zip64`: saturate the central directory's offset but leave it out of the
    /// extra field (a malformed record).
    pub zip64_without_offset: bool,
    /// Set the language encoding flag (bit 11: the name is UTF-8).
    pub utf8_flag: bool,
}

impl RawEntry {
    pub fn new(name: impl AsRef<[u8]>, data: impl Into<Vec<u8>>, method: Method) -> Self {
        RawEntry {
            name: name.as_ref().to_vec(),
            data: data.into(),
            method,
            unix_mode: None,
            declared_size: None,
            declared_crc: None,
            declared_method: None,
            zip64: false,
            zip64_without_offset: false,
            utf8_flag: false,
        }
    }
}

/// A byte-level zip writer for hostile archives.
#[derive(Debug, Clone, Default)]
pub struct RawZip {
    pub entries: Vec<RawEntry>,
    /// Write a zip64 end of central directory (and saturate the classic one).
    pub zip64_end: bool,
}

const LFH_SIG: u32 = 0x0403_4b50;
const CDH_SIG: u32 = 0x0201_4b50;
const EOCD_SIG: u32 = 0x0605_4b50;
const EOCD64_SIG: u32 = 0x0606_4b50;
const EOCDL64_SIG: u32 = 0x0706_4b50;
const HOST_UNIX: u16 = 3;
/// 1980-01-01, the zip epoch.
const DOS_DATE: u16 = 0x21;

impl RawZip {
    pub fn new() -> Self {
        RawZip::default()
    }

    pub fn entry(mut self, entry: RawEntry) -> Self {
        self.entries.push(entry);
        self
    }

    pub fn file(self, name: impl AsRef<[u8]>, data: impl Into<Vec<u8>>, method: Method) -> Self {
        self.entry(RawEntry::new(name, data, method))
    }

    pub fn dir(self, name: &str) -> Self {
        let mut e = RawEntry::new(name, Vec::new(), Method::Stored);
        e.unix_mode = Some(0o040_755);
        self.entry(e)
    }

    pub fn symlink(self, name: &str, target: &str) -> Self {
        let mut e = RawEntry::new(name, target.as_bytes(), Method::Stored);
        e.unix_mode = Some(0o120_777);
        self.entry(e)
    }

    pub fn zip64_end(mut self) -> Self {
        self.zip64_end = true;
        self
    }

    /// Builds the archive bytes (async because deflate goes through async_zip's compressor).
    pub async fn build(self) -> Vec<u8> {
        let mut out = Vec::new();
        let mut central = Vec::new();
        for e in &self.entries {
            let body = match e.method {
                Method::Stored => e.data.clone(),
                Method::Deflate => deflate(&e.data).await,
            };
            let method: u16 = e.declared_method.unwrap_or(match e.method {
                Method::Stored => 0,
                Method::Deflate => 8,
            });
            let crc = e.declared_crc.unwrap_or_else(|| crc32(&e.data));
            let usize_ = e.declared_size.unwrap_or(e.data.len() as u64);
            let csize = body.len() as u64;
            let offset = out.len() as u64;
            let gpf: u16 = if e.utf8_flag { 0x0800 } else { 0 };
            let version: u16 = if e.zip64 { 45 } else { 20 };
            let (size32, csize32) = if e.zip64 {
                (u32::MAX, u32::MAX)
            } else {
                (usize_ as u32, csize as u32)
            };

            // Local header.
            let mut local_extra = Vec::new();
            if e.zip64 {
                put16(&mut local_extra, 1);
                put16(&mut local_extra, 16);
                put64(&mut local_extra, usize_);
                put64(&mut local_extra, csize);
            }
            put32(&mut out, LFH_SIG);
            put16(&mut out, version);
            put16(&mut out, gpf);
            put16(&mut out, method);
            put16(&mut out, 0);
            put16(&mut out, DOS_DATE);
            put32(&mut out, crc);
            put32(&mut out, csize32);
            put32(&mut out, size32);
            put16(&mut out, e.name.len() as u16);
            put16(&mut out, local_extra.len() as u16);
            out.extend_from_slice(&e.name);
            out.extend_from_slice(&local_extra);
            out.extend_from_slice(&body);

            // Central directory record.
            let mut cd_extra = Vec::new();
            if e.zip64 {
                put16(&mut cd_extra, 1);
                put16(&mut cd_extra, if e.zip64_without_offset { 16 } else { 24 });
                put64(&mut cd_extra, usize_);
                put64(&mut cd_extra, csize);
                if !e.zip64_without_offset {
                    put64(&mut cd_extra, offset);
                }
            }
            let made_by = if e.unix_mode.is_some() {
                (HOST_UNIX << 8) | 30
            } else {
                20
            };
            put32(&mut central, CDH_SIG);
            put16(&mut central, made_by);
            put16(&mut central, version);
            put16(&mut central, gpf);
            put16(&mut central, method);
            put16(&mut central, 0);
            put16(&mut central, DOS_DATE);
            put32(&mut central, crc);
            put32(&mut central, csize32);
            put32(&mut central, size32);
            put16(&mut central, e.name.len() as u16);
            put16(&mut central, cd_extra.len() as u16);
            put16(&mut central, 0); // comment
            put16(&mut central, 0); // disk
            put16(&mut central, 0); // internal attributes
            put32(&mut central, e.unix_mode.map_or(0, |m| m << 16));
            put32(&mut central, if e.zip64 { u32::MAX } else { offset as u32 });
            central.extend_from_slice(&e.name);
            central.extend_from_slice(&cd_extra);
        }

        let cd_offset = out.len() as u64;
        let cd_size = central.len() as u64;
        let n = self.entries.len() as u64;
        out.extend_from_slice(&central);
        if self.zip64_end {
            let eocd64_offset = out.len() as u64;
            put32(&mut out, EOCD64_SIG);
            put64(&mut out, 44);
            put16(&mut out, (HOST_UNIX << 8) | 45);
            put16(&mut out, 45);
            put32(&mut out, 0);
            put32(&mut out, 0);
            put64(&mut out, n);
            put64(&mut out, n);
            put64(&mut out, cd_size);
            put64(&mut out, cd_offset);
            put32(&mut out, EOCDL64_SIG);
            put32(&mut out, 0);
            put64(&mut out, eocd64_offset);
            put32(&mut out, 1);
        }
        put32(&mut out, EOCD_SIG);
        put16(&mut out, 0);
        put16(&mut out, 0);
        let (n16, size32, offset32) = if self.zip64_end {
            (u16::MAX, u32::MAX, u32::MAX)
        } else {
            (n as u16, cd_size as u32, cd_offset as u32)
        };
        put16(&mut out, n16);
        put16(&mut out, n16);
        put32(&mut out, size32);
        put32(&mut out, offset32);
        put16(&mut out, 0);
        out
    }

    /// [`Self::build`] for synchronous callers (not from inside a runtime).
    pub fn build_blocking(self) -> Vec<u8> {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("fixture runtime")
            .block_on(self.build())
    }
}

/// Raw deflate of `data` (as stored in a zip entry).
pub async fn deflate(data: &[u8]) -> Vec<u8> {
    let entry = ZipEntryBuilder::new(String::from("x").into(), Compression::Deflate).build();
    async_zip::base::write::compress(&entry, data).await
}

pub fn crc32(data: &[u8]) -> u32 {
    async_zip::base::write::crc32(data)
}

fn put16(v: &mut Vec<u8>, x: u16) {
    v.extend_from_slice(&x.to_le_bytes());
}

fn put32(v: &mut Vec<u8>, x: u32) {
    v.extend_from_slice(&x.to_le_bytes());
}

fn put64(v: &mut Vec<u8>, x: u64) {
    v.extend_from_slice(&x.to_le_bytes());
}

/// How [`write_with_async_zip`] writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriterMode {
    /// `write_entry_whole`: sizes and CRC in the local headers.
    Whole,
    /// `write_entry_stream`: data descriptors, sizes only in the central directory.
    Streamed,
    /// `Whole` plus `force_zip64`: a zip64 end of central directory record. async_zip
    /// writes zip64 extra fields only for entries over 4 GiB; [`RawZip`] forces those.
    WholeZip64End,
}

/// Builds an archive with async_zip's own writer: `(name, data, deflate?)` per entry.
/// [`WriterMode::Streamed`] is what a server zipping on the fly sends.
pub async fn write_with_async_zip(entries: &[(&str, &[u8], bool)], mode: WriterMode) -> Vec<u8> {
    use tokio::io::AsyncWriteExt as _;
    use tokio_util::compat::FuturesAsyncWriteCompatExt as _;
    let mut writer = ZipFileWriter::new(Vec::<u8>::new());
    if mode == WriterMode::WholeZip64End {
        writer = writer.force_zip64();
    }
    let streamed = mode == WriterMode::Streamed;
    for (name, data, deflated) in entries {
        let method = if *deflated {
            Compression::Deflate
        } else {
            Compression::Stored
        };
        let entry = ZipEntryBuilder::new(String::from(*name).into(), method);
        if streamed {
            let w = writer
                .write_entry_stream(entry)
                .await
                .expect("stream entry");
            // The entry writer is a futures AsyncWrite; write through tokio's traits.
            let mut w = w.compat_write();
            w.write_all(data).await.expect("stream entry data");
            w.into_inner().close().await.expect("close stream entry");
        } else {
            writer
                .write_entry_whole(entry, data)
                .await
                .expect("whole entry");
        }
    }
    writer.close().await.expect("close zip")
}

/// The UIDs of the fixture study.
pub const STUDY_UID: &str = "1.2.826.0.1.3680043.8.498.1";
pub const SERIES_1_UID: &str = "1.2.826.0.1.3680043.8.498.1.1";
pub const SERIES_2_UID: &str = "1.2.826.0.1.3680043.8.498.1.2";

/// A small study as the backend sends it: three instances over two series in nested
/// folders (one without `.dcm`, one Implicit VR LE), a README and a manifest, stored
/// and deflated entries mixed. Returns the archive and `(entry name, instance)` pairs.
pub async fn study_archive() -> (Vec<u8>, Vec<(String, CtInstance)>) {
    let instances = vec![
        (
            "study/series-1/IM0001.dcm".to_owned(),
            CtInstance::new(STUDY_UID, SERIES_1_UID, "1.2.826.0.1.3680043.8.498.1.1.1"),
        ),
        (
            "study/series-1/IM0002".to_owned(),
            CtInstance::new(STUDY_UID, SERIES_1_UID, "1.2.826.0.1.3680043.8.498.1.1.2").implicit(),
        ),
        (
            "study/series-2/deeper/IM0003.dcm".to_owned(),
            CtInstance::new(STUDY_UID, SERIES_2_UID, "1.2.826.0.1.3680043.8.498.1.2.1")
                .series_number("2"),
        ),
    ];
    let mut zip = RawZip::new().dir("study/").dir("study/series-1/");
    for (i, (name, inst)) in instances.iter().enumerate() {
        let method = if i % 2 == 0 {
            Method::Deflate
        } else {
            Method::Stored
        };
        zip = zip.file(name, inst.to_bytes(), method);
    }
    let zip = zip
        .file(
            "README.txt",
            b"Exported by Laminate.\n".to_vec(),
            Method::Stored,
        )
        .file(
            "manifest.json",
            br#"{"instances": 3}"#.to_vec(),
            Method::Deflate,
        );
    (zip.build().await, instances)
}
