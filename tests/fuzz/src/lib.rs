//! The bodies of shapesync's fuzz targets, one module per target. Each `run` takes the raw
//! bytes libFuzzer made and panics only when it finds a defect: a panic in the code under
//! test, or a property of that code that does not hold. The binaries in `fuzz_targets/` only
//! hand the bytes over, so a crashing input can be replayed from a normal test as well.

pub mod mutations;
pub mod pgoutput;
pub mod shape_log;
pub mod splitters;
pub mod where_clause;

/// Splits `data` into frames of `len: u16 LE` then `len` bytes; a last frame cut short is
/// taken as it is. Used by targets that take a sequence of messages.
pub fn frames(mut data: &[u8]) -> impl Iterator<Item = &[u8]> {
    std::iter::from_fn(move || {
        let (len, rest) = data.split_first_chunk::<2>()?;
        let len = usize::from(u16::from_le_bytes(*len)).min(rest.len());
        let (frame, rest) = rest.split_at(len);
        data = rest;
        Some(frame)
    })
}

/// The inverse of [`frames`], for writing seeds.
pub fn frame(out: &mut Vec<u8>, message: &[u8]) {
    let len = u16::try_from(message.len()).expect("a seed message under 64 KiB");
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(message);
}
