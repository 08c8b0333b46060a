//! Raw HTTP/1.1 over a `TcpStream`, for requests a real client would normalise (absolute-form
//! targets with userinfo or odd case, unusual path bytes, `CONNECT`): the request text goes
//! out byte for byte and the response is parsed by hand.

use super::WAIT;
use std::net::SocketAddr;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A response as read off the wire.
#[derive(Debug)]
pub struct RawResponse {
    pub status: u16,
    /// The status line and headers, as received.
    pub head: String,
    /// The body (de-chunked).
    pub body: Vec<u8>,
}

impl RawResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().skip(1).find_map(|line| {
            let (n, v) = line.split_once(':')?;
            n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }

    /// The body as JSON (panics with the body when it is not).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "response body is not JSON ({e}): {}\n{}",
                self.head,
                String::from_utf8_lossy(&self.body)
            )
        })
    }
}

/// `GET {target}` with `Host: {host}`, `Connection: close` and `extra` header lines (each
/// ending in `\r\n`).
pub fn get(target: &str, host: &str, extra: &str) -> String {
    format!("GET {target} HTTP/1.1\r\nHost: {host}\r\n{extra}Connection: close\r\n\r\n")
}

/// A `CONNECT {target}` request (authority form) with its `Host` header.
pub fn connect_request(target: &str) -> String {
    format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n")
}

/// Connects to `addr`, writes `request` as is and reads one whole response.
pub async fn send(addr: SocketAddr, request: &str) -> RawResponse {
    let mut stream = connect(addr).await;
    write(&mut stream, request).await;
    read_response(&mut stream).await
}

pub async fn connect(addr: SocketAddr) -> TcpStream {
    tokio::time::timeout(WAIT, TcpStream::connect(addr))
        .await
        .expect("connect timed out")
        .expect("connect")
}

pub async fn write(stream: &mut TcpStream, text: &str) {
    tokio::time::timeout(WAIT, stream.write_all(text.as_bytes()))
        .await
        .expect("write timed out")
        .expect("write");
}

/// Reads the status line and headers only (e.g. the `200` that opens a `CONNECT` tunnel).
/// Bytes read past the head are returned too.
pub async fn read_head<S: AsyncRead + Unpin>(stream: &mut S) -> (u16, String, Vec<u8>) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        let n = tokio::time::timeout(WAIT, stream.read(&mut chunk))
            .await
            .expect("no response head in time")
            .expect("read");
        assert!(
            n > 0,
            "connection closed before a response head: {:?}",
            String::from_utf8_lossy(&buf)
        );
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
    let rest = buf[end + 4..].to_vec();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line: {head}"));
    (status, head, rest)
}

/// Reads one response: head, then a `Content-Length` or chunked body, or up to EOF.
pub async fn read_response<S: AsyncRead + Unpin>(stream: &mut S) -> RawResponse {
    let (status, head, mut body) = read_head(stream).await;
    let mut response = RawResponse {
        status,
        head,
        body: Vec::new(),
    };
    let chunked = response
        .header("transfer-encoding")
        .is_some_and(|v| v.eq_ignore_ascii_case("chunked"));
    let length = response
        .header("content-length")
        .and_then(|v| v.parse::<usize>().ok());
    let mut chunk = [0u8; 4096];
    loop {
        if length.is_some_and(|l| body.len() >= l)
            || (chunked && matches!(dechunk(&body), Ok(Some(_)) | Err(_)))
        {
            break;
        }
        let n = tokio::time::timeout(WAIT, stream.read(&mut chunk))
            .await
            .expect("response body did not arrive in time")
            .expect("read");
        if n == 0 {
            break;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    response.body = match dechunk(&body) {
        Ok(Some((data, _))) if chunked => data,
        _ => body,
    };
    response
}

/// A chunked body at the start of `data`: `Ok(Some((data, bytes used)))` once it is whole
/// (trailers read and dropped), `Ok(None)` while it is not, `Err` for a bad chunk size.
pub fn dechunk(data: &[u8]) -> Result<Option<(Vec<u8>, usize)>, String> {
    let line_end = |from: usize| {
        data[from..]
            .windows(2)
            .position(|w| w == b"\r\n")
            .map(|i| from + i)
    };
    let mut out = Vec::new();
    let mut at = 0;
    loop {
        let Some(end) = line_end(at) else {
            return Ok(None);
        };
        let text = String::from_utf8_lossy(&data[at..end]);
        let size_text = text.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_text, 16)
            .map_err(|_| format!("bad chunk size {size_text:?}"))?;
        at = end + 2;
        if size == 0 {
            // Trailers up to the empty line.
            loop {
                let Some(end) = line_end(at) else {
                    return Ok(None);
                };
                let empty = end == at;
                at = end + 2;
                if empty {
                    return Ok(Some((out, at)));
                }
            }
        }
        if data.len() < at + size + 2 {
            return Ok(None);
        }
        out.extend_from_slice(&data[at..at + size]);
        at += size + 2;
    }
}
