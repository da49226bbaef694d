//! The stored form of an outbox entry (the value in tree `outbox`; the key is the
//! sequence number).
//!
//! Layout, all integers big-endian:
//!
//! ```text
//! version: u8 = 1
//! flags:   u8   bit 0 = progress, bit 1 = has coalesce key, other bits 0
//! [key_len: u32, key: key_len bytes of UTF-8]   only when bit 1 is set
//! event:   the rest (the JSON frame, stored as given)
//! ```
//!
//! Decoding never panics: anything else is a [`RecordError`].

use crate::OutboxEntry;

const VERSION: u8 = 1;
const FLAG_PROGRESS: u8 = 0b01;
const FLAG_HAS_KEY: u8 = 0b10;

/// Why a stored value is not a record (logged; callers turn it into
/// [`crate::StoreError::Corrupt`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RecordError(pub(crate) &'static str);

/// Encodes an entry's value.
pub(crate) fn encode(coalesce_key: Option<&str>, progress: bool, event: &[u8]) -> Vec<u8> {
    let key_len = coalesce_key.map_or(0, |k| 4 + k.len());
    let mut out = Vec::with_capacity(2 + key_len + event.len());
    let mut flags = 0;
    if progress {
        flags |= FLAG_PROGRESS;
    }
    if coalesce_key.is_some() {
        flags |= FLAG_HAS_KEY;
    }
    out.push(VERSION);
    out.push(flags);
    if let Some(key) = coalesce_key {
        // A coalesce key is a short id pair ("dispatch/node"); 4 GiB is out of reach.
        let len = u32::try_from(key.len()).unwrap_or(u32::MAX);
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(key.as_bytes());
    }
    out.extend_from_slice(event);
    out
}

/// Decodes the value stored under sequence number `seq`.
pub(crate) fn decode(seq: u64, bytes: &[u8]) -> Result<OutboxEntry, RecordError> {
    let [version, flags, rest @ ..] = bytes else {
        return Err(RecordError("shorter than its header"));
    };
    if *version != VERSION {
        return Err(RecordError("unknown version"));
    }
    if flags & !(FLAG_PROGRESS | FLAG_HAS_KEY) != 0 {
        return Err(RecordError("unknown flags"));
    }
    let (coalesce_key, event) = if flags & FLAG_HAS_KEY != 0 {
        let (len, rest) = rest
            .split_first_chunk::<4>()
            .ok_or(RecordError("truncated key length"))?;
        let len = usize::try_from(u32::from_be_bytes(*len))
            .map_err(|_| RecordError("key length out of range"))?;
        if rest.len() < len {
            return Err(RecordError("truncated key"));
        }
        let (key, event) = rest.split_at(len);
        let key = std::str::from_utf8(key).map_err(|_| RecordError("key is not UTF-8"))?;
        (Some(key.to_owned()), event)
    } else {
        (None, rest)
    };
    Ok(OutboxEntry {
        seq,
        coalesce_key,
        progress: flags & FLAG_PROGRESS != 0,
        event: event.to_vec(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn round_trip_examples() {
        let with_key = encode(Some("d1/node_1"), true, b"{\"a\":1}");
        assert_eq!(
            decode(7, &with_key),
            Ok(OutboxEntry {
                seq: 7,
                coalesce_key: Some("d1/node_1".into()),
                progress: true,
                event: b"{\"a\":1}".to_vec(),
            })
        );
        let plain = encode(None, false, b"");
        assert_eq!(
            decode(1, &plain),
            Ok(OutboxEntry {
                seq: 1,
                coalesce_key: None,
                progress: false,
                event: vec![],
            })
        );
    }

    #[test]
    fn malformed_values_are_errors() {
        assert!(decode(1, &[]).is_err());
        assert!(decode(1, &[VERSION]).is_err());
        assert!(decode(1, &[9, 0]).is_err());
        assert!(decode(1, &[VERSION, 0b100]).is_err());
        assert!(decode(1, &[VERSION, FLAG_HAS_KEY, 0, 0]).is_err());
        assert!(decode(1, &[VERSION, FLAG_HAS_KEY, 0, 0, 0, 5, b'a']).is_err());
        assert!(decode(1, &[VERSION, FLAG_HAS_KEY, 0, 0, 0, 1, 0xff]).is_err());
        assert!(decode(1, &[VERSION, FLAG_HAS_KEY, 0xff, 0xff, 0xff, 0xff]).is_err());
    }

    proptest! {
        #[test]
        fn round_trip(
            seq in any::<u64>(),
            key in proptest::option::of(".{0,20}"),
            progress in any::<bool>(),
            event in proptest::collection::vec(any::<u8>(), 0..200),
        ) {
            let decoded = decode(seq, &encode(key.as_deref(), progress, &event)).unwrap();
            prop_assert_eq!(decoded, OutboxEntry { seq, coalesce_key: key, progress, event });
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = decode(1, &bytes);
        }

        #[test]
        fn arbitrary_bytes_after_a_valid_header_never_panic(
            flags in 0u8..4,
            rest in proptest::collection::vec(any::<u8>(), 0..64),
        ) {
            let mut bytes = vec![VERSION, flags];
            bytes.extend(rest);
            let _ = decode(1, &bytes);
        }
    }
}
