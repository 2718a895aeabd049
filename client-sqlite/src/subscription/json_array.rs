//! Splits a JSON array arriving in pieces (an HTTP body) into its elements as they complete,
//! so a 10 MB response is never held whole: memory is one network chunk plus one message.

/// An incremental scanner over `[ {…}, {…}, … ]`.
#[derive(Debug, Default)]
pub struct ArraySplitter {
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

#[derive(Debug, thiserror::Error)]
#[error("the response body is not a JSON array of objects: {0}")]
pub struct SplitError(&'static str);

impl ArraySplitter {
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
                        return Err(SplitError("expected `[`").into());
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
                        return Err(SplitError("unbalanced brackets").into());
                    }
                    self.closed = true;
                }
                b']' | b'}' => {
                    self.depth -= 1;
                    if self.depth == 0
                        && let Some(start) = self.start.take()
                    {
                        element(&self.buf[start..self.pos])?;
                    }
                }
                _ => {}
            }
        }
        // Keep only the unfinished element.
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
            _ => Err(SplitError("the body ended early")),
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
}
