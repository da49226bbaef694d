//! Indexing extracted files: which are DICOM, and the header fields a dispatch needs.
//!
//! Only the header is parsed (everything before Pixel Data). The sender streams the
//! dataset bytes as they are in the file, from [`DicomHeader::dataset_offset`], so
//! that offset is checked against the meta group's own elements, not just trusted.
//!
//! Before dicom-object sees a file, the element headers of the whole file are walked
//! (values skipped, not read) to check that every length fits in the file: dicom-object
//! 0.10 allocates a declared length before reading it, so a 1 KB file declaring a
//! 4 GiB element costs a 4 GiB allocation and over a minute. The walk also catches a
//! file cut anywhere, pixel data included. Deflated datasets cannot be walked raw;
//! they go to dicom-object unchecked.

use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::path::Path;

use dicom_core::dictionary::{DataDictionary, DataDictionaryEntry};
use dicom_core::{Tag, VR};
use dicom_dictionary_std::{tags, StandardDataDictionary};
use dicom_object::{DefaultDicomObject, OpenFileOptions};

/// The 128-byte preamble, then `DICM`.
const PREAMBLE_LEN: u64 = 128;
const MAGIC: &[u8; 4] = b"DICM";
/// Where the meta group starts.
const META_START: u64 = PREAMBLE_LEN + 4;
/// (0002,0000) UL, explicit VR little endian: tag 4 + VR 2 + length 2 + value 4.
const GROUP_LENGTH_ELEMENT_LEN: u64 = 12;
/// Explicit VRs with a 2-byte length (PS3.5 §7.1.2). Every other VR, unknown ones
/// included (read as UN, as dicom-rs does), has 2 reserved bytes and a 4-byte length.
const SHORT_LENGTH_VRS: [VR; 21] = [
    VR::AE,
    VR::AS,
    VR::AT,
    VR::CS,
    VR::DA,
    VR::DS,
    VR::DT,
    VR::FL,
    VR::FD,
    VR::IS,
    VR::LO,
    VR::LT,
    VR::PN,
    VR::SH,
    VR::SL,
    VR::SS,
    VR::ST,
    VR::TM,
    VR::UI,
    VR::UL,
    VR::US,
];
/// A Transfer Syntax UID is at most 64 characters.
const MAX_UID_LEN: u64 = 64;
const IMPLICIT_VR_LE: &str = "1.2.840.10008.1.2";
const EXPLICIT_VR_BE: &str = "1.2.840.10008.1.2.2";
const DEFLATED_EXPLICIT_VR_LE: &str = "1.2.840.10008.1.2.1.99";
const UNDEFINED_LENGTH: u32 = u32::MAX;
const ITEM: (u16, u16) = (0xFFFE, 0xE000);
const ITEM_DELIMITER: (u16, u16) = (0xFFFE, 0xE00D);
const SEQUENCE_DELIMITER: (u16, u16) = (0xFFFE, 0xE0DD);
/// Sequences nested deeper than this are refused (real files nest a few levels).
const MAX_NESTING: u32 = 32;

/// What a dispatch needs to know about one DICOM file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DicomHeader {
    /// The dataset's (0008,0016), or the meta's (0002,0002) when the dataset has none.
    pub sop_class_uid: String,
    /// The dataset's (0008,0018): what is sent (APPLIANCE.md "Dispatch jobs").
    pub sop_instance_uid: String,
    /// The meta's (0002,0003); may differ from the dataset's (logged).
    pub meta_sop_instance_uid: String,
    pub transfer_syntax: String,
    pub study_instance_uid: String,
    pub series_instance_uid: String,
    /// (0020,0011); `None` when missing, empty or not an integer.
    pub series_number: Option<i32>,
    /// (0010,0020); `None` when missing or empty.
    pub patient_id: Option<String>,
    /// Byte offset of the dataset (right after the meta group) in the file.
    pub dataset_offset: u64,
    pub file_size: u64,
}

