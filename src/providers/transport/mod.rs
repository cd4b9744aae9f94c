//! Sending one POST to an upstream and reading its answer, over one of two
//! clients: hyper-util's pooled HTTP/1.1 client for `http://` upstreams
//! reached without a proxy (local inference servers, sidecars, the bench's
//! mock), reqwest for everything else (TLS, HTTP/2, proxies).
//!
//! Why two: on the fixed-model route reqwest's own layers (a redirect
//! policy that parses the URL again, the proxy matcher, retry and timeout
//! wrappers, a client cloned per call) cost ~28,000 instructions a request
//! above the hyper-util client they wrap, more than half of what the whole
//! zero-work proxy spends (callgrind, docs/performance.md). Both clients
//! behave the same to callers: the same timeouts, the same error kinds, and
//! redirects are never followed (an upstream's prompt goes only to the
//! address configured; a redirect is an error naming where it pointed).

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::Stream;
use http::header::{HeaderName, HeaderValue, ACCEPT, CONTENT_TYPE, HOST, LOCATION};
use http::{HeaderMap, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use super::{FailureKind, UpstreamError};

/// How long an idle pooled connection is kept, and how many per host.
const POOL_IDLE: Duration = Duration::from_secs(90);
const POOL_MAX_IDLE_PER_HOST: usize = 256;

/// The proxy variables reqwest honours; with any of them set, every
/// upstream goes through reqwest so the proxy is used.
const PROXY_VARS: [&str; 4] = ["http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"];

#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    pub connect: Duration,
    /// Each read: the answer's head, then every piece of its body.
    pub read: Duration,
}

/// A provider's HTTP client.
pub enum Transport {
    Plain {
        /// Boxed: reqwest's client is one pointer, this one ~300 bytes.
        client: Box<Client<HttpConnector, Full<Bytes>>>,
        read_timeout: Duration,
    },
    Full(reqwest::Client),
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Transport::Plain { .. } => "Transport::Plain",
            Transport::Full(_) => "Transport::Full",
        })
    }
}

impl Transport {
    /// The plain client when `base_url` is `http://` without credentials in
    /// it and no proxy variable is set in `env`; reqwest otherwise.
    pub fn for_base_url(
        base_url: &str,
        timeouts: Timeouts,
        env: &crate::config::Env,
    ) -> Result<Self, reqwest::Error> {
        let proxied = PROXY_VARS
            .iter()
            .any(|v| env.get(*v).is_some_and(|s| !s.trim().is_empty()));
        // Credentials in the URL (`http://user:pass@host`) are sent by
        // reqwest as Basic authorisation; the plain client would drop them.
        let credentials = reqwest::Url::parse(base_url)
            .is_ok_and(|u| !u.username().is_empty() || u.password().is_some());
        if base_url.starts_with("http://") && !proxied && !credentials {
            return Ok(Self::plain(timeouts));
        }
        let client = reqwest::Client::builder()
            .connect_timeout(timeouts.connect)
            .read_timeout(timeouts.read)
            .pool_idle_timeout(POOL_IDLE)
            .pool_max_idle_per_host(POOL_MAX_IDLE_PER_HOST)
            .tcp_nodelay(true)
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(Self::Full(client))
    }

    fn plain(timeouts: Timeouts) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(timeouts.connect));
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(POOL_IDLE)
            .pool_max_idle_per_host(POOL_MAX_IDLE_PER_HOST)
            .build(connector);
        Self::Plain {
            client: Box::new(client),
            read_timeout: timeouts.read,
        }
    }

    #[cfg(test)]
    pub fn is_plain(&self) -> bool {
        matches!(self, Transport::Plain { .. })
    }

    /// POSTs `body` as JSON to `url` with `headers` added. A redirect comes
    /// back as an error; any other status, success or not, as a `Response`.
    pub async fn post_json(
        &self,
        url: &Target,
        headers: Vec<(HeaderName, HeaderValue)>,
        body: Vec<u8>,
    ) -> Result<Response, UpstreamError> {
        let resp = match self {
            Transport::Plain {
                client,
                read_timeout,
            } => {
                let mut req = Request::post(url.uri.clone())
                    .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
                    .header(ACCEPT, HeaderValue::from_static("*/*"))
                    .body(Full::new(Bytes::from(body)))
                    .map_err(|e| UpstreamError::new(FailureKind::Connect, e.to_string()))?;
                let h = req.headers_mut();
                h.extend(headers);
                // A configured `Host` wins, as it does in hyper-util.
                if let (false, Some(host)) = (h.contains_key(HOST), &url.host) {
                    h.insert(HOST, host.clone());
                }
                let sent = tokio::time::timeout(*read_timeout, client.request(req)).await;
                let resp = match sent {
                    Ok(Ok(resp)) => resp,
                    Ok(Err(e)) => return Err(from_hyper_client(&e)),
                    Err(_) => return Err(timed_out()),
                };
                let (head, body) = resp.into_parts();
                Response {
                    status: head.status,
                    body: Body::Plain {
                        headers: head.headers,
                        body,
                        read_timeout: *read_timeout,
                    },
                }
            }
            Transport::Full(client) => {
                let mut rb = client
                    .post(url.parsed.clone())
                    .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
                    .body(body);
                for (name, value) in headers {
                    rb = rb.header(name, value);
                }
                let resp = rb.send().await.map_err(UpstreamError::from_reqwest)?;
                Response {
                    status: resp.status(),
                    body: Body::Full(resp),
                }
            }
        };
        if resp.status.is_redirection() {
            return Err(redirected(resp.status, resp.headers()));
        }
        Ok(resp)
    }
}

