//! Splitting a Server-Sent Events body into the data of its events (the WHATWG
//! `text/event-stream` rules: lines end in `\n`, `\r\n` or `\r`; `data:` lines, one optional
//! space after the colon, join with `\n`; a blank line ends an event; comments and the other
//! fields are ignored). Pure, and linear in the bytes fed: each byte is looked at once, when
//! it is fed; only the unfinished last line is kept between reads (a 100k-row transaction
//! arrives as megabytes of events in a few reads, a hostile server may send a line without
//! end).
//!
//! An event is capped ([`EventSplitter::with_limit`]): a line or an event longer than the
//! limit is an [`EventTooLarge`] error as soon as it passes it, not a buffer that grows until
//! memory runs out.

use std::collections::VecDeque;

/// `data: `: a line may be this much longer than the data it carries.
const DATA_PREFIX: usize = 6;

/// A line or an event passed the splitter's limit.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("an event of the event stream exceeds {limit} bytes")]
pub struct EventTooLarge {
    pub limit: usize,
}

/// An incremental event splitter.
#[derive(Debug)]
pub struct EventSplitter {
    /// The unfinished last line fed.
    line: Vec<u8>,
    /// The data lines of the event being read.
    data: Vec<u8>,
    has_data: bool,
    /// The previous chunk ended in `\r`: a `\n` starting the next one belongs to it.
    after_cr: bool,
    /// Complete events not yet taken.
    ready: VecDeque<Vec<u8>>,
    limit: usize,
    /// Bytes examined so far (each fed byte once; a measure of the work done).
    scanned: u64,
}

impl Default for EventSplitter {
    fn default() -> Self {
        Self::with_limit(super::DEFAULT_MAX_MESSAGE_BYTES)
    }
}

impl EventSplitter {
    /// A splitter that refuses events whose data is longer than `limit` bytes (and lines
    /// longer than that plus a `data: ` prefix).
    pub fn with_limit(limit: usize) -> Self {
        Self {
            line: Vec::new(),
            data: Vec::new(),
            has_data: false,
            after_cr: false,
            ready: VecDeque::new(),
            limit,
            scanned: 0,
        }
    }

    /// Adds bytes read from the body; fails once a line or an event passes the limit (the
    /// splitter is then of no further use).
    pub fn feed(&mut self, bytes: &[u8]) -> Result<(), EventTooLarge> {
        let mut rest = bytes;
        if self.after_cr && !rest.is_empty() {
            self.after_cr = false;
            if let Some(tail) = rest.strip_prefix(b"\n") {
                self.scanned += 1;
                rest = tail;
            }
        }
        while let Some(end) = rest.iter().position(|&b| b == b'\n' || b == b'\r') {
            self.scanned += end as u64 + 1;
            let (head, tail) = rest.split_at(end);
            let crlf = tail.starts_with(b"\r\n");
            if tail.len() == 1 && tail[0] == b'\r' {
                self.after_cr = true;
            }
            rest = &tail[if crlf { 2 } else { 1 }..];
            self.scanned += u64::from(crlf);
            if self.line.is_empty() {
                self.end_line(head)?;
            } else {
                self.grow_line(head)?;
                let line = std::mem::take(&mut self.line);
                self.end_line(&line)?;
            }
        }
        self.scanned += rest.len() as u64;
        self.grow_line(rest)
    }

    /// The data of the next complete event with data, if one has arrived.
    pub fn next_event(&mut self) -> Option<Vec<u8>> {
        self.ready.pop_front()
    }

    /// Bytes examined since the splitter was made: each byte fed counts once.
    pub fn bytes_scanned(&self) -> u64 {
        self.scanned
    }

    fn grow_line(&mut self, bytes: &[u8]) -> Result<(), EventTooLarge> {
        if self.line.len() + bytes.len() > self.limit.saturating_add(DATA_PREFIX) {
            return Err(EventTooLarge { limit: self.limit });
        }
        self.line.extend_from_slice(bytes);
        Ok(())
    }

