//! A byte-level upstream for faults an HTTP framework will not produce:
//! connections closed before a response, malformed JSON, truncated or
//! malformed SSE, responses that stall. Each connection reads the request,
//! then plays the same script. It notices when the router hangs up on it.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[derive(Clone, Debug)]
pub enum Raw {
    /// Write these bytes.
    Bytes(Vec<u8>),
    /// Pause before the next step.
    Sleep(Duration),
    /// Close the connection (whatever was written so far is all there is).
    Close,
    /// Say nothing more until the router hangs up.
    Hold,
}

pub struct RawUpstream {
    pub addr: std::net::SocketAddr,
    calls: Arc<AtomicUsize>,
    hangups: Arc<AtomicUsize>,
}

/// Response head for a body delimited by the connection's close.
pub fn head(status: u16, content_type: &str) -> Raw {
    Raw::Bytes(
        format!("HTTP/1.1 {status} X\r\ncontent-type: {content_type}\r\nconnection: close\r\n\r\n")
            .into_bytes(),
    )
}

/// One SSE chunk carrying `text`, in OpenAI's shape.
pub fn chunk(text: &str) -> Raw {
    let c = serde_json::json!({"id": "c1", "object": "chat.completion.chunk", "created": 1,
        "model": "m", "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": null}]});
    Raw::Bytes(format!("data: {c}\n\n").into_bytes())
}

impl RawUpstream {
    pub async fn start(script: Vec<Raw>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let calls = Arc::new(AtomicUsize::new(0));
        let hangups = Arc::new(AtomicUsize::new(0));
        let (c, h) = (calls.clone(), hangups.clone());
        tokio::spawn(async move {
            while let Ok((sock, _)) = listener.accept().await {
                let (script, c, h) = (script.clone(), c.clone(), h.clone());
                tokio::spawn(async move {
                    c.fetch_add(1, Ordering::SeqCst);
                    serve(sock, script, h).await;
                });
            }
        });
        Self {
            addr,
            calls,
            hangups,
        }
    }

    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    /// Connections the router closed while the script held them open.
    pub fn hangups(&self) -> usize {
        self.hangups.load(Ordering::SeqCst)
    }

    /// Waits (bounded) until the router has hung up `n` times.
    pub async fn wait_hangups(&self, n: usize) {
        for _ in 0..400 {
            if self.hangups() >= n {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("the router never hung up on the upstream");
    }
}

async fn serve(mut sock: TcpStream, script: Vec<Raw>, hangups: Arc<AtomicUsize>) {
    read_request(&mut sock).await;
    for step in script {
        match step {
            Raw::Bytes(b) => {
                if sock.write_all(&b).await.is_err() {
                    return;
                }
                let _ = sock.flush().await;
                // Let each write reach the wire on its own.
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            Raw::Sleep(d) => tokio::time::sleep(d).await,
            Raw::Close => return,
            Raw::Hold => {
                let mut buf = [0u8; 1024];
                loop {
                    match sock.read(&mut buf).await {
                        Ok(0) | Err(_) => {
                            hangups.fetch_add(1, Ordering::SeqCst);
                            return;
                        }
                        Ok(_) => {}
                    }
                }
            }
        }
    }
}

/// Reads one request: headers, then `content-length` bytes of body.
async fn read_request(sock: &mut TcpStream) {
    let mut data = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        let Ok(n) = sock.read(&mut buf).await else {
            return;
        };
        if n == 0 {
            return;
        }
        data.extend_from_slice(&buf[..n]);
        if let Some(end) = data.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&data[..end]).to_lowercase();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            if data.len() >= end + 4 + len {
                return;
            }
        }
    }
}
