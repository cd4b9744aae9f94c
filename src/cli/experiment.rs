//! `switchboard experiment start|status|promote|stop NAME`: drives the
//! admin API of a running router (`--url`, else `SWITCHBOARD_URL`, else
//! `http://` + `SWITCHBOARD_LISTEN`, else `http://127.0.0.1:8080`) with
//! `SWITCHBOARD_ADMIN_TOKEN`. Why the API and not the database: a start is
//! checked against the router's live catalog (the candidate must exist and
//! fit the route), and a promotion acts at once (arms join or retire, a
//! policy version is activated); the router persists every change in the
//! store, from which restarts and the other replicas follow.

use anyhow::Context;
use clap::{Args, Subcommand};
use serde_json::{json, Value};

use crate::config::Env;

#[derive(Debug, Clone, Subcommand)]
pub enum ExperimentCommand {
    /// Start an experiment: define it with --route/--kind/--candidate/--share,
    /// or restart one that exists (from the config file, or stopped).
    Start(StartArgs),
    /// Definition, status and per-arm results (traffic, reward, cost, latency).
    Status { name: String },
    /// The candidate wins: it joins (or with --replace, replaces) the route;
    /// a route candidate takes all traffic; a policy version is activated.
    Promote {
        name: String,
        /// Retire the route's other models (model candidates).
        #[arg(long)]
        replace: bool,
        /// Anneal the retired models' share to zero over this many seconds.
        #[arg(long, default_value_t = 0)]
        window_s: u64,
    },
    /// Stop: back to normal (also undoes a promoted blue-green switch).
    Stop { name: String },
}

#[derive(Debug, Clone, Args)]
pub struct StartArgs {
    pub name: String,
    #[arg(long)]
    pub route: Option<String>,
    /// canary | ab | shadow | shadow_policy
    #[arg(long)]
    pub kind: Option<String>,
    /// A model, a route (ab) or a policy version.
    #[arg(long)]
    pub candidate: Option<String>,
    /// Share of the route's requests in the candidate arm, in [0, 1].
    #[arg(long)]
    pub share: Option<f64>,
    /// `user`: a user always lands in the same arm.
    #[arg(long)]
    pub sticky_by: Option<String>,
    /// Promote or roll back a policy-version candidate automatically.
    #[arg(long)]
    pub auto_promote: bool,
    /// Only client keys with this feature flag take part.
    #[arg(long)]
    pub key_flag: Option<String>,
}

#[derive(Debug, Clone, Args)]
pub struct Target {
    /// The router's base URL.
    #[arg(long, global = true)]
    pub url: Option<String>,
}

fn base_url(url: Option<String>, env: &Env) -> String {
    url.or_else(|| env.get("SWITCHBOARD_URL").cloned())
        .or_else(|| env.get("SWITCHBOARD_LISTEN").map(|l| format!("http://{l}")))
        .unwrap_or_else(|| "http://127.0.0.1:8080".into())
        .trim_end_matches('/')
        .to_owned()
}

/// The request a command makes: (path, body).
fn request(cmd: &ExperimentCommand) -> anyhow::Result<(String, Option<Value>, bool)> {
    Ok(match cmd {
        ExperimentCommand::Start(a) => {
            let def = match (&a.route, &a.kind, &a.candidate, a.share) {
                (None, None, None, None) => None,
                (Some(route), Some(kind), Some(candidate), Some(share)) => {
                    let mut d = json!({"route": route, "kind": kind, "candidate": candidate, "share": share});
                    if let Some(s) = &a.sticky_by {
                        d["sticky_by"] = json!(s);
                    }
                    if a.auto_promote {
                        d["auto_promote"] = json!({"enabled": true});
                    }
                    if let Some(f) = &a.key_flag {
                        d["key_flag"] = json!(f);
                    }
                    Some(d)
                }
                _ => anyhow::bail!(
                    "to define an experiment give all of --route, --kind, --candidate and --share"
                ),
            };
            (format!("/admin/experiments/{}/start", a.name), def, true)
        }
        ExperimentCommand::Status { name } => (format!("/admin/experiments/{name}"), None, false),
        ExperimentCommand::Promote {
            name,
            replace,
            window_s,
        } => (
            format!("/admin/experiments/{name}/promote"),
            Some(json!({"replace": replace, "window_s": window_s})),
            true,
        ),
        ExperimentCommand::Stop { name } => (format!("/admin/experiments/{name}/stop"), None, true),
    })
}

/// Runs one command against the router; returns what to print.
pub async fn run(cmd: ExperimentCommand, url: Option<String>, env: &Env) -> anyhow::Result<String> {
    let base = base_url(url, env);
    let token = env
        .get("SWITCHBOARD_ADMIN_TOKEN")
        .filter(|t| !t.is_empty())
        .context("SWITCHBOARD_ADMIN_TOKEN must be set to drive experiments")?;
    let (path, body, post) = request(&cmd)?;
    let http = reqwest::Client::new();
    let mut req = if post {
        http.post(format!("{base}{path}"))
    } else {
        http.get(format!("{base}{path}"))
    }
    .bearer_auth(token);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req
        .send()
        .await
        .with_context(|| format!("calling the router at {base}"))?;
    let status = resp.status();
    let doc: Value = resp.json().await.context("reading the router's answer")?;
    if !status.is_success() {
        let msg = doc
            .pointer("/error/message")
            .and_then(Value::as_str)
            .unwrap_or("no message");
        anyhow::bail!("the router refused ({status}): {msg}");
    }
    Ok(render(&doc))
}

/// A short human summary, then the whole document.
fn render(doc: &Value) -> String {
    let mut out = format!(
        "{} ({} on route {}, candidate {}, share {}): {}\n",
        doc["name"].as_str().unwrap_or("?"),
        doc["kind"].as_str().unwrap_or("?"),
        doc["route"].as_str().unwrap_or("?"),
        doc["candidate"].as_str().unwrap_or("?"),
        doc["share"],
        doc["status"].as_str().unwrap_or("?"),
    );
    if let Some(p) = doc["problem"].as_str() {
        out.push_str(&format!("not in effect: {p}\n"));
    }
    if let Some(arms) = doc["arms"].as_object() {
        out.push_str(&format!(
            "{:<10} {:>9} {:>7} {:>12} {:>12} {:>22}\n",
            "arm", "requests", "errors", "mean $", "mean ms", "reward [95% CI]"
        ));
        for (arm, s) in arms {
            let reward = match s.get("reward").filter(|r| !r.is_null()) {
                Some(r) => format!(
                    "{:.3} [{:.3}, {:.3}] n={}",
                    r["mean"].as_f64().unwrap_or(f64::NAN),
                    r["lo"].as_f64().unwrap_or(f64::NAN),
                    r["hi"].as_f64().unwrap_or(f64::NAN),
                    r["n"]
                ),
                None => "-".into(),
            };
            out.push_str(&format!(
                "{:<10} {:>9} {:>7} {:>12.6} {:>12.1} {:>22}\n",
                arm,
                s["requests"],
                s["errors"],
                s["mean_cost_usd"].as_f64().unwrap_or(0.0),
                s["mean_latency_ms"].as_f64().unwrap_or(0.0),
                reward
            ));
        }
    }
    out.push_str(&serde_json::to_string_pretty(doc).unwrap_or_default());
    out
}
