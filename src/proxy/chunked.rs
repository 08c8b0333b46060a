//! An incremental scanner for HTTP/1.1 `Transfer-Encoding: chunked` bodies (RFC 9112
//! §7.1), shared by both paths (the fast path's relay, the hyper path's
//! `full/checked.rs`). The proxy relays a chunked body unchanged; the scanner only tracks
//! the framing across arbitrary buffer boundaries, so the proxy knows exactly where the body ends
//! (to reuse the connection and never forward bytes past it) and refuses malformed
//! framing. It never copies data, and skips chunk data in O(1) per call.
//!
//! Parsing is deliberately strict, because lenient framing between proxies enables
//! request smuggling: every line must end in CRLF, no whitespace before a chunk size,
//! no obs-fold in trailers, and sizes, size lines and trailers are bounded.

/// The longest chunk-size line accepted (hex digits, whitespace and extensions; CRLF
/// not counted).
pub const MAX_SIZE_LINE: usize = 4096;

/// The largest trailer section accepted: the trailer field lines, their CRLFs included
/// (the empty line that ends the section is not counted).
pub const MAX_TRAILERS: usize = 16 * 1024;

/// The largest chunk size accepted (2^62).
pub const MAX_CHUNK_SIZE: u64 = 1 << 62;

/// A framing error in a chunked body. The texts say what was wrong and never hold body
/// data.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChunkedError {
    /// The chunk-size is missing, starts with whitespace, or is followed by a byte that
    /// is neither whitespace, `;` nor CRLF.
    #[error("invalid chunk size")]
    InvalidSize,
    /// The chunk-size overflows or exceeds [`MAX_CHUNK_SIZE`].
    #[error("chunk size too large")]
    SizeTooLarge,
    /// A line does not end in CRLF (bare LF, bare CR, or data longer than declared).
    #[error("missing CRLF in chunked framing")]
    MissingCrlf,
    /// The chunk-size line is longer than [`MAX_SIZE_LINE`].
    #[error("chunk size line too long")]
    LineTooLong,
    /// A chunk extension holds a control byte (other than HTAB) or DEL.
    #[error("invalid byte in chunk extension")]
    InvalidExtension,
    /// A trailer line starts with whitespace (obsolete line folding).
    #[error("obsolete line folding in trailer section")]
    ObsFold,
    /// The trailer section is larger than [`MAX_TRAILERS`].
    #[error("trailer section too large")]
    TrailersTooLarge,
}

/// Where the scanner is in the chunked grammar.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
enum State {
    /// Expecting the first hex digit of a chunk-size.
    #[default]
    SizeStart,
    /// In the hex digits of a chunk-size.
    SizeDigits,
    /// In whitespace after the hex digits.
    SizeWs,
    /// In the chunk extensions, skipped up to CR.
    Ext,
    /// After the CR of the size line, expecting LF.
    SizeLf,
    /// In chunk data, with this many bytes left (never 0).
    Data { remaining: u64 },
    /// After chunk data, expecting CR.
    DataCr,
    /// After chunk data and CR, expecting LF.
    DataLf,
    /// At the start of a trailer line (or of the final empty line).
    TrailerStart,
    /// Inside a trailer line.
    TrailerLine,
    /// After the CR of a trailer line, expecting LF.
    TrailerLf,
    /// After the CR of the final empty line, expecting LF.
    FinalLf,
    /// The body ended.
    Done,
    /// The framing was refused; the error is returned again on every later call.
    Failed(ChunkedError),
}

/// Tracks the framing of one chunked body fed to it in pieces; see [`ChunkedScanner::scan`].
#[derive(Debug, Default, Clone)]
pub struct ChunkedScanner {
    state: State,
    /// The chunk-size read so far.
    size: u64,
    /// Bytes of the current size line, or of the trailer section so far.
    len: usize,
}

impl ChunkedScanner {
    /// A scanner at the start of a chunked body.
    pub fn new() -> ChunkedScanner {
        ChunkedScanner::default()
    }

