//! Reading an association's PDUs off its socket in as few reads as the
//! socket allows.
//!
//! dicom-ul's `receive()` reads through a new 8 KiB `BufReader` on every
//! call and copies each PDV into a `Vec` of its own: a 256 KiB P-DATA-TF took
//! ~32 `recv` calls and three copies of its bytes. Here a P-DATA-TF is read
//! whole into one buffer kept for the association's lifetime, and its PDVs
//! are handed out as slices of it. Every other PDU (release, abort, anything
//! unexpected) is small and goes to dicom-ul's own parser.
//!
//! Reading the socket directly is sound once the association is established:
//! a peer sends nothing between its A-ASSOCIATE-RQ and our A-ASSOCIATE-AC,
//! so dicom-ul has nothing of the peer's buffered. Lengths come from the
//! peer and are checked before anything is allocated or read: a PDU longer
//! than the maximum we announced is refused (as dicom-ul's strict mode does),
//! a PDV item must fit its PDU.

use std::io::{self, Read};

use dicom_ul::pdu::{PDataValueType, Pdu};

/// The P-DATA-TF PDU type.
const P_DATA_TF: u8 = 0x04;

#[derive(Debug, thiserror::Error)]
pub enum PduError {
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("malformed PDU: {0}")]
    Malformed(String),
}

/// One PDV of a P-DATA-TF, borrowed from the reader's buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pdv<'a> {
    pub presentation_context_id: u8,
    pub value_type: PDataValueType,
    pub is_last: bool,
    pub data: &'a [u8],
}

/// What one read produced.
#[derive(Debug)]
pub enum Received<'a> {
    PData(Vec<Pdv<'a>>),
    Other(Pdu),
}

/// Reads one association's PDUs; keeps its buffer between them.
#[derive(Debug)]
pub struct PduReader {
    buf: Vec<u8>,
    max_pdu_length: u32,
}

impl PduReader {
    /// `max_pdu_length`: the maximum length we announced at negotiation.
    pub fn new(max_pdu_length: u32) -> Self {
        Self {
            buf: Vec::new(),
            max_pdu_length,
        }
    }

    /// Reads the next whole PDU from `stream`.
    pub fn read(&mut self, stream: &mut impl Read) -> Result<Received<'_>, PduError> {
        let mut head = [0u8; 6];
        stream.read_exact(&mut head)?;
        let len = u32::from_be_bytes([head[2], head[3], head[4], head[5]]);
        if len > self.max_pdu_length {
            return Err(PduError::Malformed(format!(
                "a PDU of {len} bytes; the maximum announced is {}",
                self.max_pdu_length
            )));
        }
        let len = len as usize;
        // Grows to the largest PDU seen (at most the announced maximum) and
        // stays: no allocation or zero-filling per PDU.
        if self.buf.len() < len {
            self.buf.resize(len, 0);
        }
        let body = &mut self.buf[..len];
        stream.read_exact(body)?;
        if head[0] != P_DATA_TF {
            let mut whole = Vec::with_capacity(6 + len);
            whole.extend_from_slice(&head);
            whole.extend_from_slice(body);
            return match dicom_ul::pdu::read_pdu(&whole[..], self.max_pdu_length, true) {
                Ok(Some(pdu)) => Ok(Received::Other(pdu)),
                Ok(None) => Err(PduError::Malformed("a truncated PDU".into())),
                Err(e) => Err(PduError::Malformed(e.to_string())),
            };
        }
        pdvs(&self.buf[..len]).map(Received::PData)
    }
}