    fn end_line(&mut self, line: &[u8]) -> Result<(), EventTooLarge> {
        if line.is_empty() {
            if std::mem::take(&mut self.has_data) {
                self.ready.push_back(std::mem::take(&mut self.data));
            }
            return Ok(());
        }
        let Some(value) = line.strip_prefix(b"data") else {
            return Ok(()); // a comment or another field
        };
        let value = match value {
            [] => value,
            [b':', b' ', rest @ ..] | [b':', rest @ ..] => rest,
            _ => return Ok(()), // a field named e.g. `datafoo`
        };
        let separator = usize::from(self.has_data);
        if self.data.len() + separator + value.len() > self.limit {
            return Err(EventTooLarge { limit: self.limit });
        }
        if self.has_data {
            self.data.push(b'\n');
        }
        self.data.extend_from_slice(value);
        self.has_data = true;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split_in_pieces(body: &[u8], piece: usize) -> Vec<String> {
        let mut splitter = EventSplitter::default();
        let mut events = Vec::new();
        for chunk in body.chunks(piece.max(1)) {
            splitter.feed(chunk).unwrap();
            while let Some(event) = splitter.next_event() {
                events.push(String::from_utf8(event).unwrap());
            }
        }
        events
    }

    #[test]
    fn events_are_split_the_same_way_however_the_body_is_cut() {
        let body = b": keep-alive\n\ndata: {\"a\":1}\n\ndata:{\"b\":2}\r\n\r\nevent: x\nid: 7\ndata: one\ndata: two\n\ndata\n\nretry: 5\n\ndata: last\r\r";
        let expected = vec!["{\"a\":1}", "{\"b\":2}", "one\ntwo", "", "last"];
        for piece in 1..body.len() + 1 {
            assert_eq!(split_in_pieces(body, piece), expected, "pieces of {piece}");
        }
    }

    #[test]
    fn an_event_without_its_blank_line_is_not_dispatched() {
        assert!(split_in_pieces(b"data: half\n", 4).is_empty());
        assert!(split_in_pieces(b"data: half", 4).is_empty());
    }

    #[test]
    fn only_one_space_after_the_colon_is_dropped_and_other_fields_are_ignored() {
        assert_eq!(
            split_in_pieces(b"data:  two spaces\ndatafoo: no\n\n", 3),
            vec![" two spaces"]
        );
    }

    #[test]
    fn many_events_in_one_read_come_out_in_order() {
        let mut body = Vec::new();
        for i in 0..10_000 {
            body.extend_from_slice(format!("data: {{\"n\":{i}}}\n\n").as_bytes());
        }
        let events = split_in_pieces(&body, body.len());
        assert_eq!(events.len(), 10_000);
        assert_eq!(events[9_999], "{\"n\":9999}");
    }

    /// Feeds `body` in pieces of `piece` bytes, taking events out after each: the events
    /// completed, the first error, the bytes scanned.
    fn split_limited(
        body: &[u8],
        piece: usize,
        limit: usize,
    ) -> (Vec<Vec<u8>>, Option<EventTooLarge>, u64) {
        let mut splitter = EventSplitter::with_limit(limit);
        let mut events = Vec::new();
        for chunk in body.chunks(piece) {
            let fed = splitter.feed(chunk);
            while let Some(event) = splitter.next_event() {
                events.push(event);
            }
            if let Err(e) = fed {
                return (events, Some(e), splitter.bytes_scanned());
            }
        }
        (events, None, splitter.bytes_scanned())
    }

    #[test]
    fn a_line_without_an_end_past_the_limit_is_an_error_naming_the_limit() {
        let mut body = b"data: ok\n\ndata: ".to_vec();
        body.extend(std::iter::repeat_n(b'x', 5_000));
        for piece in [1, 7, 100, 5_000, body.len()] {
            let (events, error, _) = split_limited(&body, piece, 1_000);
            assert_eq!(events, vec![b"ok".to_vec()], "pieces of {piece}");
            let error = error.unwrap_or_else(|| panic!("no error in pieces of {piece}"));
            assert_eq!(error, EventTooLarge { limit: 1_000 });
            assert!(error.to_string().contains("1000 bytes"), "{error}");
        }
    }

    #[test]
    fn an_event_of_many_short_lines_past_the_limit_is_an_error() {
        let body = b"data: 0123456789\n".repeat(200);
        let (events, error, _) = split_limited(&body, 64, 1_000);
        assert!(events.is_empty());
        assert_eq!(error, Some(EventTooLarge { limit: 1_000 }));
    }

    #[test]
    fn events_up_to_the_limit_pass() {
        let mut body = b"data: ".to_vec();
        body.extend(std::iter::repeat_n(b'y', 1_000));
        body.extend_from_slice(b"\n\n");
        body.extend_from_slice(&body.clone());
        let (events, error, _) = split_limited(&body, 3, 1_000);
        assert_eq!(error, None);
        assert_eq!(events, vec![vec![b'y'; 1_000]; 2]);
    }

    #[test]
    fn feeding_n_bytes_in_small_pieces_scans_each_byte_a_bounded_number_of_times() {
        // One long line (below the limit), then many small events: both in 16-byte pieces.
        let mut body = b"data: ".to_vec();
        body.extend(std::iter::repeat_n(b'z', 200_000));
        body.extend_from_slice(b"\n\n");
        for i in 0..10_000 {
            body.extend_from_slice(format!("data: {i}\r\n\r\n").as_bytes());
        }
        let (events, error, scanned) = split_limited(&body, 16, 1 << 20);
        assert_eq!(error, None);
        assert_eq!(events.len(), 10_001);
        let n = body.len() as u64;
        assert!(
            scanned <= 2 * n,
            "scanned {scanned} bytes to split {n}: not linear"
        );
    }
}
