//! Splits a JSON array arriving in pieces (an HTTP body) into its elements as they complete,
//! so a 10 MB response is never held whole: memory is one network chunk plus one message, and
//! a message is capped ([`ArraySplitter::with_limit`]). Linear: each byte is scanned once.

/// An incremental scanner over `[ {…}, {…}, … ]`.
#[derive(Debug)]
pub struct ArraySplitter {
    /// Longest element accepted.
    limit: usize,
    /// Bytes examined so far (a measure of the work done).
    scanned: u64,
    buf: Vec<u8>,
    /// Where scanning resumes in `buf`.
    pos: usize,
    /// Start of the element being scanned, if inside one.
    start: Option<usize>,
    depth: usize,
    in_string: bool,
    escaped: bool,
    opened: bool,
    closed: bool,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SplitError {
    #[error("the response body is not a JSON array of objects: {0}")]
    NotAnArray(&'static str),
    /// One element is longer than the splitter may hold.
    #[error("an element of the response body exceeds {limit} bytes")]
    TooLarge { limit: usize },
}

impl Default for ArraySplitter {
    fn default() -> Self {
        Self::with_limit(super::DEFAULT_MAX_MESSAGE_BYTES)
    }
}

impl ArraySplitter {
    /// A splitter that refuses elements longer than `limit` bytes.
    pub fn with_limit(limit: usize) -> Self {
        Self {
            limit,
            scanned: 0,
            buf: Vec::new(),
            pos: 0,
            start: None,
            depth: 0,
            in_string: false,
            escaped: false,
            opened: false,
            closed: false,
        }
    }

    /// Bytes examined since the splitter was made: each byte fed counts once.
    pub fn bytes_scanned(&self) -> u64 {
        self.scanned
    }

    /// Feeds bytes; calls `element` with each complete top-level element.
    pub fn feed<E>(
        &mut self,
        bytes: &[u8],
        mut element: impl FnMut(&[u8]) -> Result<(), E>,
    ) -> Result<(), E>
    where
        E: From<SplitError>,
    {
        self.buf.extend_from_slice(bytes);
        while self.pos < self.buf.len() {
            let b = self.buf[self.pos];
            self.pos += 1;
            self.scanned += 1;
            if self.in_string {
                match (self.escaped, b) {
                    (true, _) => self.escaped = false,
                    (false, b'\\') => self.escaped = true,
                    (false, b'"') => self.in_string = false,
                    _ => {}
                }
                continue;
            }
            match b {
                b'"' => self.in_string = true,
                b'[' | b'{' if !self.opened => {
                    if b != b'[' {
                        return Err(SplitError::NotAnArray("expected `[`").into());
                    }
                    self.opened = true;
                }
                b'[' | b'{' => {
                    if self.depth == 0 {
                        self.start = Some(self.pos - 1);
                    }
                    self.depth += 1;
                }
                b']' | b'}' if self.depth == 0 => {
                    if b != b']' || self.closed {
                        return Err(SplitError::NotAnArray("unbalanced brackets").into());
                    }
                    self.closed = true;
                }
                b']' | b'}' => {
                    self.depth -= 1;
                    if self.depth == 0
                        && let Some(start) = self.start.take()
                    {
                        if self.pos - start > self.limit {
                            return Err(SplitError::TooLarge { limit: self.limit }.into());
                        }
                        element(&self.buf[start..self.pos])?;
                    }
                }
                _ => {}
            }
        }
        // Keep only the unfinished element, unless it is already too long.
        if let Some(start) = self.start
            && self.buf.len() - start > self.limit
        {
            return Err(SplitError::TooLarge { limit: self.limit }.into());
        }
        let keep_from = self.start.unwrap_or(self.pos);
        self.buf.drain(..keep_from);
        self.pos -= keep_from;
        if let Some(start) = self.start.as_mut() {
            *start = 0;
        }
        Ok(())
    }

    /// Checks the array ended (an empty body counts as `[]`).
    pub fn finish(&self) -> Result<(), SplitError> {
        match (self.opened, self.closed, self.depth) {
            (false, _, _) if self.buf.iter().all(u8::is_ascii_whitespace) => Ok(()),
            (true, true, 0) => Ok(()),
            _ => Err(SplitError::NotAnArray("the body ended early")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(pieces: &[&str]) -> Vec<String> {
        let mut s = ArraySplitter::default();
        let mut out = Vec::new();
        for p in pieces {
            s.feed::<SplitError>(p.as_bytes(), |e| {
                out.push(String::from_utf8(e.to_vec()).unwrap());
                Ok(())
            })
            .unwrap();
        }
        s.finish().unwrap();
        out
    }

    #[test]
    fn elements_split_across_chunks_come_out_whole() {
        let body = r#"[{"a":"x]}\"{"},{"b":{"c":[1,2]}} ,{"d":null}]"#;
        let whole = split(&[body]);
        assert_eq!(whole.len(), 3);
        assert_eq!(whole[0], r#"{"a":"x]}\"{"}"#);
        for cut in 1..body.len() {
            assert_eq!(split(&[&body[..cut], &body[cut..]]), whole, "cut at {cut}");
        }
    }

    #[test]
    fn empty_bodies_and_truncated_arrays() {
        assert!(split(&[""]).is_empty());
        assert!(split(&["[]"]).is_empty());
        let mut s = ArraySplitter::default();
        s.feed::<SplitError>(b"[{\"a\":1}", |_| Ok(())).unwrap();
        assert!(s.finish().is_err());
        let mut s = ArraySplitter::default();
        assert!(s.feed::<SplitError>(b"{}", |_| Ok(())).is_err());
    }

    /// Feeds `body` in pieces: (elements, the first error, bytes scanned).
    fn split_limited(
        body: &[u8],
        piece: usize,
        limit: usize,
    ) -> (Vec<Vec<u8>>, Option<SplitError>, u64) {
        let mut s = ArraySplitter::with_limit(limit);
        let mut out = Vec::new();
        for chunk in body.chunks(piece) {
            if let Err(e) = s.feed::<SplitError>(chunk, |e| {
                out.push(e.to_vec());
                Ok(())
            }) {
                return (out, Some(e), s.bytes_scanned());
            }
        }
        (out, None, s.bytes_scanned())
    }

    #[test]
    fn an_element_past_the_limit_is_an_error_naming_the_limit() {
        let mut body = br#"[{"a":1},{"b":""#.to_vec();
        body.extend(std::iter::repeat_n(b'x', 5_000));
        for piece in [1, 100, body.len()] {
            let (elements, error, _) = split_limited(&body, piece, 1_000);
            assert_eq!(elements, vec![br#"{"a":1}"#.to_vec()], "pieces of {piece}");
            let error = error.unwrap_or_else(|| panic!("no error in pieces of {piece}"));
            assert_eq!(error, SplitError::TooLarge { limit: 1_000 });
            assert!(error.to_string().contains("1000 bytes"), "{error}");
        }
        // Right at the limit is fine.
        let element = format!(r#"{{"c":"{}"}}"#, "y".repeat(992));
        assert_eq!(element.len(), 1_000);
        let body = format!("[{element},{element}]");
        let (elements, error, _) = split_limited(body.as_bytes(), 3, 1_000);
        assert_eq!(error, None);
        assert_eq!(elements.len(), 2);
    }

    #[test]
    fn feeding_n_bytes_in_small_pieces_scans_each_byte_a_bounded_number_of_times() {
        let mut body = format!(r#"[{{"big":"{}"}}"#, "z".repeat(200_000));
        for i in 0..10_000 {
            body.push_str(&format!(r#",{{"n":{i}}}"#));
        }
        body.push(']');
        let (elements, error, scanned) = split_limited(body.as_bytes(), 16, 1 << 20);
        assert_eq!(error, None);
        assert_eq!(elements.len(), 10_001);
        let n = body.len() as u64;
        assert!(
            scanned <= 2 * n,
            "scanned {scanned} bytes to split {n}: not linear"
        );
    }
}