/// The PDV items of a P-DATA-TF body.
fn pdvs(mut body: &[u8]) -> Result<Vec<Pdv<'_>>, PduError> {
    let mut items = Vec::with_capacity(2);
    while !body.is_empty() {
        let Some((len, rest)) = body.split_first_chunk::<4>() else {
            return Err(PduError::Malformed("a PDV item header cut short".into()));
        };
        let len = u32::from_be_bytes(*len) as usize;
        if len < 2 || len > rest.len() {
            return Err(PduError::Malformed(format!(
                "a PDV item of {len} bytes in {} remaining",
                rest.len()
            )));
        }
        let (item, after) = rest.split_at(len);
        let control = item[1];
        items.push(Pdv {
            presentation_context_id: item[0],
            value_type: if control & 0x01 != 0 {
                PDataValueType::Command
            } else {
                PDataValueType::Data
            },
            is_last: control & 0x02 != 0,
            data: &item[2..],
        });
        body = after;
    }
    if items.is_empty() {
        return Err(PduError::Malformed("a P-DATA-TF without PDV".into()));
    }
    Ok(items)
}

#[cfg(test)]
mod tests {
    use super::*;
    use dicom_ul::pdu::PDataValue;

    fn wire(pdu: &Pdu) -> Vec<u8> {
        let mut bytes = Vec::new();
        dicom_ul::write_pdu(&mut bytes, pdu).unwrap();
        bytes
    }

    #[test]
    fn reads_what_dicom_ul_writes_pdv_by_pdv_and_pdu_by_pdu() {
        let pdata = Pdu::PData {
            data: vec![
                PDataValue {
                    presentation_context_id: 1,
                    value_type: PDataValueType::Command,
                    is_last: true,
                    data: vec![1, 2, 3],
                },
                PDataValue {
                    presentation_context_id: 1,
                    value_type: PDataValueType::Data,
                    is_last: false,
                    data: vec![9; 1000],
                },
            ],
        };
        let mut stream = wire(&pdata);
        stream.extend(wire(&Pdu::ReleaseRQ));
        let mut stream = &stream[..];
        let mut reader = PduReader::new(16 * 1024);
        match reader.read(&mut stream).unwrap() {
            Received::PData(pdvs) => {
                assert_eq!(pdvs.len(), 2);
                assert_eq!(pdvs[0].value_type, PDataValueType::Command);
                assert!(pdvs[0].is_last);
                assert_eq!(pdvs[0].data, [1, 2, 3]);
                assert_eq!(pdvs[1].value_type, PDataValueType::Data);
                assert!(!pdvs[1].is_last);
                assert_eq!(pdvs[1].data, [9; 1000]);
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            reader.read(&mut stream).unwrap(),
            Received::Other(Pdu::ReleaseRQ)
        ));
        assert!(matches!(reader.read(&mut stream), Err(PduError::Io(_))));
    }

    #[test]
    fn refuses_lengths_that_do_not_fit_before_reading_them() {
        let mut reader = PduReader::new(1024);
        // A PDU longer than announced: refused from its header alone.
        let mut huge: &[u8] = &[0x04, 0, 0x7f, 0xff, 0xff, 0xff];
        assert!(matches!(
            reader.read(&mut huge),
            Err(PduError::Malformed(_))
        ));
        // A PDV item claiming more than its PDU holds.
        let mut bad: &[u8] = &[0x04, 0, 0, 0, 0, 8, 0, 0, 0, 100, 1, 3, 0, 0];
        assert!(matches!(reader.read(&mut bad), Err(PduError::Malformed(_))));
        // A PDV item too short for its header.
        let mut short: &[u8] = &[0x04, 0, 0, 0, 0, 5, 0, 0, 0, 1, 1];
        assert!(matches!(
            reader.read(&mut short),
            Err(PduError::Malformed(_))
        ));
        // An empty P-DATA-TF.
        let mut empty: &[u8] = &[0x04, 0, 0, 0, 0, 0];
        assert!(matches!(
            reader.read(&mut empty),
            Err(PduError::Malformed(_))
        ));
    }

    #[test]
    fn a_truncated_stream_is_an_io_error_not_a_pdu() {
        let bytes = wire(&Pdu::PData {
            data: vec![PDataValue {
                presentation_context_id: 3,
                value_type: PDataValueType::Data,
                is_last: true,
                data: vec![5; 64],
            }],
        });
        let mut cut = &bytes[..bytes.len() - 10];
        let mut reader = PduReader::new(1024);
        assert!(matches!(reader.read(&mut cut), Err(PduError::Io(_))));
    }
}