/// An upstream address, parsed once for each client.
#[derive(Debug, Clone)]
pub struct Target {
    uri: Uri,
    parsed: reqwest::Url,
    /// The `Host` header the plain client sends: the host, and the port
    /// unless it is the scheme's default. Built here once; left to
    /// hyper-util, it is formatted again for every request (~2,500
    /// instructions, callgrind, docs/performance.md).
    host: Option<HeaderValue>,
}

impl Target {
    pub fn parse(url: &str) -> Result<Self, String> {
        let parsed = reqwest::Url::parse(url).map_err(|e| format!("{url:?}: {e}"))?;
        let uri = url.parse::<Uri>().map_err(|e| format!("{url:?}: {e}"))?;
        let host = parsed.host_str().and_then(|h| {
            let value = match parsed.port() {
                Some(port) => format!("{h}:{port}"),
                None => h.to_owned(),
            };
            HeaderValue::from_str(&value).ok()
        });
        Ok(Self { uri, parsed, host })
    }
}

/// An upstream's answer: its head, read; its body, still to read.
pub struct Response {
    pub status: StatusCode,
    body: Body,
}

/// Each client's own response, which holds the headers: reqwest's is read
/// in place rather than copied.
enum Body {
    Plain {
        headers: HeaderMap,
        body: Incoming,
        read_timeout: Duration,
    },
    Full(reqwest::Response),
}

impl Response {
    pub fn headers(&self) -> &HeaderMap {
        match &self.body {
            Body::Plain { headers, .. } => headers,
            Body::Full(resp) => resp.headers(),
        }
    }

    /// The next piece of the body; `None` at its end.
    pub async fn chunk(&mut self) -> Result<Option<Bytes>, UpstreamError> {
        match &mut self.body {
            Body::Plain {
                body, read_timeout, ..
            } => loop {
                let frame = match tokio::time::timeout(*read_timeout, body.frame()).await {
                    Err(_) => return Err(timed_out()),
                    Ok(None) => return Ok(None),
                    Ok(Some(Err(e))) => return Err(body_error(&e)),
                    Ok(Some(Ok(frame))) => frame,
                };
                // Trailers carry nothing a caller reads.
                if let Ok(data) = frame.into_data() {
                    return Ok(Some(data));
                }
            },
            Body::Full(resp) => resp.chunk().await.map_err(UpstreamError::from_reqwest),
        }
    }

    /// The whole body. One piece (a small answer, as most are) is returned
    /// as it came, without a copy.
    pub async fn bytes(mut self) -> Result<Bytes, UpstreamError> {
        let Some(first) = self.chunk().await? else {
            return Ok(Bytes::new());
        };
        let Some(second) = self.chunk().await? else {
            return Ok(first);
        };
        let mut all = BytesMut::with_capacity(first.len() + second.len());
        all.extend_from_slice(&first);
        all.extend_from_slice(&second);
        while let Some(more) = self.chunk().await? {
            all.extend_from_slice(&more);
        }
        Ok(all.freeze())
    }

    /// The body as a stream of pieces; it ends after the first error.
    pub fn into_stream(self) -> impl Stream<Item = Result<Bytes, UpstreamError>> + Send {
        futures_util::stream::unfold(Some(self), |state| async move {
            let mut resp = state?;
            match resp.chunk().await {
                Ok(Some(bytes)) => Some((Ok(bytes), Some(resp))),
                Ok(None) => None,
                Err(e) => Some((Err(e), None)),
            }
        })
    }
}

fn timed_out() -> UpstreamError {
    UpstreamError::new(
        FailureKind::Timeout,
        "the upstream sent nothing within the read timeout",
    )
}

/// A transport error from the plain client. Classified as reqwest's are
/// (`UpstreamError::from_reqwest`): no connection, and a connection lost
/// before an answer began, are both `Connect` (nothing was answered, so
/// another model may be tried at once).
fn from_hyper_client(e: &hyper_util::client::legacy::Error) -> UpstreamError {
    let mut message = format!("error sending request: {e}");
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        message.push_str(": ");
        message.push_str(&s.to_string());
        source = s.source();
    }
    UpstreamError::new(FailureKind::Connect, message)
}

/// The body broke off (a reset, a malformed chunk): the answer is unusable.
fn body_error(e: &hyper::Error) -> UpstreamError {
    let kind = if e.is_timeout() {
        FailureKind::Timeout
    } else {
        FailureKind::Protocol
    };
    UpstreamError::new(kind, format!("error reading the upstream's body: {e}"))
}

fn redirected(status: StatusCode, headers: &HeaderMap) -> UpstreamError {
    let to = headers
        .get(LOCATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("(no Location header)");
    // As any other status the router does not expect (`ErrorKind::Other`).
    let mut e = UpstreamError::new(
        FailureKind::Protocol,
        format!(
            "the upstream redirected ({status}) to {to}; redirects are not followed, \
             so set the provider's base_url to the address it should be reached at"
        ),
    );
    e.status = Some(status.as_u16());
    e
}

#[cfg(test)]
mod tests;
