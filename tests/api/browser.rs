//! The dashboard page in a real headless Chromium against a running router
//! with traffic: the page must finish rendering (`data-ready="true"`), draw
//! its four charts with data, and log no console error. A screenshot is
//! saved in the test's temp dir (or `SWITCHBOARD_SCREENSHOT_DIR`, to look at).
//!
//! Chromium is Debian's `chromium` (.ci/run installs it). Without it the test
//! says so and passes, except under CI (`CI` set), where it fails.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::json;

use crate::helpers::{spawn, two_providers, Db, TestApp};
use crate::mock::{Behaviour, MockUpstream};

fn chromium() -> Option<&'static str> {
    ["chromium", "chromium-browser"].into_iter().find(|c| {
        Command::new(c)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    })
}

/// Runs headless Chromium on `url` with `extra` args; returns (stdout, stderr).
async fn run_chromium(bin: &str, profile: &Path, url: &str, extra: &[String]) -> (String, String) {
    let mut cmd = tokio::process::Command::new(bin);
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--enable-logging=stderr",
        "--v=0",
        "--window-size=1280,900",
        "--virtual-time-budget=5000",
    ])
    .arg(format!("--user-data-dir={}", profile.display()))
    .args(extra)
    .arg(url)
    .kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(90), cmd.output())
        .await
        .expect("chromium did not finish within 90 s")
        .expect("chromium runs");
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

async fn traffic(app: &TestApp, a: &MockUpstream) {
    let hi = |model: &str| json!({"model": model, "messages": [{"role": "user", "content": "hi"}]});
    let mut ids = Vec::new();
    for i in 0..12 {
        let r = app
            .chat(hi(if i % 3 == 0 { "large" } else { "small" }))
            .await;
        assert_eq!(r.status(), 200);
        ids.push(
            r.headers()["x-switchboard-request-id"]
                .to_str()
                .unwrap()
                .to_owned(),
        );
    }
    for _ in 0..4 {
        assert_eq!(app.chat(hi("auto")).await.status(), 200);
    }
    a.script([Behaviour::Status(400, None)]);
    assert_eq!(app.chat(hi("small")).await.status(), 400);
    app.wait_count("requests", 17).await;
    for (i, id) in ids.iter().enumerate() {
        let r = app
            .http
            .post(format!("{}/v1/feedback", app.url))
            .json(&json!({"request_id": id, "score": (i % 5) as f64 / 4.0}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202);
    }
    app.wait_count("feedback", 12).await;
}

#[tokio::test]
async fn the_dashboard_renders_in_headless_chromium() {
    let Some(bin) = chromium() else {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must install chromium (see .ci/run)"
        );
        eprintln!("chromium is not installed; skipping the browser test");
        return;
    };
    let (a, b) = (
        MockUpstream::start("alpha").await,
        MockUpstream::start("beta").await,
    );
    let app = spawn(&two_providers(&a.base_url(), &b.base_url()), Db::Postgres).await;
    traffic(&app, &a).await;

    let dir = tempfile::tempdir().unwrap();
    let url = format!("{}/dashboard", app.url);
    let (dom, log) = run_chromium(bin, &dir.path().join("p1"), &url, &["--dump-dom".into()]).await;
    assert!(
        dom.contains("data-ready=\"true\""),
        "the page never finished rendering:\n{log}\n{dom}"
    );
    assert!(
        dom.contains("data-charts=\"4\""),
        "not every chart was drawn with data:\n{dom}"
    );
    assert!(dom.contains("ready · 17 requests"), "{dom}");
    assert!(dom.contains("small") && dom.contains("large"));
    assert!(
        dom.contains("invalid_request"),
        "the recent error is listed"
    );
    for line in log.lines() {
        let console_error =
            line.contains("CONSOLE") && line.contains(":ERROR:") || line.contains("Uncaught");
        assert!(!console_error, "console error: {line}");
    }

    let shots = std::env::var("SWITCHBOARD_SCREENSHOT_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| dir.path().to_path_buf());
    std::fs::create_dir_all(&shots).unwrap();
    let png = shots.join("dashboard.png");
    let (_, log) = run_chromium(
        bin,
        &dir.path().join("p2"),
        &url,
        &[format!("--screenshot={}", png.display())],
    )
    .await;
    let bytes = std::fs::read(&png).unwrap_or_else(|e| panic!("no screenshot ({e}):\n{log}"));
    assert!(bytes.starts_with(b"\x89PNG"), "the screenshot is a PNG");
    app.shutdown().await;
}