    /// Feeds the next bytes of the body (in order, any split). Returns how many of them
    /// belong to the chunked body: `input.len()` unless the body ended inside `input`,
    /// in which case it is the length up to and including the final CRLF (after the
    /// last chunk and any trailer section), and [`is_done`](Self::is_done) is then
    /// true. Feeding after done returns `Ok(0)`.
    ///
    /// An error is final: this and every later call return it, as the position of the
    /// body's end can no longer be known.
    pub fn scan(&mut self, input: &[u8]) -> Result<usize, ChunkedError> {
        let mut pos = 0;
        while pos < input.len() {
            match &mut self.state {
                State::Done => return Ok(pos),
                State::Failed(err) => return Err(err.clone()),
                State::Data { remaining } => {
                    let available = input.len() - pos;
                    let take = usize::try_from(*remaining).map_or(available, |r| r.min(available));
                    pos += take;
                    // `take` ≤ `remaining`: no underflow, and usize → u64 is lossless.
                    *remaining -= take as u64;
                    if *remaining == 0 {
                        self.state = State::DataCr;
                    }
                }
                _ => {
                    let byte = input[pos];
                    pos += 1;
                    if let Err(err) = self.step(byte) {
                        self.state = State::Failed(err.clone());
                        return Err(err);
                    }
                }
            }
        }
        match &self.state {
            State::Failed(err) => Err(err.clone()),
            _ => Ok(pos),
        }
    }

    /// Whether the whole chunked body (final CRLF included) has been scanned.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Advances over one framing byte (never called in `Data`, `Done` or `Failed`).
    fn step(&mut self, byte: u8) -> Result<(), ChunkedError> {
        const CR: u8 = b'\r';
        const LF: u8 = b'\n';
        self.state = match self.state {
            State::SizeStart => {
                let digit = hex_value(byte).ok_or(ChunkedError::InvalidSize)?;
                self.size = u64::from(digit);
                self.len = 1;
                State::SizeDigits
            }
            State::SizeDigits | State::SizeWs | State::Ext if byte == CR => State::SizeLf,
            State::SizeDigits | State::SizeWs | State::Ext if byte == LF => {
                return Err(ChunkedError::MissingCrlf)
            }
            State::SizeDigits | State::SizeWs | State::Ext => {
                self.len += 1;
                if self.len > MAX_SIZE_LINE {
                    return Err(ChunkedError::LineTooLong);
                }
                match (&self.state, byte) {
                    (State::Ext, b'\t') => State::Ext,
                    (State::Ext, 0x00..=0x1F | 0x7F) => return Err(ChunkedError::InvalidExtension),
                    (State::Ext, _) => State::Ext,
                    (_, b';') => State::Ext,
                    (_, b' ' | b'\t') => State::SizeWs,
                    (State::SizeDigits, _) => {
                        let digit = hex_value(byte).ok_or(ChunkedError::InvalidSize)?;
                        self.size = self
                            .size
                            .checked_mul(16)
                            .and_then(|s| s.checked_add(u64::from(digit)))
                            .filter(|&s| s <= MAX_CHUNK_SIZE)
                            .ok_or(ChunkedError::SizeTooLarge)?;
                        State::SizeDigits
                    }
                    _ => return Err(ChunkedError::InvalidSize),
                }
            }
            State::SizeLf if byte == LF => {
                if self.size == 0 {
                    self.len = 0;
                    State::TrailerStart
                } else {
                    State::Data {
                        remaining: self.size,
                    }
                }
            }
            State::DataCr if byte == CR => State::DataLf,
            State::DataLf if byte == LF => State::SizeStart,
            State::TrailerStart if byte == CR => State::FinalLf,
            State::TrailerStart if byte == b' ' || byte == b'\t' => {
                return Err(ChunkedError::ObsFold)
            }
            State::TrailerStart | State::TrailerLine | State::TrailerLf => {
                let next = match (&self.state, byte) {
                    (State::TrailerLf, LF) => State::TrailerStart,
                    (State::TrailerLf, _) | (_, LF) => return Err(ChunkedError::MissingCrlf),
                    (_, CR) => State::TrailerLf,
                    _ => State::TrailerLine,
                };
                self.len += 1;
                if self.len > MAX_TRAILERS {
                    return Err(ChunkedError::TrailersTooLarge);
                }
                next
            }
            State::FinalLf if byte == LF => State::Done,
            State::SizeLf | State::DataCr | State::DataLf | State::FinalLf => {
                return Err(ChunkedError::MissingCrlf)
            }
            // `scan` handles these itself; keep them unchanged if ever reached.
            State::Data { .. } | State::Done | State::Failed(_) => self.state.clone(),
        };
        Ok(())
    }
}

/// The value of an ASCII hex digit, either case.
fn hex_value(byte: u8) -> Option<u8> {
    match byte {
        b'0'..=b'9' => Some(byte - b'0'),
        b'a'..=b'f' => Some(byte - b'a' + 10),
        b'A'..=b'F' => Some(byte - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
#[path = "chunked_tests.rs"]
mod tests;
