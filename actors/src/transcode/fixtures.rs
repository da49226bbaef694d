//! Test inputs for the transcoder: pydicom's and pydicom-data's real files
//! (found through python3 at run time), synthetic images written here, and
//! dcmtk's compressors and decompressors run on them.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use dicom_core::value::PrimitiveValue;
use dicom_core::{DataElement, VR};
use dicom_dictionary_std::{tags, uids};
use dicom_object::{DefaultDicomObject, FileMetaTableBuilder, InMemDicomObject, OpenFileOptions};

/// pydicom's `data/test_files` and pydicom-data's `data_store/data`.
pub(crate) struct Pydicom {
    pub test_files: PathBuf,
    pub data_store: PathBuf,
}

const FIND: &str = "import os, pydicom, data_store\n\
print(os.path.join(os.path.dirname(pydicom.__file__), 'data', 'test_files'))\n\
print(os.path.join(os.path.dirname(data_store.__file__), 'data'))";

/// Where pydicom's files are, or `None` (printed once) when python3,
/// pydicom or pydicom-data is not installed.
pub(crate) fn pydicom() -> Option<&'static Pydicom> {
    static FOUND: OnceLock<Option<Pydicom>> = OnceLock::new();
    FOUND
        .get_or_init(|| {
            let out = Command::new("python3").args(["-c", FIND]).output();
            match out {
                Ok(o) if o.status.success() => {
                    let text = String::from_utf8_lossy(&o.stdout).to_string();
                    let mut lines = text.lines();
                    match (lines.next(), lines.next()) {
                        (Some(a), Some(b)) => Some(Pydicom {
                            test_files: PathBuf::from(a),
                            data_store: PathBuf::from(b),
                        }),
                        _ => None,
                    }
                }
                _ => None,
            }
        })
        .as_ref()
}

/// Returns from the test, with a message, when pydicom's files are absent.
macro_rules! require_pydicom {
    () => {
        match $crate::transcode::fixtures::pydicom() {
            Some(p) => p,
            None => {
                eprintln!(
                    "SKIPPED: python3 with pydicom and pydicom-data is not installed \
                     (pip install pydicom pydicom-data)"
                );
                return;
            }
        }
    };
}
pub(crate) use require_pydicom;

impl Pydicom {
    /// A file from either set; panics if it is missing (the sets are fixed).
    pub(crate) fn file(&self, name: &str) -> PathBuf {
        for dir in [&self.test_files, &self.data_store] {
            let p = dir.join(name);
            if p.exists() {
                return p;
            }
        }
        panic!("{name} is in neither pydicom's nor pydicom-data's files");
    }
}

