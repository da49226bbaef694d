//! Synthetic studies: real, valid DICOM CT instances built in code and zipped
//! as the backend's download API serves them. The demo dispatches one; tests
//! and benchmarks use them as their data.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use dicom_core::value::{PixelFragmentSequence, PrimitiveValue, C};
use dicom_core::{DataElement, VR};
use dicom_dictionary_std::tags;
use dicom_object::meta::FileMetaTableBuilder;
use dicom_object::InMemDicomObject;

pub const CT_IMAGE_STORAGE: &str = "1.2.840.10008.5.1.4.1.1.2";
pub const EXPLICIT_VR_LE: &str = "1.2.840.10008.1.2.1";
pub const IMPLICIT_VR_LE: &str = "1.2.840.10008.1.2";
pub const JPEG_BASELINE: &str = "1.2.840.10008.1.2.4.50";

/// A transfer syntax the generator can write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Syntax {
    ExplicitLe,
    ImplicitLe,
    /// Encapsulated pixel data (a fake JPEG fragment): cannot be converted without decoding.
    JpegBaseline,
}

impl Syntax {
    pub fn uid(self) -> &'static str {
        match self {
            Syntax::ExplicitLe => EXPLICIT_VR_LE,
            Syntax::ImplicitLe => IMPLICIT_VR_LE,
            Syntax::JpegBaseline => JPEG_BASELINE,
        }
    }
}

/// One series of a synthetic study.
#[derive(Debug, Clone)]
pub struct SeriesSpec {
    pub number: i32,
    pub uid: String,
    pub instances: usize,
    pub syntax: Syntax,
}

/// A synthetic study.
#[derive(Debug, Clone)]
pub struct StudySpec {
    pub study_uid: String,
    pub patient_id: String,
    pub series: Vec<SeriesSpec>,
    /// Pixel bytes per native instance (rounded to a square 16-bit image).
    pub pixel_bytes: usize,
}

/// One generated instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyntheticInstance {
    pub sop_instance_uid: String,
    pub series_instance_uid: String,
    pub series_number: i32,
    pub transfer_syntax: String,
    /// Name inside the archive.
    pub entry: String,
}

static UID_COUNTER: AtomicU64 = AtomicU64::new(1);

/// A fresh UID under the `2.25` (UUID-derived) root: unique across runs.
pub fn fresh_uid() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let n = UID_COUNTER.fetch_add(1, Ordering::Relaxed);
    format!(
        "2.25.{}{:06}{:05}",
        nanos % 10u128.pow(24),
        std::process::id() % 1_000_000,
        n
    )
}

impl StudySpec {
    /// `series` series of `per_series` instances each, all Explicit VR LE.
    pub fn simple(series: usize, per_series: usize, pixel_bytes: usize) -> StudySpec {
        StudySpec {
            study_uid: fresh_uid(),
            patient_id: format!("PAT-{}", UID_COUNTER.fetch_add(1, Ordering::Relaxed)),
            series: (0..series)
                .map(|i| SeriesSpec {
                    number: i as i32 + 1,
                    uid: fresh_uid(),
                    instances: per_series,
                    syntax: Syntax::ExplicitLe,
                })
                .collect(),
            pixel_bytes,
        }
    }

    /// The instances this spec generates, in order.
    pub fn instances(&self) -> Vec<SyntheticInstance> {
        let mut out = Vec::new();
        for s in &self.series {
            for i in 0..s.instances {
                let sop = format!("{}.{}", s.uid, i + 1);
                out.push(SyntheticInstance {
                    entry: format!("{}/series-{}/IM{:05}.dcm", self.patient_id, s.number, i + 1),
                    sop_instance_uid: sop,
                    series_instance_uid: s.uid.clone(),
                    series_number: s.number,
                    transfer_syntax: s.syntax.uid().to_owned(),
                });
            }
        }
        out
    }