impl DicomHeader {
    /// The cache's entry for this file at `path` (relative to the data dir),
    /// stored now.
    pub fn into_record(
        self,
        path: String,
        source: laminate_store::InstanceSource,
    ) -> laminate_store::InstanceRecord {
        laminate_store::InstanceRecord {
            sop_instance_uid: self.sop_instance_uid,
            sop_class_uid: self.sop_class_uid,
            transfer_syntax: self.transfer_syntax,
            study_instance_uid: self.study_instance_uid,
            series_instance_uid: self.series_instance_uid,
            series_number: self.series_number,
            patient_id: self.patient_id,
            path,
            size: self.file_size,
            source,
            stored_at_ms: crate::clock::now_ms(),
        }
    }
}

/// Why a file that claims to be DICOM (`DICM` at 128) cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error("cannot read: {0}")]
    Io(#[from] io::Error),
    #[error("invalid file meta group: {0}")]
    Meta(&'static str),
    #[error("invalid dataset at byte {offset}: {reason}")]
    Dataset { offset: u64, reason: &'static str },
    #[error("invalid DICOM header: {0}")]
    Parse(#[source] Box<dicom_object::ReadError>),
    #[error("{name} {tag} is missing or empty")]
    Missing { name: &'static str, tag: Tag },
}

/// dicom-object stops reading here: every tag the index needs comes before it
/// (the last is Series Number (0020,0011)). Parsing on to the pixel data cost
/// nothing more on most files but 47 s on one real file with a long UN
/// sequence (pydicom's `UN_sequence.dcm`), which held a whole dispatch's index
/// stage; [`Walk`] has already checked every length of the rest.
pub const HEADER_END: Tag = Tag(0x0020, 0x0012);

/// Reads the header of `path`: `Ok(None)` when it is not DICOM (no `DICM` at offset
/// 128: READMEs, manifests), `Err` when it claims DICOM but is broken.
pub fn index_file(path: &Path) -> Result<Option<DicomHeader>, IndexError> {
    let mut file = BufReader::new(File::open(path)?);
    let file_size = file.get_ref().metadata()?.len();
    if file_size < META_START || !has_magic(&mut file)? {
        return Ok(None);
    }
    let (dataset_offset, syntax) = meta_group_end(&mut file, file_size)?;
    let syntax = trim_uid(&syntax);
    if syntax != DEFLATED_EXPLICIT_VR_LE {
        let mut walk = Walk {
            file: &mut file,
            pos: dataset_offset,
            size: file_size,
            explicit: syntax != IMPLICIT_VR_LE,
            big_endian: syntax == EXPLICIT_VR_BE,
        };
        walk.elements(Until::End(file_size), 0)?;
    }
    drop(file);

    let obj = OpenFileOptions::new()
        .read_until(HEADER_END)
        .open_file(path)
        .map_err(|e| IndexError::Parse(Box::new(e)))?;
    header_of(&obj, path, dataset_offset, file_size).map(Some)
}

fn has_magic(file: &mut BufReader<File>) -> io::Result<bool> {
    let mut head = [0_u8; META_START as usize];
    file.read_exact(&mut head)?;
    Ok(&head[PREAMBLE_LEN as usize..] == MAGIC)
}

/// Walks the meta group's element headers (always explicit VR little endian) and
/// returns where it ends, `132 + 12 + (0002,0000)` once the elements agree with it,
/// and the raw Transfer Syntax UID (empty when absent).
fn meta_group_end(file: &mut BufReader<File>, file_size: u64) -> Result<(u64, String), IndexError> {
    file.seek(SeekFrom::Start(META_START))?;
    let mut head = [0_u8; GROUP_LENGTH_ELEMENT_LEN as usize];
    read_meta(file, &mut head)?;
    if head[..8] != [0x02, 0x00, 0x00, 0x00, b'U', b'L', 0x04, 0x00] {
        return Err(IndexError::Meta("it does not start with (0002,0000) UL"));
    }
    let group_length = u64::from(u32::from_le_bytes([head[8], head[9], head[10], head[11]]));
    let start = META_START + GROUP_LENGTH_ELEMENT_LEN;
    let end = start + group_length;
    if end > file_size {
        return Err(IndexError::Meta(
            "its group length runs past the end of the file",
        ));
    }

    let mut pos = start;
    let mut syntax = String::new();
    while pos < end {
        let mut elem = [0_u8; 8];
        read_meta(file, &mut elem)?;
        if elem[..2] != [0x02, 0x00] {
            return Err(IndexError::Meta(
                "an element of another group lies within its group length",
            ));
        }
        let (header_len, value_len) = if has_short_length(explicit_vr([elem[4], elem[5]])) {
            (8, u64::from(u16::from_le_bytes([elem[6], elem[7]])))
        } else {
            let mut len = [0_u8; 4];
            read_meta(file, &mut len)?;
            (12, u64::from(u32::from_le_bytes(len)))
        };
        pos += header_len + value_len;
        // Bounded by `end`, itself within the file: an undefined length (0xFFFFFFFF) stops here.
        if pos > end {
            return Err(IndexError::Meta("its elements run past its group length"));
        }
        if elem[2..4] == [0x10, 0x00] && value_len <= MAX_UID_LEN {
            let mut uid = vec![0_u8; value_len as usize];
            read_meta(file, &mut uid)?;
            syntax = String::from_utf8_lossy(&uid).into_owned();
        } else {
            file.seek_relative(value_len as i64)?;
        }
    }
    Ok((end, syntax))
}

/// Where a run of elements or items ends.
#[derive(Debug, Clone, Copy)]
enum Until {
    /// At this offset: the end of the file or of a defined-length value.
    End(u64),
    /// At a delimiter: an undefined-length item or sequence.
    Delimiter,
}

/// A walk over element headers that skips values, checking every length.
struct Walk<'f> {
    file: &'f mut BufReader<File>,
    pos: u64,
    size: u64,
    explicit: bool,
    big_endian: bool,
}

impl Walk<'_> {
    fn fail(&self, reason: &'static str) -> IndexError {
        IndexError::Dataset {
            offset: self.pos,
            reason,
        }
    }

    fn read<const N: usize>(&mut self) -> Result<[u8; N], IndexError> {
        let mut buf = [0_u8; N];
        self.file.read_exact(&mut buf).map_err(|e| match e.kind() {
            io::ErrorKind::UnexpectedEof => self.fail("the file ends inside an element header"),
            _ => IndexError::Io(e),
        })?;
        self.pos += N as u64;
        Ok(buf)
    }

    fn u16(&self, b: [u8; 2]) -> u16 {
        if self.big_endian {
            u16::from_be_bytes(b)
        } else {
            u16::from_le_bytes(b)
        }
    }

    fn u32(&self, b: [u8; 4]) -> u32 {
        if self.big_endian {
            u32::from_be_bytes(b)
        } else {
            u32::from_le_bytes(b)
        }
    }

    fn tag(&mut self) -> Result<(u16, u16), IndexError> {
        let b = self.read::<4>()?;
        Ok((self.u16([b[0], b[1]]), self.u16([b[2], b[3]])))
    }

    /// Skips `len` bytes of value, which must end by `limit`.
    fn skip(&mut self, len: u64, limit: u64) -> Result<(), IndexError> {
        if self.pos + len > limit {
            return Err(self.fail(if limit == self.size {
                "a value runs past the end of the file"
            } else {
                "a value runs past the end of its item or sequence"
            }));
        }
        self.file.seek_relative(len as i64)?;
        self.pos += len;
        Ok(())
    }

    /// Whether a defined-length run is done; an error if a header crossed its end.
    fn reached(&self, until: Until) -> Result<bool, IndexError> {
        match until {
            Until::End(end) if self.pos > end => {
                Err(self.fail("an element header crosses the end of its item"))
            }
            Until::End(end) => Ok(self.pos == end),
            Until::Delimiter => Ok(false),
        }
    }

    fn limit(&self, until: Until) -> u64 {
        match until {
            Until::End(end) => end,
            Until::Delimiter => self.size,
        }
    }

    /// Walks the elements of a dataset (the file's, or an item's).
    fn elements(&mut self, until: Until, depth: u32) -> Result<(), IndexError> {
        let limit = self.limit(until);
        loop {
            if self.reached(until)? {
                return Ok(());
            }
            let tag = self.tag()?;
            if tag == ITEM_DELIMITER {
                self.read::<4>()?;
                return match until {
                    Until::Delimiter => Ok(()),
                    Until::End(_) => {
                        Err(self.fail("an item delimiter outside an undefined-length item"))
                    }
                };
            }
            let (vr, len) = if self.explicit && tag.0 != 0xFFFE {
                let vr = explicit_vr(self.read::<2>()?);
                if has_short_length(vr) {
                    let len = self.read::<2>()?;
                    (Some(vr), u32::from(self.u16(len)))
                } else {
                    self.read::<2>()?;
                    let len = self.read::<4>()?;
                    (Some(vr), self.u32(len))
                }
            } else {
                let len = self.read::<4>()?;
                // Implicit VR: the dictionary says which elements are sequences.
                let vr = StandardDataDictionary
                    .by_tag(Tag(tag.0, tag.1))
                    .map(|e| e.vr().relaxed());
                (vr, self.u32(len))
            };
            let is_sequence = vr == Some(VR::SQ);
            if len == UNDEFINED_LENGTH {
                if depth >= MAX_NESTING {
                    return Err(self.fail("sequences nested too deep"));
                }
                if Tag(tag.0, tag.1) == tags::PIXEL_DATA {
                    self.fragments()?;
                } else if vr == Some(VR::UN) {
                    // An undefined-length UN holds implicit VR little endian (PS3.5 §6.2.2).
                    let (explicit, big_endian) = (self.explicit, self.big_endian);
                    (self.explicit, self.big_endian) = (false, false);
                    let walked = self.items(Until::Delimiter, depth + 1);
                    (self.explicit, self.big_endian) = (explicit, big_endian);
                    walked?;
                } else {
                    self.items(Until::Delimiter, depth + 1)?;
                }
            } else if is_sequence {
                let end = self.pos + u64::from(len);
                if end > limit {
                    return Err(self.fail("a sequence runs past the end of its container"));
                }
                if depth >= MAX_NESTING {
                    return Err(self.fail("sequences nested too deep"));
                }
                self.items(Until::End(end), depth + 1)?;
            } else {
                self.skip(u64::from(len), limit)?;
            }
        }
    }

    /// Walks the items of a sequence.
    fn items(&mut self, until: Until, depth: u32) -> Result<(), IndexError> {
        let limit = self.limit(until);
        loop {
            if self.reached(until)? {
                return Ok(());
            }
            let tag = self.tag()?;
            let len = self.read::<4>()?;
            let len = self.u32(len);
            match (tag, until) {
                (SEQUENCE_DELIMITER, Until::Delimiter) => return Ok(()),
                (ITEM, _) if len == UNDEFINED_LENGTH => self.elements(Until::Delimiter, depth)?,
                (ITEM, _) => {
                    let end = self.pos + u64::from(len);
                    if end > limit {
                        return Err(self.fail("an item runs past the end of its sequence"));
                    }
                    self.elements(Until::End(end), depth)?;
                }
                _ => return Err(self.fail("a sequence holds something other than items")),
            }
        }
    }

    /// Walks encapsulated pixel data: defined-length fragments up to a sequence delimiter.
    fn fragments(&mut self) -> Result<(), IndexError> {
        loop {
            let tag = self.tag()?;
            let len = self.read::<4>()?;
            let len = self.u32(len);
            match tag {
                SEQUENCE_DELIMITER => return Ok(()),
                ITEM if len != UNDEFINED_LENGTH => self.skip(u64::from(len), self.size)?,
                _ => {
                    return Err(
                        self.fail("encapsulated pixel data holds something other than fragments")
                    )
                }
            }
        }
    }
}

/// An explicit VR as dicom-rs decodes it: unknown ones are UN.
fn explicit_vr(bytes: [u8; 2]) -> VR {
    VR::from_binary(bytes).unwrap_or(VR::UN)
}

fn has_short_length(vr: VR) -> bool {
    SHORT_LENGTH_VRS.contains(&vr)
}

fn read_meta(file: &mut BufReader<File>, buf: &mut [u8]) -> Result<(), IndexError> {
    file.read_exact(buf).map_err(|e| match e.kind() {
        io::ErrorKind::UnexpectedEof => IndexError::Meta("the file ends inside it"),
        _ => IndexError::Io(e),
    })
}

fn header_of(
    obj: &DefaultDicomObject,
    path: &Path,
    dataset_offset: u64,
    file_size: u64,
) -> Result<DicomHeader, IndexError> {
    let meta = obj.meta();
    let transfer_syntax = trim_uid(meta.transfer_syntax());
    if transfer_syntax.is_empty() {
        return Err(IndexError::Missing {
            name: "Transfer Syntax UID",
            tag: tags::TRANSFER_SYNTAX_UID,
        });
    }
    let meta_sop_instance_uid = trim_uid(meta.media_storage_sop_instance_uid());
    let meta_sop_class_uid = trim_uid(meta.media_storage_sop_class_uid());

    let sop_instance_uid = required(obj, "SOP Instance UID", tags::SOP_INSTANCE_UID)?;
    let sop_class_uid = match text(obj, tags::SOP_CLASS_UID) {
        Some(uid) => uid,
        None if !meta_sop_class_uid.is_empty() => meta_sop_class_uid.clone(),
        None => {
            return Err(IndexError::Missing {
                name: "SOP Class UID",
                tag: tags::SOP_CLASS_UID,
            })
        }
    };
    if meta_sop_instance_uid != sop_instance_uid {
        tracing::warn!(
            file = %path.display(),
            dataset = %sop_instance_uid,
            meta = %meta_sop_instance_uid,
            "file meta SOP Instance UID differs from the dataset's; the dataset's is used"
        );
    }
    if !meta_sop_class_uid.is_empty() && meta_sop_class_uid != sop_class_uid {
        tracing::warn!(
            file = %path.display(),
            dataset = %sop_class_uid,
            meta = %meta_sop_class_uid,
            "file meta SOP Class UID differs from the dataset's; the dataset's is used"
        );
    }

    Ok(DicomHeader {
        sop_class_uid,
        sop_instance_uid,
        meta_sop_instance_uid,
        transfer_syntax,
        study_instance_uid: required(obj, "Study Instance UID", tags::STUDY_INSTANCE_UID)?,
        series_instance_uid: required(obj, "Series Instance UID", tags::SERIES_INSTANCE_UID)?,
        series_number: obj
            .element_opt(tags::SERIES_NUMBER)
            .ok()
            .flatten()
            .and_then(|e| e.to_int::<i32>().ok()),
        patient_id: text(obj, tags::PATIENT_ID),
        dataset_offset,
        file_size,
    })
}

/// UIDs are padded to even length with `\0` (and some writers use spaces).
fn trim_uid(uid: &str) -> String {
    uid.trim_matches(|c: char| c == '\0' || c == ' ').to_owned()
}

/// A string element, trimmed; `None` when missing, unreadable or empty.
fn text(obj: &DefaultDicomObject, tag: Tag) -> Option<String> {
    let value = obj.element_opt(tag).ok().flatten()?.to_str().ok()?;
    Some(trim_uid(&value)).filter(|s| !s.is_empty())
}

fn required(obj: &DefaultDicomObject, name: &'static str, tag: Tag) -> Result<String, IndexError> {
    text(obj, tag).ok_or(IndexError::Missing { name, tag })
}

impl IndexError {
    /// A short reason for an operator, naming the common cases the way the local
    /// API lists them: `no Study Instance UID`, `truncated: …`.
    pub fn summary(&self) -> String {
        match self {
            IndexError::Missing { name, .. } => format!("no {name}"),
            IndexError::Io(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                format!("truncated: {e}")
            }
            IndexError::Meta(why) if why.contains("ends") || why.contains("past") => {
                format!("truncated: file meta group {why}")
            }
            IndexError::Dataset { offset, reason }
                if reason.contains("ends") || reason.contains("past the end") =>
            {
                format!("truncated: {reason} (byte {offset})")
            }
            other => format!("damaged: {other}"),
        }
    }
}

pub use super::index_dir::{index_dir, index_dir_with, IndexFailures, Indexed, IndexedDir};
