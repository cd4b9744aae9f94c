//! Live configuration: reloads through the admin API, a change of the file
//! and SIGHUP. A good file changes routing without a restart; a bad one is
//! refused with the file, key and reason, and the old behaviour continues;
//! requests in flight across a reload all complete.

use std::process::{Command, Stdio};
use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::{spawn_file, two_providers, Db, TestApp};
use crate::mock::{Behaviour, MockUpstream};

/// `two_providers` plus a `main` route over `models`, and the file watch
/// period (0 = off).
pub fn config(a: &MockUpstream, b: &MockUpstream, models: &str, watch_ms: u64) -> String {
    two_providers(&a.base_url(), &b.base_url()).replace(
        "request_timeout_ms = 5000",
        &format!("request_timeout_ms = 5000\nconfig_watch_ms = {watch_ms}"),
    ) + &format!("\n[[routes]]\nname = \"main\"\nmodels = {models}\npolicy = \"fixed\"\n")
}

/// A config whose `main` route names a model that does not exist.
fn bad_config(a: &MockUpstream, b: &MockUpstream, watch_ms: u64) -> String {
    config(a, b, r#"["small", "huge"]"#, watch_ms)
}

pub async fn model_of(app: &TestApp, route: &str) -> String {
    let r = app
        .chat(json!({"model": route, "messages": [{"role": "user", "content": "hi"}]}))
        .await;
    assert_eq!(r.status(), 200, "{:?}", r.text().await);
    r.headers()["x-switchboard-model"]
        .to_str()
        .unwrap()
        .to_owned()
}

/// The value of a counter line carrying all `labels`, or 0.
pub fn counter(metrics: &str, name: &str, labels: &[&str]) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with(name) && labels.iter().all(|x| l.contains(x)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

const RELOADS: &str = "switchboard_config_reloads_total";

#[tokio::test]
async fn a_good_reload_through_the_api_changes_routing() {
    let (a, b) = (
        MockUpstream::start("alpha").await,
        MockUpstream::start("beta").await,
    );
    let app = spawn_file(&config(&a, &b, r#"["small"]"#, 0), Db::Postgres).await;
    assert_eq!(model_of(&app, "main").await, "small");

    app.write_config(&config(&a, &b, r#"["large", "small"]"#, 0));
    let r = app.admin(Method::POST, "/admin/config/reload", None).await;
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["status"], "applied");
    assert_eq!(body["generation"], 2);
    assert_eq!(model_of(&app, "main").await, "large");

    // Reading the same file again changes nothing.
    let r = app.admin(Method::POST, "/admin/config/reload", None).await;
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["status"], "unchanged");
    assert_eq!(body["generation"], 2);

    // The admin token guards it.
    let r = app
        .http
        .post(format!("{}/admin/config/reload", app.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    app.shutdown().await;
}

#[tokio::test]
async fn a_bad_reload_through_the_api_is_refused_and_the_old_config_serves_on() {
    let (a, b) = (
        MockUpstream::start("alpha").await,
        MockUpstream::start("beta").await,
    );
    let app = spawn_file(&config(&a, &b, r#"["small"]"#, 0), Db::Postgres).await;
    let before = counter(
        &app.metrics_text().await,
        RELOADS,
        &["trigger=\"api\"", "result=\"refused\""],
    );
    app.write_config(&bad_config(&a, &b, 0));
    let r = app.admin(Method::POST, "/admin/config/reload", None).await;
    assert_eq!(r.status(), 422);
    let body: Value = r.json().await.unwrap();
    let err = &body["error"];
    assert_eq!(err["code"], "invalid_config");
    assert_eq!(err["type"], "invalid_request_error");
    assert_eq!(err["param"], "routes[2].models[1]");
    let msg = err["message"].as_str().unwrap();
    let file = app.config_path.as_ref().unwrap().display().to_string();
    assert!(msg.contains(&file), "{msg}");
    assert!(
        msg.contains("routes[2].models[1]: unknown model \"huge\""),
        "{msg}"
    );
    assert!(
        msg.contains("previous configuration stays in force"),
        "{msg}"
    );

    assert_eq!(model_of(&app, "main").await, "small");
    let after = counter(
        &app.metrics_text().await,
        RELOADS,
        &["trigger=\"api\"", "result=\"refused\""],
    );
    assert!(
        after >= before + 1.0,
        "refusal counted: {before} -> {after}"
    );

    // A syntax error names the document position instead.
    app.write_config("[[routes]\nname = ");
    let r = app.admin(Method::POST, "/admin/config/reload", None).await;
    assert_eq!(r.status(), 422);
    assert_eq!(model_of(&app, "main").await, "small");
    app.shutdown().await;
}

#[tokio::test]
async fn a_changed_file_is_reloaded_and_a_bad_one_refused() {
    let (a, b) = (
        MockUpstream::start("alpha").await,
        MockUpstream::start("beta").await,
    );
    let app = spawn_file(&config(&a, &b, r#"["small"]"#, 50), Db::Postgres).await;
    assert_eq!(model_of(&app, "main").await, "small");

    let refused = || async {
        counter(
            &app.metrics_text().await,
            RELOADS,
            &["trigger=\"file\"", "result=\"refused\""],
        )
    };
    let before = refused().await;
    app.write_config(&bad_config(&a, &b, 50));
    let mut seen = false;
    for _ in 0..200 {
        if refused().await > before {
            seen = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(seen, "the watcher never tried the bad file");
    assert_eq!(model_of(&app, "main").await, "small");

    app.write_config(&config(&a, &b, r#"["large"]"#, 50));
    let mut model = String::new();
    for _ in 0..200 {
        model = model_of(&app, "main").await;
        if model == "large" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(model, "large", "the good file was never applied");
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_in_flight_across_reloads_all_complete() {
    let (a, b) = (
        MockUpstream::start("alpha").await,
        MockUpstream::start("beta").await,
    );
    for m in [&a, &b] {
        m.set_default(Behaviour::Delay(
            Duration::from_millis(100),
            Box::new(Behaviour::Answer("slow".into())),
        ));
    }
    let app =
        std::sync::Arc::new(spawn_file(&config(&a, &b, r#"["small"]"#, 0), Db::Postgres).await);
    let mut tasks = Vec::new();
    for i in 0..60 {
        let client = app.clone();
        tasks.push(tokio::spawn(async move {
            let stream = i % 2 == 0;
            let r = client
                .chat(json!({"model": "main", "stream": stream,
                    "messages": [{"role": "user", "content": format!("q{i}")}]}))
                .await;
            let status = r.status();
            let text = r.text().await.unwrap();
            (status, stream, text)
        }));
        if i % 10 == 5 {
            let models = if i % 20 == 5 {
                r#"["large"]"#
            } else {
                r#"["small", "large"]"#
            };
            app.write_config(&config(&a, &b, models, 0));
            let r = app.admin(Method::POST, "/admin/config/reload", None).await;
            assert_eq!(r.status(), 200);
        }
    }
    for t in tasks {
        let (status, stream, text) = t.await.unwrap();
        assert_eq!(status, 200, "{text}");
        if stream {
            assert!(text.trim_end().ends_with("data: [DONE]"), "{text}");
        } else {
            assert!(text.contains("slow"), "{text}");
        }
    }
    match std::sync::Arc::try_unwrap(app) {
        Ok(app) => app.shutdown().await,
        Err(_) => panic!("tasks still hold the app"),
    }
}

/// The real binary, so SIGHUP reaches only it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_file_and_refuses_a_bad_one() {
    let (a, b) = (
        MockUpstream::start("alpha").await,
        MockUpstream::start("beta").await,
    );
    let db_url = crate::helpers::fresh_postgres().await;
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let path = dir.path().join("switchboard.toml");
    let write = |text: String| {
        let text = text.replace(
            "listen = \"127.0.0.1:0\"",
            &format!("listen = \"127.0.0.1:{port}\""),
        ) + &format!(
            "\n[store]\nspill_path = \"{}/spill.jsonl\"\n",
            dir.path().display()
        );
        std::fs::write(&path, text).unwrap();
    };
    write(config(&a, &b, r#"["small"]"#, 0));
    let child = Reaped(
        Command::new(env!("CARGO_BIN_EXE_switchboard"))
            .args(["serve", "--config"])
            .arg(&path)
            .env("DATABASE_URL", &db_url)
            .env("MOCK_KEY", "sk-test-secret")
            .env("RUST_LOG", "error")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let mut healthy = false;
    for _ in 0..300 {
        if http
            .get(format!("{base}/healthz"))
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
        {
            healthy = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let hup = || {
        assert!(Command::new("kill")
            .args(["-HUP", &child.0.id().to_string()])
            .status()
            .unwrap()
            .success());
    };
    let model = || async {
        let r = http
            .post(format!("{base}/v1/chat/completions"))
            .json(&json!({"model": "main", "messages": [{"role": "user", "content": "hi"}]}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        r.headers()["x-switchboard-model"]
            .to_str()
            .unwrap()
            .to_owned()
    };
    let metric = || async {
        let text = http
            .get(format!("{base}/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        counter(
            &text,
            RELOADS,
            &["trigger=\"signal\"", "result=\"refused\""],
        )
    };
    assert!(healthy, "the router binary never became healthy");
    assert_eq!(model().await, "small");
    write(bad_config(&a, &b, 0));
    hup();
    let mut refused = 0.0;
    for _ in 0..200 {
        refused = metric().await;
        if refused >= 1.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(refused, 1.0, "the bad file was not refused on SIGHUP");
    assert_eq!(model().await, "small");

    write(config(&a, &b, r#"["large"]"#, 0));
    hup();
    let mut m = String::new();
    for _ in 0..200 {
        m = model().await;
        if m == "large" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(m, "large", "SIGHUP did not apply the good file");
}

/// Kills and reaps the router binary however the test ends.
struct Reaped(std::process::Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
