use std::process::Command;

use crate::anthropic::config;
use crate::helpers::{spawn, Db};
use crate::mock::MockUpstream;
use crate::mock_anthropic::MockAnthropic;

/// The official OpenAI Python SDK — the client real users run — talks to the
/// router: plain, streaming, tools, errors, across two providers.
#[tokio::test]
async fn the_official_openai_python_sdk_works_against_the_router() {
    let (o, a) = (
        MockUpstream::start("openai").await,
        MockAnthropic::start().await,
    );
    let app = spawn(&config(&o.base_url(), &a.base_url()), Db::Postgres).await;
    let url = format!("{}/v1", app.url);
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/sdk_client.py");
    let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
    let out =
        tokio::task::spawn_blocking(move || Command::new(python).arg(script).arg(url).output())
            .await
            .unwrap()
            .expect("python3 must be installed");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the SDK script failed (is `pip install openai` done?):\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("sdk ok"));
    // Five calls, each recorded (the last one, an unknown model, is refused before routing).
    app.wait_count("requests", 4).await;
    app.shutdown().await;
}
