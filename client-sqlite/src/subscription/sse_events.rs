//! Splitting a Server-Sent Events body into the data of its events (the WHATWG
//! `text/event-stream` rules: lines end in `\n`, `\r\n` or `\r`; `data:` lines, one optional
//! space after the colon, join with `\n`; a blank line ends an event; comments and the other
//! fields are ignored). Pure, and linear in the bytes fed: the consumed prefix of the buffer
//! is dropped at most once per `feed`, never once per event (a 100k-row transaction arrives
//! as megabytes of events in a few reads).

/// An incremental event splitter.
#[derive(Debug, Default)]
pub struct EventSplitter {
    buf: Vec<u8>,
    /// Where the next unread line starts in `buf`.
    pos: usize,
    /// The data lines of the event being read.
    data: Vec<u8>,
    has_data: bool,
    /// The previous chunk ended in `\r`: a `\n` starting the next one belongs to it.
    after_cr: bool,
}

impl EventSplitter {
    /// Adds bytes read from the body.
    pub fn feed(&mut self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        if self.pos > 0 {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        let bytes = match (self.after_cr, bytes.first()) {
            (true, Some(b'\n')) => &bytes[1..],
            _ => bytes,
        };
        self.after_cr = false;
        self.buf.extend_from_slice(bytes);
    }

    /// The data of the next complete event with data, if one has arrived.
    pub fn next_event(&mut self) -> Option<Vec<u8>> {
        while let Some(end) = self.buf[self.pos..]
            .iter()
            .position(|&b| b == b'\n' || b == b'\r')
        {
            let line_end = self.pos + end;
            let mut next = line_end + 1;
            if self.buf[line_end] == b'\r' {
                match self.buf.get(next) {
                    Some(b'\n') => next += 1,
                    Some(_) => {}
                    None => self.after_cr = true,
                }
            }
            let (start, pos) = (self.pos, next);
            self.pos = pos;
            if start == line_end {
                if std::mem::take(&mut self.has_data) {
                    return Some(std::mem::take(&mut self.data));
                }
                continue;
            }
            let line = &self.buf[start..line_end];
            if let Some(value) = line.strip_prefix(b"data") {
                let value = match value {
                    [] => value,
                    [b':', b' ', rest @ ..] | [b':', rest @ ..] => rest,
                    _ => continue, // a field named e.g. `datafoo`
                };
                if self.has_data {
                    self.data.push(b'\n');
                }
                self.data.extend_from_slice(value);
                self.has_data = true;
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split_in_pieces(body: &[u8], piece: usize) -> Vec<String> {
        let mut splitter = EventSplitter::default();
        let mut events = Vec::new();
        for chunk in body.chunks(piece.max(1)) {
            splitter.feed(chunk);
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
}
