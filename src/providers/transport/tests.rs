//! Both clients against a scripted HTTP/1.1 server on loopback: the same
//! answers, the same errors (timeouts, refused connections, bodies cut
//! off), and redirects never followed.

// Tests may unwrap: a panic is the failure report.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::{Arc, Mutex};

use futures_util::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::*;

/// What the server writes after reading a request: pieces of the response,
/// then either closes the connection or holds it open without a word.
struct Script {
    pieces: Vec<&'static str>,
    then_stall: bool,
}

/// Serves `script` to every connection; returns the base URL and the
/// requests it read (head and body, as text).
async fn serve(script: Script) -> (String, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let script = Arc::new(script);
    let log = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let (script, log) = (script.clone(), log.clone());
            tokio::spawn(async move {
                let Some(request) = read_request(&mut sock).await else {
                    return;
                };
                log.lock().unwrap().push(request);
                for piece in &script.pieces {
                    if sock.write_all(piece.as_bytes()).await.is_err() {
                        return;
                    }
                    sock.flush().await.unwrap();
                    // Separate writes, so the client reads separate pieces.
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                if script.then_stall {
                    tokio::time::sleep(Duration::from_secs(30)).await;
                }
            });
        }
    });
    (format!("http://{addr}"), seen)
}

async fn read_request(sock: &mut tokio::net::TcpStream) -> Option<String> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = sock.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf).into_owned();
        if let Some(end) = text.find("\r\n\r\n") {
            let length = text[..end]
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse::<usize>().unwrap())
                })
                .unwrap_or(0);
            if buf.len() >= end + 4 + length {
                return Some(text);
            }
        }
    }
}

const TIMEOUTS: Timeouts = Timeouts {
    connect: Duration::from_secs(2),
    read: Duration::from_millis(300),
};