/// Whether pydicom can decode JPEG 2000 here (pylibjpeg with openjpeg).
pub(crate) fn pydicom_decodes_j2k() -> bool {
    Command::new("python3")
        .args(["-c", "import pydicom, pylibjpeg, openjpeg"])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// The pixel bytes pydicom decodes from `path` (every frame, interleaved,
/// little endian), as `ds.pixel_array` holds them.
pub(crate) fn pydicom_pixels(path: &Path, out: &Path) -> Vec<u8> {
    let script = "import sys, pydicom\n\
ds = pydicom.dcmread(sys.argv[1])\n\
a = ds.pixel_array\n\
open(sys.argv[2], 'wb').write(a.astype(a.dtype.newbyteorder('<')).tobytes())";
    let status = Command::new("python3")
        .args(["-c", script])
        .arg(path)
        .arg(out)
        .status()
        .expect("python3 runs");
    assert!(
        status.success(),
        "pydicom could not decode {}",
        path.display()
    );
    std::fs::read(out).expect("pydicom's pixels")
}

/// Runs a dcmtk tool; panics with its output if it fails.
pub(crate) fn dcmtk(tool: &str, args: &[&Path], opts: &[&str]) {
    let out = Command::new(tool)
        .args(opts)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{tool} (dcmtk) must be installed: {e}"));
    assert!(
        out.status.success(),
        "{tool} {opts:?} {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A synthetic secondary-capture image: `frames` frames of smooth gradients
/// plus a little structure, so lossy codecs have something to lose.
pub(crate) struct Synthetic {
    pub rows: u16,
    pub columns: u16,
    pub frames: u32,
    /// 1 (MONOCHROME2) or 3 (RGB).
    pub samples: u16,
    /// 8, or 16 with `bits_stored` 12.
    pub bits_allocated: u16,
    pub signed: bool,
}

impl Synthetic {
    pub(crate) fn pixels(&self) -> Vec<u8> {
        let (r, c, s) = (
            usize::from(self.rows),
            usize::from(self.columns),
            usize::from(self.samples),
        );
        let mut out = Vec::new();
        for f in 0..self.frames as usize {
            for y in 0..r {
                for x in 0..c {
                    for k in 0..s {
                        let v = (x * 7 + y * 3 + k * 40 + f * 11 + ((x * y) % 13)) as u32;
                        if self.bits_allocated == 8 {
                            out.push((v % 256) as u8);
                        } else {
                            let v = (v * 5) % 4096;
                            let v = if self.signed {
                                (v as i32 - 2048) as i16 as u16
                            } else {
                                v as u16
                            };
                            out.extend_from_slice(&v.to_le_bytes());
                        }
                    }
                }
            }
        }
        out
    }

    /// The image as a DICOM object in Explicit VR Little Endian.
    pub(crate) fn object(&self, sop_instance_uid: &str) -> DefaultDicomObject {
        let mut ds = InMemDicomObject::new_empty();
        let s = |tag, vr, v: &str| DataElement::new(tag, vr, PrimitiveValue::from(v));
        let us = |tag, v: u16| DataElement::new(tag, VR::US, PrimitiveValue::from(v));
        ds.put(s(
            tags::SOP_CLASS_UID,
            VR::UI,
            uids::SECONDARY_CAPTURE_IMAGE_STORAGE,
        ));
        ds.put(s(tags::SOP_INSTANCE_UID, VR::UI, sop_instance_uid));
        ds.put(s(tags::STUDY_INSTANCE_UID, VR::UI, "2.25.4242"));
        ds.put(s(tags::SERIES_INSTANCE_UID, VR::UI, "2.25.4243"));
        ds.put(s(tags::PATIENT_ID, VR::LO, "TRANSCODE"));
        ds.put(s(tags::MODALITY, VR::CS, "OT"));
        ds.put(us(tags::SAMPLES_PER_PIXEL, self.samples));
        ds.put(s(
            tags::PHOTOMETRIC_INTERPRETATION,
            VR::CS,
            if self.samples == 3 {
                "RGB"
            } else {
                "MONOCHROME2"
            },
        ));
        if self.samples == 3 {
            ds.put(us(tags::PLANAR_CONFIGURATION, 0));
        }
        if self.frames > 1 {
            ds.put(s(tags::NUMBER_OF_FRAMES, VR::IS, &self.frames.to_string()));
        }
        ds.put(us(tags::ROWS, self.rows));
        ds.put(us(tags::COLUMNS, self.columns));
        let stored = if self.bits_allocated == 8 { 8 } else { 12 };
        ds.put(us(tags::BITS_ALLOCATED, self.bits_allocated));
        ds.put(us(tags::BITS_STORED, stored));
        ds.put(us(tags::HIGH_BIT, stored - 1));
        ds.put(us(tags::PIXEL_REPRESENTATION, u16::from(self.signed)));
        let vr = if self.bits_allocated == 8 {
            VR::OB
        } else {
            VR::OW
        };
        ds.put(DataElement::new(
            tags::PIXEL_DATA,
            vr,
            PrimitiveValue::from(self.pixels()),
        ));
        let meta = FileMetaTableBuilder::new()
            .media_storage_sop_class_uid(uids::SECONDARY_CAPTURE_IMAGE_STORAGE)
            .media_storage_sop_instance_uid(sop_instance_uid)
            .transfer_syntax(uids::EXPLICIT_VR_LITTLE_ENDIAN)
            .build()
            .expect("meta");
        ds.with_exact_meta(meta)
    }

    pub(crate) fn write(&self, path: &Path, sop_instance_uid: &str) {
        self.object(sop_instance_uid)
            .write_to_file(path)
            .expect("write the synthetic image");
    }
}

/// The native Pixel Data bytes of a file.
pub(crate) fn file_pixels(path: &Path) -> Vec<u8> {
    let obj = OpenFileOptions::new().open_file(path).expect("open");
    obj.element(tags::PIXEL_DATA)
        .expect("pixel data")
        .to_bytes()
        .expect("native pixel data")
        .to_vec()
}

/// Parses a transcoded dataset.
pub(crate) fn parse_dataset(bytes: &[u8], ts: &str) -> InMemDicomObject {
    use dicom_encoding::TransferSyntaxIndex;
    let ts = dicom_transfer_syntax_registry::TransferSyntaxRegistry
        .get(ts)
        .expect("known syntax");
    InMemDicomObject::read_dataset_with_ts(bytes, ts).expect("the transcoded dataset parses")
}

/// The mean absolute byte difference of two buffers of the same size.
pub(crate) fn mean_difference(a: &[u8], b: &[u8]) -> f64 {
    assert_eq!(a.len(), b.len(), "pixel buffers of different sizes");
    let sum: u64 = a
        .iter()
        .zip(b)
        .map(|(x, y)| u64::from(x.abs_diff(*y)))
        .sum();
    sum as f64 / a.len().max(1) as f64
}

/// The largest difference between two sample buffers of the same layout.
pub(crate) fn max_difference(a: &[u8], b: &[u8], bits_allocated: u16) -> u32 {
    assert_eq!(a.len(), b.len(), "pixel buffers of different sizes");
    if bits_allocated == 8 {
        a.iter()
            .zip(b)
            .map(|(x, y)| u32::from(x.abs_diff(*y)))
            .max()
            .unwrap_or(0)
    } else {
        a.chunks_exact(2)
            .zip(b.chunks_exact(2))
            .map(|(x, y)| {
                // Wrapping, so that signed samples either side of 0 are near.
                let d =
                    u16::from_le_bytes([x[0], x[1]]).wrapping_sub(u16::from_le_bytes([y[0], y[1]]));
                u32::from(d.min(d.wrapping_neg()))
            })
            .max()
            .unwrap_or(0)
    }
}
