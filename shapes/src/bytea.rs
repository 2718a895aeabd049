//! `bytea` in Postgres' hex text form (`\x0a1b`), as shapes send it and mutations take it.

/// `\x0a1b` → bytes (`None` for anything else).
///
/// ```
/// assert_eq!(shapes::bytea::decode("\\x00ff"), Some(vec![0, 255]));
/// assert_eq!(shapes::bytea::decode("00ff"), None);
/// ```
pub fn decode(text: &str) -> Option<Vec<u8>> {
    let hex = text.strip_prefix("\\x")?;
    if hex.len() % 2 != 0 {
        return None;
    }
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
        .collect()
}

/// bytes → `\x0a1b`.
///
/// ```
/// assert_eq!(shapes::bytea::encode(&[0, 255]), "\\x00ff");
/// ```
pub fn encode(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(2 + bytes.len() * 2);
    out.push_str("\\x");
    for &b in bytes {
        out.push(char::from(HEX[usize::from(b >> 4)]));
        out.push(char::from(HEX[usize::from(b & 0x0f)]));
    }
    out
}