/// The plain client and reqwest, each as `for_base_url` builds it.
fn both() -> [(&'static str, Transport); 2] {
    let env = crate::config::Env::new();
    let plain = Transport::for_base_url("http://127.0.0.1:1", TIMEOUTS, &env).unwrap();
    let full = Transport::for_base_url("https://127.0.0.1:1", TIMEOUTS, &env).unwrap();
    assert!(plain.is_plain() && !full.is_plain());
    [("plain", plain), ("reqwest", full)]
}

fn target(base: &str) -> Target {
    Target::parse(&format!("{base}/v1/chat/completions")).unwrap()
}

fn secret() -> Vec<(HeaderName, HeaderValue)> {
    let mut v = HeaderValue::from_static("Bearer sk-test");
    v.set_sensitive(true);
    vec![(http::header::AUTHORIZATION, v)]
}

/// Posts `{}` to `base` through both clients: each one's name, the
/// client itself (kept while its answer is read) and what came back.
async fn post_both(base: &str) -> Vec<(&'static str, Transport, Result<Response, UpstreamError>)> {
    let mut out = Vec::new();
    for (name, transport) in both() {
        let sent = transport
            .post_json(&target(base), secret(), b"{}".to_vec())
            .await;
        out.push((name, transport, sent));
    }
    out
}

fn answered(name: &str, sent: Result<Response, UpstreamError>) -> Response {
    sent.unwrap_or_else(|e| panic!("{name}: {e:?}"))
}

fn failed(name: &str, sent: Result<Response, UpstreamError>) -> UpstreamError {
    sent.err()
        .unwrap_or_else(|| panic!("{name}: an answer where an error was due"))
}

#[test]
fn plain_http_without_a_proxy_takes_the_plain_client() {
    let mut env = crate::config::Env::new();
    let pick = |url: &str, env: &crate::config::Env| {
        Transport::for_base_url(url, TIMEOUTS, env)
            .unwrap()
            .is_plain()
    };
    assert!(pick("http://10.0.0.5:8000/v1", &env));
    assert!(!pick("https://api.openai.com/v1", &env));
    // Credentials in the URL: reqwest, which sends them.
    assert!(!pick("http://user:secret@10.0.0.5:8000/v1", &env));
    // A proxy in the environment: reqwest, which honours it.
    env.insert("HTTPS_PROXY".into(), "http://proxy:3128".into());
    assert!(
        pick("http://10.0.0.5:8000/v1", &env),
        "HTTPS_PROXY does not apply to http://"
    );
    env.insert("http_proxy".into(), "http://proxy:3128".into());
    assert!(!pick("http://10.0.0.5:8000/v1", &env));
    env.insert("http_proxy".into(), " ".into());
    assert!(
        pick("http://10.0.0.5:8000/v1", &env),
        "a blank variable is no proxy"
    );
    env.insert("ALL_PROXY".into(), "socks5://proxy:1080".into());
    assert!(!pick("http://10.0.0.5:8000/v1", &env));
}

#[tokio::test]
async fn an_answer_in_pieces_arrives_whole_with_the_request_as_sent() {
    let (base, seen) = serve(Script {
        pieces: vec![
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n",
            "6\r\n{\"a\":1\r\n",
            "1\r\n}\r\n0\r\n\r\n",
        ],
        then_stall: false,
    })
    .await;
    for (name, transport) in both() {
        let resp = transport
            .post_json(&target(&base), secret(), br#"{"model":"m"}"#.to_vec())
            .await
            .unwrap_or_else(|e| panic!("{name}: {e:?}"));
        assert_eq!(resp.status, StatusCode::OK, "{name}");
        assert_eq!(resp.headers()["content-type"], "application/json", "{name}");
        assert_eq!(&resp.bytes().await.unwrap()[..], br#"{"a":1}"#, "{name}");
        let request = seen.lock().unwrap().pop().unwrap().to_ascii_lowercase();
        assert!(
            request.starts_with("post /v1/chat/completions http/1.1\r\n"),
            "{name}: {request}"
        );
        assert!(
            request.contains("content-type: application/json\r\n"),
            "{name}"
        );
        assert!(
            request.contains("authorization: bearer sk-test\r\n"),
            "{name}"
        );
        assert!(
            request.contains(&format!("host: {}\r\n", &base["http://".len()..])),
            "{name}"
        );
        assert!(
            request.ends_with("\r\n\r\n{\"model\":\"m\"}"),
            "{name}: {request}"
        );
    }
}

#[test]
fn the_host_header_names_the_port_only_when_it_is_not_the_default() {
    let host = |url: &str| Target::parse(url).unwrap().host.unwrap();
    assert_eq!(host("http://10.0.0.5:8000/v1"), "10.0.0.5:8000");
    assert_eq!(host("http://example.com/v1"), "example.com");
    assert_eq!(host("http://example.com:80/v1"), "example.com");
    assert_eq!(host("http://[::1]:8000/v1"), "[::1]:8000");
}

#[tokio::test]
async fn a_configured_host_header_is_sent_once_in_place_of_the_address() {
    let answer = "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}";
    for (name, transport) in both() {
        let (base, seen) = serve(Script {
            pieces: vec![answer],
            then_stall: false,
        })
        .await;
        let mut headers = secret();
        headers.push((HOST, HeaderValue::from_static("upstream.internal")));
        let resp = transport
            .post_json(&target(&base), headers, b"{}".to_vec())
            .await
            .unwrap_or_else(|e| panic!("{name}: {e:?}"));
        assert_eq!(resp.status, StatusCode::OK, "{name}");
        let request = seen.lock().unwrap().pop().unwrap().to_ascii_lowercase();
        assert_eq!(request.matches("host:").count(), 1, "{name}: {request}");
        assert!(
            request.contains("host: upstream.internal\r\n"),
            "{name}: {request}"
        );
    }
}

#[tokio::test]
async fn a_redirect_is_an_error_naming_where_it_pointed_and_is_not_followed() {
    let (base, seen) = serve(Script {
        pieces: vec!["HTTP/1.1 307 Temporary Redirect\r\nlocation: http://127.0.0.1:9/elsewhere\r\ncontent-length: 0\r\n\r\n"],
        then_stall: false,
    })
    .await;
    for (name, _client, sent) in post_both(&base).await {
        let err = failed(name, sent);
        assert_eq!(err.kind, FailureKind::Protocol, "{name}");
        assert_eq!(err.status, Some(307), "{name}");
        assert!(
            err.message.contains("http://127.0.0.1:9/elsewhere"),
            "{name}: {}",
            err.message
        );
    }
    assert_eq!(
        seen.lock().unwrap().len(),
        2,
        "one request per client, none followed"
    );
}

#[tokio::test]
async fn an_upstream_silent_before_its_answer_times_out() {
    let (base, _) = serve(Script {
        pieces: vec![],
        then_stall: true,
    })
    .await;
    for (name, _client, sent) in post_both(&base).await {
        let err = failed(name, sent);
        assert_eq!(err.kind, FailureKind::Timeout, "{name}: {}", err.message);
    }
}

#[tokio::test]
async fn a_body_that_stalls_times_out_after_what_did_arrive() {
    let (base, _) = serve(Script {
        pieces: vec![
            "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n",
            "5\r\ndata:\r\n",
        ],
        then_stall: true,
    })
    .await;
    for (name, _client, sent) in post_both(&base).await {
        let resp = answered(name, sent);
        let pieces: Vec<_> = resp.into_stream().collect().await;
        assert_eq!(
            pieces.len(),
            2,
            "{name}: a piece, then the error, then the end"
        );
        assert_eq!(&pieces[0].as_ref().unwrap()[..], b"data:", "{name}");
        assert_eq!(
            pieces[1].as_ref().unwrap_err().kind,
            FailureKind::Timeout,
            "{name}"
        );
    }
}

#[tokio::test]
async fn a_body_cut_off_is_a_protocol_error() {
    let (base, _) = serve(Script {
        pieces: vec![
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n",
            "{\"partial\":",
        ],
        then_stall: false,
    })
    .await;
    for (name, _client, sent) in post_both(&base).await {
        let resp = answered(name, sent);
        let err = resp.bytes().await.unwrap_err();
        assert_eq!(err.kind, FailureKind::Protocol, "{name}: {}", err.message);
    }
}

#[tokio::test]
async fn a_refused_connection_is_a_connect_error() {
    // A port that was just free: nothing listens there now.
    let port = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    for (name, _client, sent) in post_both(&format!("http://127.0.0.1:{port}")).await {
        let err = failed(name, sent);
        assert_eq!(err.kind, FailureKind::Connect, "{name}: {}", err.message);
        assert!(!err.message.contains("sk-test"), "{name}");
    }
}
