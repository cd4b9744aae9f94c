//! The zero-work pass-through proxy: every request is forwarded as it came to
//! the upstream and the response bytes streamed back, nothing parsed. It uses
//! the same HTTP stack as the router (hyper server, hyper-util's pooled
//! client, which reqwest wraps) on a multi-thread runtime sized like the
//! router's, so it is the physical limit of one extra hop on this machine.

use anyhow::Context;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, Uri};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};

#[derive(clap::Args, Debug, Clone)]
pub struct ProxyArgs {
    #[arg(long, default_value_t = 18181)]
    pub port: u16,
    /// Upstream `host:port`.
    #[arg(long)]
    pub upstream: String,
}

pub fn run(args: ProxyArgs) -> anyhow::Result<()> {
    // Like the router: one worker per CPU the process may run on.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(serve(args))
}

async fn serve(args: ProxyArgs) -> anyhow::Result<()> {
    let listener = crate::mock::bind(args.port).await?;
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let client: Client<HttpConnector, Incoming> =
        Client::builder(TokioExecutor::new()).build(connector);
    let upstream = args.upstream;
    loop {
        let (tcp, _) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                eprintln!("proxy: accept failed: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let client = client.clone();
        let upstream = upstream.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| forward(req, client.clone(), upstream.clone()));
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(tcp), svc)
                .await;
        });
    }
}

async fn forward(
    mut req: Request<Incoming>,
    client: Client<HttpConnector, Incoming>,
    upstream: String,
) -> anyhow::Result<Response<Incoming>> {
    let path = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    let uri: Uri = format!("http://{upstream}{path}")
        .parse()
        .context("building the upstream URI")?;
    *req.uri_mut() = uri;
    Ok(client.request(req).await?)
}