    /// The Part 10 bytes of one instance.
    pub fn instance_bytes(
        &self,
        inst: &SyntheticInstance,
        index: usize,
    ) -> Result<Vec<u8>, String> {
        let syntax = match inst.transfer_syntax.as_str() {
            IMPLICIT_VR_LE => Syntax::ImplicitLe,
            JPEG_BASELINE => Syntax::JpegBaseline,
            _ => Syntax::ExplicitLe,
        };
        let side = (((self.pixel_bytes / 2) as f64).sqrt() as u16).max(1);
        let mut obj = InMemDicomObject::new_empty();
        let mut put = |tag, vr, value: PrimitiveValue| obj.put(DataElement::new(tag, vr, value));
        put(tags::SOP_CLASS_UID, VR::UI, CT_IMAGE_STORAGE.into());
        put(
            tags::SOP_INSTANCE_UID,
            VR::UI,
            inst.sop_instance_uid.as_str().into(),
        );
        put(tags::MODALITY, VR::CS, "CT".into());
        put(tags::PATIENT_NAME, VR::PN, "Synthetic^Patient".into());
        put(tags::PATIENT_ID, VR::LO, self.patient_id.as_str().into());
        put(
            tags::STUDY_INSTANCE_UID,
            VR::UI,
            self.study_uid.as_str().into(),
        );
        put(
            tags::SERIES_INSTANCE_UID,
            VR::UI,
            inst.series_instance_uid.as_str().into(),
        );
        put(
            tags::SERIES_NUMBER,
            VR::IS,
            inst.series_number.to_string().into(),
        );
        put(
            tags::INSTANCE_NUMBER,
            VR::IS,
            (index + 1).to_string().into(),
        );
        put(tags::SAMPLES_PER_PIXEL, VR::US, PrimitiveValue::from(1_u16));
        put(
            tags::PHOTOMETRIC_INTERPRETATION,
            VR::CS,
            "MONOCHROME2".into(),
        );
        put(tags::ROWS, VR::US, PrimitiveValue::from(side));
        put(tags::COLUMNS, VR::US, PrimitiveValue::from(side));
        put(
            tags::PIXEL_REPRESENTATION,
            VR::US,
            PrimitiveValue::from(0_u16),
        );
        if syntax == Syntax::JpegBaseline {
            put(tags::BITS_ALLOCATED, VR::US, PrimitiveValue::from(8_u16));
            put(tags::BITS_STORED, VR::US, PrimitiveValue::from(8_u16));
            put(tags::HIGH_BIT, VR::US, PrimitiveValue::from(7_u16));
            // A fake JPEG stream: SOI … EOI, even length.
            let fragment = vec![0xFF, 0xD8, 0xFF, 0xE0, 0x00, 0x10, 0xFF, 0xD9];
            obj.put(DataElement::new(
                tags::PIXEL_DATA,
                VR::OB,
                PixelFragmentSequence::new_fragments(vec![fragment]),
            ));
        } else {
            put(tags::BITS_ALLOCATED, VR::US, PrimitiveValue::from(16_u16));
            put(tags::BITS_STORED, VR::US, PrimitiveValue::from(12_u16));
            put(tags::HIGH_BIT, VR::US, PrimitiveValue::from(11_u16));
            let n = usize::from(side) * usize::from(side);
            // Cheap noise so the data is not trivially compressible.
            let mut x = (index as u32).wrapping_mul(2_654_435_761).wrapping_add(1);
            let pixels: Vec<u16> = (0..n)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 17;
                    x ^= x << 5;
                    (x & 0x0FFF) as u16
                })
                .collect();
            put(
                tags::PIXEL_DATA,
                VR::OW,
                PrimitiveValue::U16(C::from(pixels)),
            );
        }
        let meta = FileMetaTableBuilder::new()
            .transfer_syntax(syntax.uid())
            .media_storage_sop_class_uid(CT_IMAGE_STORAGE)
            .media_storage_sop_instance_uid(inst.sop_instance_uid.as_str())
            .build()
            .map_err(|e| format!("meta group: {e}"))?;
        let file = obj.with_exact_meta(meta);
        let mut out = Vec::with_capacity(self.pixel_bytes + 2048);
        file.write_all(&mut out)
            .map_err(|e| format!("writing the instance: {e}"))?;
        Ok(out)
    }

    /// Writes every instance as a file under `dir` (flat, `{sop}.dcm`).
    pub fn write_files(&self, dir: &Path) -> Result<Vec<SyntheticInstance>, String> {
        std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
        let instances = self.instances();
        for (i, inst) in instances.iter().enumerate() {
            let bytes = self.instance_bytes(inst, i)?;
            std::fs::write(dir.join(format!("{}.dcm", inst.sop_instance_uid)), bytes)
                .map_err(|e| e.to_string())?;
        }
        Ok(instances)
    }

    /// Writes the study as a zip archive at `path`, streaming (one instance in
    /// memory at a time), with a README and a manifest that are not DICOM.
    pub async fn write_zip(&self, path: &Path) -> Result<Vec<SyntheticInstance>, String> {
        use async_zip::base::write::ZipFileWriter;
        use async_zip::{Compression, ZipEntryBuilder};
        let file = tokio::fs::File::create(path)
            .await
            .map_err(|e| e.to_string())?;
        let mut zip = ZipFileWriter::with_tokio(tokio::io::BufWriter::with_capacity(1 << 20, file));
        let instances = self.instances();
        let readme = b"Synthetic study generated by laminate-proxy for tests and the demo.\n";
        zip.write_entry_whole(
            ZipEntryBuilder::new("README.txt".to_owned().into(), Compression::Deflate),
            readme,
        )
        .await
        .map_err(|e| e.to_string())?;
        for (i, inst) in instances.iter().enumerate() {
            let bytes = self.instance_bytes(inst, i)?;
            // Pixel noise does not compress: store, as PACS exports usually do.
            let entry = ZipEntryBuilder::new(inst.entry.clone().into(), Compression::Stored);
            zip.write_entry_whole(entry, &bytes)
                .await
                .map_err(|e| e.to_string())?;
        }
        let manifest = serde_json::json!({
            "study_instance_uid": self.study_uid,
            "instances": instances.iter().map(|i| &i.sop_instance_uid).collect::<Vec<_>>(),
        });
        zip.write_entry_whole(
            ZipEntryBuilder::new("manifest.json".to_owned().into(), Compression::Deflate),
            manifest.to_string().as_bytes(),
        )
        .await
        .map_err(|e| e.to_string())?;
        let mut inner = zip.close().await.map_err(|e| e.to_string())?.into_inner();
        tokio::io::AsyncWriteExt::flush(&mut inner)
            .await
            .map_err(|e| e.to_string())?;
        Ok(instances)
    }

    /// The archive in memory (small studies; tests).
    pub fn zip_bytes(&self) -> Result<(bytes::Bytes, Vec<SyntheticInstance>), String> {
        let dir = tempdir_path();
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        let path = dir.join("study.zip");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        let instances = rt.block_on(self.write_zip(&path))?;
        let bytes = std::fs::read(&path).map_err(|e| e.to_string())?;
        let _ = std::fs::remove_dir_all(&dir);
        Ok((bytes::Bytes::from(bytes), instances))
    }
}

fn tempdir_path() -> std::path::PathBuf {
    std::env::temp_dir().join(format!("laminate-study-{}", fresh_uid()))
}
