//! The one scripted raw upstream: it speaks HTTP/1.1 by hand, so it can answer what a
//! well-behaved server library will not (hop-by-hop headers, ambiguous or broken framing,
//! early closes, silence), and it records every request exactly as it arrived
//! ([`Received`], with the connection it came on and its body bytes as framed).
//! Requests are read by their own framing (`Content-Length` or chunked); each is answered
//! with the script's next [`Step`], whatever connection it came on, and once the script is
//! done with its `then` step.

use super::serve::Received;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// The pause between the two writes of [`Step::AnswerInTwo`].
pub const PAUSE: Duration = Duration::from_millis(100);
/// Largest request head read; a larger one ends the connection.
const MAX_HEAD: usize = 1024 * 1024;

/// What the upstream does with the next request it reads.
#[derive(Clone, Copy, Debug)]
pub enum Step {
    /// Writes these bytes and keeps the connection open.
    Answer(&'static str),
    /// Writes these bytes and closes the connection.
    AnswerAndClose(&'static str),
    /// Writes the first bytes, then after [`PAUSE`] the second, and closes the connection.
    AnswerInTwo(&'static str, &'static str),
    /// Waits until `count` requests have arrived in all (so that many connections are
    /// open at once), writes `answer`, and closes the connection if `close`.
    Together {
        count: usize,
        answer: &'static str,
        close: bool,
    },
    /// Waits this long, then writes these bytes and keeps the connection open.
    Late(Duration, &'static str),
    /// Closes the connection without answering.
    Drop,
    /// Resets the connection (an RST, not a FIN) without answering.
    Reset,
    /// Keeps the connection open and never answers.
    Silent,
}

pub struct Scripted {
    pub addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    requests: Arc<Mutex<Vec<Received>>>,
    shutdown: CancellationToken,
}

impl Scripted {
    /// Answers with `steps` in order, then closes each connection that sends more.
    pub async fn start(steps: &[Step]) -> Scripted {
        Scripted::with_then(steps, Step::Drop).await
    }

    /// Answers every request with `step`.
    pub async fn always(step: Step) -> Scripted {
        Scripted::with_then(&[], step).await
    }

    /// Answers with `steps` in order, then with `then` for every further request.
    pub async fn with_then(steps: &[Step], then: Step) -> Scripted {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let script = Arc::new(Mutex::new(steps.iter().copied().collect::<VecDeque<_>>()));
        let accepted = Arc::new(AtomicUsize::new(0));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let shutdown = CancellationToken::new();
        let (a, r, stop) = (
            Arc::clone(&accepted),
            Arc::clone(&requests),
            shutdown.clone(),
        );
        tokio::spawn(async move {
            loop {
                let stream = tokio::select! {
                    _ = stop.cancelled() => return,
                    accepted = listener.accept() => match accepted {
                        Ok((stream, _)) => stream,
                        Err(_) => continue,
                    },
                };
                let connection = a.fetch_add(1, Ordering::SeqCst);
                let served = serve(
                    stream,
                    connection,
                    Arc::clone(&script),
                    then,
                    Arc::clone(&r),
                );
                let stop = stop.clone();
                tokio::spawn(async move {
                    tokio::select! {
                        _ = stop.cancelled() => {}
                        _ = served => {}
                    }
                });
            }
        });
        Scripted {
            addr,
            accepted,
            requests,
            shutdown,
        }
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    /// The requests received so far, in arrival order.
    pub fn requests(&self) -> Vec<Received> {
        self.requests.lock().unwrap().clone()
    }

    /// The requests received so far, head and body as text.
    pub fn texts(&self) -> Vec<String> {
        self.requests().iter().map(Received::text).collect()
    }
}

impl Drop for Scripted {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Reads more bytes into `buf`; false at EOF or on an error.
async fn fill(stream: &mut TcpStream, buf: &mut Vec<u8>) -> bool {
    let mut chunk = [0u8; 8192];
    match stream.read(&mut chunk).await {
        Ok(0) | Err(_) => false,
        Ok(n) => {
            buf.extend_from_slice(&chunk[..n]);
            true
        }
    }
}

/// The length of the request at the start of `buf` (head, body), once it is whole.
fn request_len(buf: &[u8]) -> Option<Result<(usize, usize), ()>> {
    let head_end = buf.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    let header = |name: &str| {
        head.lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| v.trim().to_owned())
    };
    if header("transfer-encoding:").is_some_and(|v| v.ends_with("chunked")) {
        return match super::raw::dechunk(&buf[head_end..]) {
            Ok(Some((_, body))) => Some(Ok((head_end, body))),
            Ok(None) => None,
            Err(_) => Some(Err(())),
        };
    }
    let length = match header("content-length:") {
        None => 0,
        Some(v) => match v.parse::<usize>() {
            Ok(n) => n,
            Err(_) => return Some(Err(())),
        },
    };
    (buf.len() >= head_end + length).then_some(Ok((head_end, length)))
}

async fn serve(
    mut stream: TcpStream,
    connection: usize,
    script: Arc<Mutex<VecDeque<Step>>>,
    then: Step,
    requests: Arc<Mutex<Vec<Received>>>,
) {
    let mut buf = Vec::new();
    loop {
        let (head_len, body_len) = loop {
            match request_len(&buf) {
                Some(Ok(lengths)) => break lengths,
                Some(Err(())) => return,
                None if buf.len() > MAX_HEAD => return,
                None => {
                    if !fill(&mut stream, &mut buf).await {
                        return;
                    }
                }
            }
        };
        let request: Vec<u8> = buf.drain(..head_len + body_len).collect();
        let head = String::from_utf8_lossy(&request[..head_len - 4]);
        let received = Received::from_head(&head, request[head_len..].to_vec(), connection);
        requests.lock().unwrap().push(received);
        let step = script.lock().unwrap().pop_front().unwrap_or(then);
        let keep = match step {
            Step::Answer(bytes) => stream.write_all(bytes.as_bytes()).await.is_ok(),
            Step::AnswerAndClose(bytes) => {
                let _ = stream.write_all(bytes.as_bytes()).await;
                false
            }
            Step::Together {
                count,
                answer,
                close,
            } => {
                while requests.lock().unwrap().len() < count {
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                stream.write_all(answer.as_bytes()).await.is_ok() && !close
            }
            Step::Late(after, bytes) => {
                tokio::time::sleep(after).await;
                stream.write_all(bytes.as_bytes()).await.is_ok()
            }
            Step::AnswerInTwo(first, second) => {
                let _ = stream.write_all(first.as_bytes()).await;
                tokio::time::sleep(PAUSE).await;
                let _ = stream.write_all(second.as_bytes()).await;
                false
            }
            Step::Drop => false,
            Step::Reset => {
                // SO_LINGER 0: closing sends an RST.
                let _ = socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO));
                return;
            }
            Step::Silent => {
                // Hold the connection until the peer gives up (or the upstream is dropped).
                while fill(&mut stream, &mut buf).await {}
                false
            }
        };
        if !keep {
            let _ = stream.shutdown().await;
            return;
        }
    }
}
