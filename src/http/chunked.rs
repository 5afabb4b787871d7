//! Incremental decoder for `Transfer-Encoding: chunked` bodies (RFC 9112 §7.1), used for
//! downstream request bodies and upstream responses alike. It never needs the whole body: feed it
//! whatever bytes arrived; "need more bytes" is not an error.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Reading hex digits of a chunk size.
    Size,
    /// Skipping a chunk extension until CR.
    Ext,
    /// Expecting LF after the size line's CR.
    SizeLf,
    Data,
    DataCr,
    DataLf,
    /// At the start of a trailer line (or the final empty line).
    TrailerStart,
    /// Inside a trailer field line.
    Trailer,
    TrailerLf,
    FinalLf,
    Done,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChunkError {
    #[error("invalid chunk size line")]
    BadSize,
    #[error("chunk size too large")]
    SizeOverflow,
    #[error("missing CRLF after chunk data")]
    BadTerminator,
    #[error("trailer section too large")]
    TrailerTooLarge,
}

#[derive(Debug, Clone)]
pub struct ChunkedDecoder {
    state: State,
    size: u64,
    remaining: u64,
    digits: u8,
    trailer_bytes: usize,
}

impl Default for ChunkedDecoder {
    fn default() -> Self {
        Self::new()
    }
}

/// What one call to `decode` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decoded {
    /// Input bytes consumed.
    pub consumed: usize,
    /// The terminating chunk and trailers have been read.
    pub done: bool,
}

