//! `switchboard keys create|list|flags|revoke`: client keys straight in the
//! database named by `DATABASE_URL` (migrated first). A running router sees
//! a new key at its first use and a revocation within `key_refresh_s`.

use clap::{Args, Subcommand};

use crate::auth::issue::{self, KeySpec};
use crate::config::Env;
use crate::store::Store;

#[derive(Subcommand)]
pub enum KeysCommand {
    /// Create a key; it is printed once and stored only as a hash.
    Create(CreateArgs),
    /// List keys (never the keys themselves).
    List,
    /// Replace a key's feature flags (`--flag` repeated or comma-separated;
    /// none clears them). Routers see the change within `key_refresh_s`.
    Flags {
        id: String,
        #[arg(long = "flag", value_delimiter = ',')]
        flags: Vec<String>,
    },
    /// Revoke a key by id.
    Revoke { id: String },
}

#[derive(Args)]
pub struct CreateArgs {
    #[arg(long)]
    name: Option<String>,
    #[arg(long)]
    tenant: Option<String>,
    #[arg(long)]
    tier: Option<String>,
    /// Routes this key may call (repeat or comma-separate); none = any.
    #[arg(long = "route", value_delimiter = ',')]
    routes: Vec<String>,
    /// Models this key may call directly (repeat or comma-separate).
    #[arg(long = "model", value_delimiter = ',')]
    models: Vec<String>,
    /// Feature flags for `[[rules]]` and experiments (repeat or comma-separate).
    #[arg(long = "flag", value_delimiter = ',')]
    flags: Vec<String>,
    #[arg(long)]
    requests_per_minute: Option<u32>,
    #[arg(long)]
    tokens_per_minute: Option<u32>,
    #[arg(long)]
    budget_usd_per_day: Option<f64>,
    #[arg(long)]
    budget_usd_per_month: Option<f64>,
}

pub async fn run(command: KeysCommand, env: &Env) -> anyhow::Result<()> {
    use anyhow::Context;
    let url = crate::startup::database_url(env);
    let store = Store::connect_lazy(&url)?;
    store
        .migrate()
        .await
        .with_context(|| format!("migrating {}", crate::store::redact_url(&url)))?;
    match command {
        KeysCommand::Create(a) => {
            let spec = KeySpec {
                name: a.name,
                tenant: a.tenant,
                tier: a.tier,
                allowed_routes: a.routes,
                allowed_models: a.models,
                flags: a.flags,
                requests_per_minute: a.requests_per_minute,
                tokens_per_minute: a.tokens_per_minute,
                budget_usd_per_day: a.budget_usd_per_day,
                budget_usd_per_month: a.budget_usd_per_month,
            };
            let issued = issue::create(&store, spec)
                .await
                .context("creating the key")?;
            println!("id:  {}", issued.record.id);
            println!("key: {}", issued.key);
            println!("(the key is shown only this once)");
        }
        KeysCommand::List => {
            for k in store.list_keys().await.context("listing keys")? {
                println!("{}", issue::public_view(&k));
            }
        }
        KeysCommand::Flags { id, flags } => {
            if issue::set_flags(&store, &id, &flags)
                .await
                .context("setting the key's flags")?
            {
                println!("{id} flags: {}", flags.join(","));
            } else {
                anyhow::bail!("no live key with id {id}");
            }
        }
        KeysCommand::Revoke { id } => {
            if store.revoke_key(&id).await.context("revoking the key")? {
                println!("revoked {id}");
            } else {
                anyhow::bail!("no live key with id {id}");
            }
        }
    }
    store.close().await;
    Ok(())
}
