//! `switchboard policy list|show V|activate V|rollback [--route R]`: the
//! operator's view of `policy_snapshots` (`show` also says whether a
//! version carries a learned feature projection, and its shape). Activation goes through the store
//! (one transaction, then NOTIFY), so every replica swaps to it live.

use anyhow::Context;

use crate::store::policies::PolicyRow;
use crate::store::Store;

#[derive(Debug, Clone, clap::Subcommand)]
pub enum PolicyCommand {
    /// Every version, newest first.
    List {
        #[arg(long)]
        route: Option<String>,
    },
    /// One version's status, parent and report.
    Show { version: String },
    /// Make a version its route's active policy.
    Activate { version: String },
    /// Re-activate the active version's parent.
    Rollback {
        #[arg(long)]
        route: Option<String>,
    },
}

fn line(p: &PolicyRow) -> String {
    let dr = p
        .metrics
        .as_ref()
        .and_then(|m| m.pointer("/candidate/dr/value"))
        .and_then(|v| v.as_f64())
        .map_or_else(|| "-".to_owned(), |v| format!("{v:.4}"));
    format!(
        "{:<8} {:<16} {:<10} {:<14} parent {:<8} DR {:<8} {}",
        p.version,
        p.route,
        p.status,
        p.algorithm,
        p.parent.as_deref().unwrap_or("-"),
        dr,
        p.created_at.format("%Y-%m-%d %H:%M:%S")
    )
}

/// Whether the stored snapshot projects its features, and how: read from
/// the JSON as stored (no full validation, so `show` still answers for a
/// version that no longer fits its route).
fn features_line(p: &PolicyRow) -> String {
    let v: serde_json::Value = match serde_json::from_str(&p.parameters) {
        Ok(v) => v,
        Err(e) => return format!("features: unreadable snapshot ({e})"),
    };
    let dimension = v.get("dimension").and_then(|d| d.as_u64());
    let shape = v.get("projection").map(|pr| {
        (
            pr.get("rows").and_then(|r| r.as_u64()),
            pr.get("cols").and_then(|c| c.as_u64()),
        )
    });
    let dim = dimension.map_or_else(|| "?".to_owned(), |d| d.to_string());
    match shape {
        None => format!("features: raw, no projection (dimension {dim})"),
        Some((Some(rows), Some(cols))) => format!(
            "features: projection {rows} x {cols} (raw dimension {dim}, models see {})",
            rows + 1
        ),
        Some(_) => "features: projection of unreadable shape".to_owned(),
    }
}

/// Runs one command; returns what to print.
pub async fn run(store: &Store, cmd: PolicyCommand) -> anyhow::Result<String> {
    match cmd {
        PolicyCommand::List { route } => {
            let rows = store.list_policies(route.as_deref()).await?;
            Ok(rows.iter().map(line).collect::<Vec<_>>().join("\n"))
        }
        PolicyCommand::Show { version } => {
            let p = store
                .policy(&version)
                .await?
                .with_context(|| format!("no policy version {version:?}"))?;
            let metrics = serde_json::to_string_pretty(&p.metrics)?;
            Ok(format!("{}\n{}\n{metrics}", line(&p), features_line(&p)))
        }
        PolicyCommand::Activate { version } => {
            let route = store.activate_policy(&version).await?;
            Ok(format!(
                "{version} is now the active policy of route {route}"
            ))
        }
        PolicyCommand::Rollback { route } => {
            let route = match route {
                Some(r) => r,
                None => {
                    let mut routes: Vec<String> = store
                        .list_policies(None)
                        .await?
                        .into_iter()
                        .filter(|p| p.status == "active")
                        .map(|p| p.route)
                        .collect();
                    routes.dedup();
                    anyhow::ensure!(
                        routes.len() == 1,
                        "several routes have an active policy: pass --route"
                    );
                    routes.pop().context("no route has an active policy")?
                }
            };
            let active = store
                .active_policy(&route)
                .await?
                .with_context(|| format!("route {route} has no active policy"))?;
            let parent = active
                .parent
                .with_context(|| format!("{} has no parent to roll back to", active.version))?;
            store.activate_policy(&parent).await?;
            Ok(format!(
                "route {route}: rolled back from {} to {parent}",
                active.version
            ))
        }
    }
}