impl ChunkedDecoder {
    pub fn new() -> Self {
        ChunkedDecoder {
            state: State::Size,
            size: 0,
            remaining: 0,
            digits: 0,
            trailer_bytes: 0,
        }
    }

    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Decodes as much of `input` as possible, appending body bytes to `out`. Stops at the end of the
    /// body; bytes after it (a pipelined request, say) are left unconsumed.
    pub fn decode(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<Decoded, ChunkError> {
        let mut i = 0;
        while i < input.len() {
            let b = input[i];
            match self.state {
                State::Size => {
                    let v = match b {
                        b'0'..=b'9' => b - b'0',
                        b'a'..=b'f' => b - b'a' + 10,
                        b'A'..=b'F' => b - b'A' + 10,
                        b';' | b' ' | b'\t' if self.digits > 0 => {
                            self.state = State::Ext;
                            i += 1;
                            continue;
                        }
                        b'\r' if self.digits > 0 => {
                            self.state = State::SizeLf;
                            i += 1;
                            continue;
                        }
                        _ => return Err(ChunkError::BadSize),
                    };
                    if self.digits >= 15 {
                        return Err(ChunkError::SizeOverflow);
                    }
                    self.size = self.size * 16 + v as u64;
                    self.digits += 1;
                    i += 1;
                }
                State::Ext => {
                    if b == b'\r' {
                        self.state = State::SizeLf;
                    } else if b == b'\n' {
                        return Err(ChunkError::BadSize);
                    }
                    i += 1;
                }
                State::SizeLf => {
                    if b != b'\n' {
                        return Err(ChunkError::BadSize);
                    }
                    i += 1;
                    if self.size == 0 {
                        self.state = State::TrailerStart;
                    } else {
                        self.remaining = self.size;
                        self.state = State::Data;
                    }
                }
                State::Data => {
                    let n = ((input.len() - i) as u64).min(self.remaining) as usize;
                    out.extend_from_slice(&input[i..i + n]);
                    i += n;
                    self.remaining -= n as u64;
                    if self.remaining == 0 {
                        self.state = State::DataCr;
                    }
                }
                State::DataCr => {
                    if b != b'\r' {
                        return Err(ChunkError::BadTerminator);
                    }
                    self.state = State::DataLf;
                    i += 1;
                }
                State::DataLf => {
                    if b != b'\n' {
                        return Err(ChunkError::BadTerminator);
                    }
                    self.state = State::Size;
                    self.size = 0;
                    self.digits = 0;
                    i += 1;
                }
                State::TrailerStart => {
                    i += 1;
                    if b == b'\r' {
                        self.state = State::FinalLf;
                    } else {
                        self.state = State::Trailer;
                        self.trailer_bytes += 1;
                    }
                }
                State::Trailer => {
                    i += 1;
                    self.trailer_bytes += 1;
                    if self.trailer_bytes > 8192 {
                        return Err(ChunkError::TrailerTooLarge);
                    }
                    if b == b'\r' {
                        self.state = State::TrailerLf;
                    }
                }
                State::TrailerLf => {
                    if b != b'\n' {
                        return Err(ChunkError::BadTerminator);
                    }
                    i += 1;
                    self.state = State::TrailerStart;
                }
                State::FinalLf => {
                    if b != b'\n' {
                        return Err(ChunkError::BadTerminator);
                    }
                    i += 1;
                    self.state = State::Done;
                    return Ok(Decoded {
                        consumed: i,
                        done: true,
                    });
                }
                State::Done => {
                    return Ok(Decoded {
                        consumed: i,
                        done: true,
                    })
                }
            }
        }
        Ok(Decoded {
            consumed: i,
            done: self.state == State::Done,
        })
    }
}

/// Appends one chunk (size line, data, CRLF) to `out`. Empty data writes nothing (an empty chunk
/// would end the body); use `write_last_chunk` for that.
pub fn write_chunk(out: &mut Vec<u8>, data: &[u8]) {
    if data.is_empty() {
        return;
    }
    let mut hex = [0u8; 16];
    let mut n = data.len();
    let mut k = hex.len();
    while n > 0 {
        k -= 1;
        hex[k] = b"0123456789abcdef"[n & 15];
        n >>= 4;
    }
    out.extend_from_slice(&hex[k..]);
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
}

pub fn write_last_chunk(out: &mut Vec<u8>) {
    out.extend_from_slice(b"0\r\n\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    const BODY: &[u8] =
        b"4\r\nWiki\r\n5;ext=1\r\npedia\r\nE\r\n in\r\n\r\nchunks.\r\n0\r\nX-T: 1\r\n\r\nNEXT";

    fn decode_all(parts: &[&[u8]]) -> (Vec<u8>, usize) {
        let mut d = ChunkedDecoder::new();
        let mut out = Vec::new();
        let mut consumed = 0;
        for p in parts {
            let r = d.decode(p, &mut out).unwrap();
            consumed += r.consumed;
            if r.done {
                return (out, consumed);
            }
        }
        panic!("not done");
    }

    #[test]
    fn decodes_whole() {
        let (out, consumed) = decode_all(&[BODY]);
        assert_eq!(out, b"Wikipedia in\r\n\r\nchunks.");
        assert_eq!(&BODY[consumed..], b"NEXT");
    }

    #[test]
    fn decodes_split_at_every_byte() {
        for cut in 0..BODY.len() {
            let (a, b) = BODY.split_at(cut);
            let (out, consumed) = decode_all(&[a, b]);
            assert_eq!(out, b"Wikipedia in\r\n\r\nchunks.", "cut {cut}");
            assert_eq!(consumed, BODY.len() - 4, "cut {cut}");
        }
        // and one byte at a time
        let parts: Vec<&[u8]> = BODY.chunks(1).collect();
        assert_eq!(decode_all(&parts).0, b"Wikipedia in\r\n\r\nchunks.");
    }

    #[test]
    fn rejects_garbage() {
        let mut out = Vec::new();
        assert!(ChunkedDecoder::new().decode(b"zz\r\n", &mut out).is_err());
        assert!(ChunkedDecoder::new()
            .decode(b"3\r\nabcX", &mut out)
            .is_err());
        assert!(ChunkedDecoder::new()
            .decode(b"ffffffffffffffffff\r\n", &mut out)
            .is_err());
        assert!(ChunkedDecoder::new().decode(b"\r\n", &mut out).is_err());
    }

    #[test]
    fn round_trip() {
        let mut enc = Vec::new();
        write_chunk(&mut enc, b"hello ");
        write_chunk(&mut enc, &[b'x'; 300]);
        write_last_chunk(&mut enc);
        let (out, consumed) = decode_all(&[&enc]);
        assert_eq!(consumed, enc.len());
        assert_eq!(out.len(), 306);
    }
}
