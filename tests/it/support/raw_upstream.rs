//! An upstream that speaks HTTP/1.1 by hand, for what a well-behaved server library will
//! not do: answer with hop-by-hop headers of any kind, or never answer at all. It reads a
//! request's head (requests sent to it carry no body), then plays its part.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

/// Largest request head read.
const MAX_HEAD: usize = 64 * 1024;

/// What the upstream does once it has read a request head.
#[derive(Clone)]
enum Part {
    /// Writes these bytes (a whole response) and closes the connection.
    Respond(&'static str),
    /// Keeps the connection open and never answers.
    Silent,
}

pub struct RawUpstream {
    pub addr: SocketAddr,
    heads: Arc<Mutex<Vec<String>>>,
    shutdown: CancellationToken,
}

impl RawUpstream {
    /// Answers every request with `response`, verbatim, then closes the connection.
    pub async fn respond(response: &'static str) -> RawUpstream {
        RawUpstream::start(Part::Respond(response)).await
    }

    /// Accepts connections and reads requests, but never answers.
    pub async fn silent() -> RawUpstream {
        RawUpstream::start(Part::Silent).await
    }

    async fn start(part: Part) -> RawUpstream {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let heads = Arc::new(Mutex::new(Vec::new()));
        let shutdown = CancellationToken::new();
        let (h, stop) = (Arc::clone(&heads), shutdown.clone());
        tokio::spawn(async move {
            loop {
                let stream = tokio::select! {
                    _ = stop.cancelled() => return,
                    accepted = listener.accept() => match accepted {
                        Ok((stream, _)) => stream,
                        Err(_) => continue,
                    },
                };
                let (h, stop, part) = (Arc::clone(&h), stop.clone(), part.clone());
                tokio::spawn(async move {
                    tokio::select! {
                        _ = stop.cancelled() => {}
                        _ = serve(stream, part, h) => {}
                    }
                });
            }
        });
        RawUpstream {
            addr,
            heads,
            shutdown,
        }
    }

    /// The request heads received so far, as text.
    pub fn heads(&self) -> Vec<String> {
        self.heads.lock().unwrap().clone()
    }
}

impl Drop for RawUpstream {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

async fn serve(mut stream: TcpStream, part: Part, heads: Arc<Mutex<Vec<String>>>) {
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < MAX_HEAD {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    heads
        .lock()
        .unwrap()
        .push(String::from_utf8_lossy(&head).into_owned());
    match part {
        Part::Respond(response) => {
            let _ = stream.write_all(response.as_bytes()).await;
            let _ = stream.shutdown().await;
        }
        Part::Silent => {
            // Hold the connection until the peer gives up (or the upstream is dropped).
            while let Ok(n) = stream.read(&mut buf).await {
                if n == 0 {
                    return;
                }
            }
        }
    }
}
