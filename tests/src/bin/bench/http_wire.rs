//! A minimal HTTP/1.1 client over raw TCP: one request per connection (or several, one after
//! another, on a kept-alive one), the response head parsed, the body (chunked or not) handed
//! over as it arrives with the time it was read.
//!
//! The bench holds thousands of connections and times the arrival of bytes: a general client
//! (its pools, buffering and per-connection tasks) would cost the proxy's CPU share and blur
//! the times.

use std::net::SocketAddr;
use std::time::Instant;

use anyhow::{Context, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The status line and headers of a response.
#[derive(Debug, Clone)]
pub struct Head {
    pub status: u16,
    headers: Vec<(String, String)>,
}

impl Head {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// An open response whose body is being read.
pub struct Response {
    stream: TcpStream,
    pub head: Head,
    body: BodyFraming,
    /// Body bytes read along with the head, not handed over yet.
    pending: Vec<u8>,
    buf: Vec<u8>,
}

enum BodyFraming {
    Chunked(ChunkedDecoder),
    Length(u64),
    UntilClose,
}

/// Sends `GET path` and reads the response head. `keep_open`: ask the server to keep the
/// connection (a live SSE stream) rather than close it after the response.
pub async fn get(addr: SocketAddr, path: &str, keep_open: bool) -> anyhow::Result<Response> {
    let stream = TcpStream::connect(addr)
        .await
        .with_context(|| format!("connecting to {addr}"))?;
    stream.set_nodelay(true)?;
    get_on(stream, addr, path, keep_open).await
}

/// [`get`] on a connection already open (one a finished response gave back with
/// [`Response::into_connection`]).
pub async fn get_on(
    mut stream: TcpStream,
    addr: SocketAddr,
    path: &str,
    keep_open: bool,
) -> anyhow::Result<Response> {
    let connection = if keep_open { "keep-alive" } else { "close" };
    let request =
        format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: {connection}\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    // Read into spare capacity (`read_buf`): nothing is zeroed per response, which thousands of
    // clients answered at once would pay for on the cores they share with what they measure.
    let mut read = Vec::with_capacity(4096);
    let end = loop {
        let searched = read.len().saturating_sub(3);
        if stream.read_buf(&mut read).await? == 0 {
            bail!("connection closed before the response head ({path})");
        }
        if let Some(end) = find(&read[searched..], b"\r\n\r\n") {
            break searched + end;
        }
    };
    let head = parse_head(&read[..end])?;
    let body = if head
        .header("transfer-encoding")
        .is_some_and(|v| v.eq_ignore_ascii_case("chunked"))
    {
        BodyFraming::Chunked(ChunkedDecoder::default())
    } else if let Some(length) = head.header("content-length") {
        BodyFraming::Length(length.parse().context("content-length")?)
    } else {
        BodyFraming::UntilClose
    };
    Ok(Response {
        stream,
        head,
        body,
        pending: read[end + 4..].to_vec(),
        buf: Vec::new(),
    })
}

/// `GET path` and its whole body.
pub async fn get_all(addr: SocketAddr, path: &str) -> anyhow::Result<(Head, Vec<u8>)> {
    let mut response = get(addr, path, false).await?;
    let mut body = Vec::new();
    while response
        .read_body(|bytes, _| body.extend_from_slice(bytes))
        .await?
    {}
    Ok((response.head.clone(), body))
}

impl Response {
    /// Reads once from the socket and hands the body bytes it carried to `sink`, with the
    /// time the read returned. `false` once the body has ended.
    pub async fn read_body(
        &mut self,
        mut sink: impl FnMut(&[u8], Instant),
    ) -> anyhow::Result<bool> {
        if !self.pending.is_empty() {
            let pending = std::mem::take(&mut self.pending);
            return Ok(self.deliver(&pending, Instant::now(), &mut sink));
        }
        if self.finished() {
            return Ok(false);
        }
        self.buf.clear();
        self.buf.reserve(64 * 1024);
        let n = self.stream.read_buf(&mut self.buf).await?;
        let at = Instant::now();
        if n == 0 {
            return match self.body {
                BodyFraming::UntilClose => Ok(false),
                _ => bail!("the connection closed in the middle of a response body"),
            };
        }
        let bytes = std::mem::take(&mut self.buf);
        let open = self.deliver(&bytes[..n], at, &mut sink);
        self.buf = bytes;
        Ok(open)
    }

    /// The connection, for the next request, once this response's body is read whole.
    pub fn into_connection(self) -> Option<TcpStream> {
        (self.finished() && self.pending.is_empty()).then_some(self.stream)
    }

    fn finished(&self) -> bool {
        match &self.body {
            BodyFraming::Chunked(d) => d.done(),
            BodyFraming::Length(left) => *left == 0,
            BodyFraming::UntilClose => false,
        }
    }

    fn deliver(
        &mut self,
        bytes: &[u8],
        at: Instant,
        sink: &mut impl FnMut(&[u8], Instant),
    ) -> bool {
        match &mut self.body {
            BodyFraming::Chunked(decoder) => decoder.feed(bytes, |data| sink(data, at)),
            BodyFraming::Length(left) => {
                let take = bytes.len().min(*left as usize);
                *left -= take as u64;
                sink(&bytes[..take], at);
            }
            BodyFraming::UntilClose => sink(bytes, at),
        }
        !self.finished()
    }
}

fn parse_head(bytes: &[u8]) -> anyhow::Result<Head> {
    let text = std::str::from_utf8(bytes).context("response head is not UTF-8")?;
    let mut lines = text.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("bad status line {status_line:?}"))?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    Ok(Head { status, headers })
}

pub fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// `Transfer-Encoding: chunked`, decoded incrementally.
#[derive(Debug, Default)]
struct ChunkedDecoder {
    state: ChunkState,
}

#[derive(Debug, Default, Clone, Copy)]
enum ChunkState {
    /// Reading the hex size; `extension` once past a `;`.
    #[default]
    Size,
    SizeValue {
        size: u64,
        extension: bool,
    },
    /// Expecting the `\n` of the size line.
    SizeLf {
        size: u64,
    },
    Data {
        left: u64,
    },
    /// The `\r\n` after a chunk's data; `seen` of them read.
    DataEnd {
        seen: u8,
    },
    /// After the last (empty) chunk: trailers until an empty line. `line_len` of this line.
    Trailer {
        line_len: usize,
    },
    Done,
}

impl ChunkedDecoder {
    fn done(&self) -> bool {
        matches!(self.state, ChunkState::Done)
    }

    fn feed(&mut self, mut bytes: &[u8], mut out: impl FnMut(&[u8])) {
        while !bytes.is_empty() {
            match self.state {
                ChunkState::Data { left } => {
                    let take = bytes.len().min(left as usize);
                    out(&bytes[..take]);
                    bytes = &bytes[take..];
                    self.state = if take as u64 == left {
                        ChunkState::DataEnd { seen: 0 }
                    } else {
                        ChunkState::Data {
                            left: left - take as u64,
                        }
                    };
                    continue;
                }
                ChunkState::Done => return,
                _ => {}
            }
            let byte = bytes[0];
            bytes = &bytes[1..];
            self.state = match self.state {
                ChunkState::Size => Self::size_byte(0, false, byte),
                ChunkState::SizeValue { size, extension } => Self::size_byte(size, extension, byte),
                ChunkState::SizeLf { size: 0 } => ChunkState::Trailer { line_len: 0 },
                ChunkState::SizeLf { size } => ChunkState::Data { left: size },
                ChunkState::DataEnd { seen: 0 } => ChunkState::DataEnd { seen: 1 },
                ChunkState::DataEnd { .. } => ChunkState::Size,
                ChunkState::Trailer { line_len } => match byte {
                    b'\r' => ChunkState::Trailer { line_len },
                    b'\n' if line_len == 0 => ChunkState::Done,
                    b'\n' => ChunkState::Trailer { line_len: 0 },
                    _ => ChunkState::Trailer {
                        line_len: line_len + 1,
                    },
                },
                state @ (ChunkState::Data { .. } | ChunkState::Done) => state,
            };
        }
    }

    fn size_byte(size: u64, extension: bool, byte: u8) -> ChunkState {
        match byte {
            b'\r' => ChunkState::SizeLf { size },
            _ if extension => ChunkState::SizeValue { size, extension },
            b';' => ChunkState::SizeValue {
                size,
                extension: true,
            },
            _ => {
                let digit = (byte as char).to_digit(16).unwrap_or(0) as u64;
                ChunkState::SizeValue {
                    size: size * 16 + digit,
                    extension: false,
                }
            }
        }
    }
}
