//! Big-endian `u64` keys: sled orders keys bytewise, so big-endian sequence numbers
//! iterate in numeric order.

/// The key for sequence number `n`.
pub(crate) fn u64_key(n: u64) -> [u8; 8] {
    n.to_be_bytes()
}

/// Decodes a key or value written by [`u64_key`]; `None` if it is not exactly 8 bytes.
pub(crate) fn decode_u64(bytes: &[u8]) -> Option<u64> {
    let bytes: [u8; 8] = bytes.try_into().ok()?;
    Some(u64::from_be_bytes(bytes))
}

/// Renders a raw key for [`crate::StoreError::Corrupt`]: decimal when it is a `u64` key,
/// hex otherwise.
pub(crate) fn display_u64_key(bytes: &[u8]) -> String {
    match decode_u64(bytes) {
        Some(n) => n.to_string(),
        None => bytes.iter().map(|b| format!("{b:02x}")).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_sort_like_numbers() {
        let mut numbers = [0, 1, 255, 256, 65_535, 1 << 40, u64::MAX];
        numbers.reverse();
        let mut keys: Vec<[u8; 8]> = numbers.iter().map(|n| u64_key(*n)).collect();
        keys.sort();
        let decoded: Vec<u64> = keys.iter().filter_map(|k| decode_u64(k)).collect();
        assert_eq!(decoded, vec![0, 1, 255, 256, 65_535, 1 << 40, u64::MAX]);
    }

    #[test]
    fn wrong_length_is_not_a_key() {
        assert_eq!(decode_u64(&[1, 2, 3]), None);
        assert_eq!(display_u64_key(&[0xab, 0x01]), "ab01");
        assert_eq!(display_u64_key(&u64_key(42)), "42");
    }
}
