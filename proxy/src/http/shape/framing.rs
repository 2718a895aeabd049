//! How a response lays out the messages it carries: the elements of a JSON array (long-poll)
//! or server-sent events (`live_sse`). The shape log stores and hands out bare messages; the
//! commas and `data:` lines exist only on the wire.

/// The layout of the messages in a response body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// Elements of a JSON array: `a,b,c` (a leading comma unless first), without the
    /// brackets, which the response adds around the whole.
    JsonArray { first: bool },
    /// Server-sent events: `data: a\n\n` each.
    Sse,
}

impl Framing {
    /// Appends `message` to `out`, after the messages this framing laid out before.
    pub fn push(&mut self, out: &mut Vec<u8>, message: &[u8]) {
        match self {
            Framing::JsonArray { first } => {
                if !*first {
                    out.push(b',');
                }
                *first = false;
                out.extend_from_slice(message);
            }
            Framing::Sse => {
                out.extend_from_slice(b"data: ");
                out.extend_from_slice(message);
                out.extend_from_slice(b"\n\n");
            }
        }
    }

    /// This framing as a function for the shape log's reads, which hand it each message.
    pub fn into_fn(mut self) -> impl FnMut(&mut Vec<u8>, &[u8]) + Send + 'static {
        move |out, message| self.push(out, message)
    }

    /// The framing for what follows `body` (which messages laid out this way may already
    /// fill): in a JSON array, not the first element once there is one.
    pub fn after(self, body: &[u8]) -> Self {
        match self {
            Framing::JsonArray { first } => Framing::JsonArray {
                first: first && body.is_empty(),
            },
            Framing::Sse => Framing::Sse,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn framed(mut framing: Framing, messages: &[&str]) -> String {
        let mut out = Vec::new();
        for message in messages {
            framing.push(&mut out, message.as_bytes());
        }
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn json_array_elements_are_separated_by_commas() {
        let first = Framing::JsonArray { first: true };
        assert_eq!(
            framed(first, &["{\"a\":1}", "{\"b\":2}"]),
            "{\"a\":1},{\"b\":2}"
        );
        assert_eq!(framed(first, &[]), "");
        let later = Framing::JsonArray { first: false };
        assert_eq!(framed(later, &["{}"]), ",{}");
    }

    #[test]
    fn sse_messages_are_data_events() {
        assert_eq!(
            framed(Framing::Sse, &["{\"a\":1}", "{}"]),
            "data: {\"a\":1}\n\ndata: {}\n\n"
        );
    }

    #[test]
    fn what_follows_a_json_body_is_never_its_first_element() {
        let first = Framing::JsonArray { first: true };
        assert_eq!(first.after(b""), first);
        assert_eq!(first.after(b"{}"), Framing::JsonArray { first: false });
        let later = Framing::JsonArray { first: false };
        assert_eq!(later.after(b""), later);
        assert_eq!(Framing::Sse.after(b"data: {}\n\n"), Framing::Sse);
    }

    #[test]
    fn as_a_function_it_frames_the_same() {
        let mut frame = Framing::JsonArray { first: true }.into_fn();
        let mut out = Vec::new();
        frame(&mut out, b"1");
        frame(&mut out, b"2");
        assert_eq!(out, b"1,2");
    }
}
