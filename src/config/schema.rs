//! The TOML schema of `switchboard.toml` (DESIGN.md, "Configuration").
//!
//! Pure data: serde types with defaults and `deny_unknown_fields`, so a typo
//! is an error that names the key. Cross-field checks live in `validate.rs`.

use serde::{Deserialize, Serialize};

use crate::domain::ModelName;

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub server: ServerConfig,
    #[serde(default)]
    pub resilience: ResilienceConfig,
    #[serde(default)]
    pub providers: Vec<ProviderConfig>,
    #[serde(default)]
    pub models: Vec<ModelConfig>,
    #[serde(default)]
    pub routes: Vec<RouteConfig>,
    /// Evaluated in order before the policy; the first match wins.
    #[serde(default)]
    pub rules: Vec<crate::gateway::rules::RuleConfig>,
    /// Canaries, A/B splits, shadow traffic and policy rollouts.
    #[serde(default)]
    pub experiments: Vec<crate::experiments::ExperimentConfig>,
    #[serde(default)]
    pub store: StoreConfig,
    /// The file this was read from (`None`: built-in defaults or text);
    /// what a reload re-reads. Not a key of the file.
    #[serde(skip)]
    pub source: Option<std::path::PathBuf>,
    /// Several replicas learning as one over Postgres (docs/scaling.md).
    #[serde(default)]
    pub scale: ScaleConfig,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    pub listen: String,
    /// Largest request body accepted; larger ones get 413.
    pub max_body_bytes: usize,
    /// Whole-request deadline, retries and fallbacks included; past it, 504.
    pub request_timeout_ms: u64,
    /// How long shutdown waits for in-flight requests and the outbox.
    pub shutdown_grace_ms: u64,
    // --- client keys (issue 8; see `src/auth/mod.rs`) ---
    /// Every `/v1/*` call needs `Authorization: Bearer <client key>`.
    pub require_api_keys: bool,
    /// Age after which a cached key is re-read (in the background); bounds
    /// how long a revocation made elsewhere takes to reach this replica.
    pub key_refresh_s: u64,
    /// Output tokens a budget reservation assumes when the request sets no
    /// `max_tokens` / `max_completion_tokens`.
    pub reserve_output_tokens: u32,
    /// A client must send its request head within this long (slowloris).
    pub header_timeout_ms: u64,
    /// ... and its whole body within this long; past it, 408.
    pub body_timeout_ms: u64,
    /// How often the configuration file is checked for a change, which
    /// then reloads it (0 = never; SIGHUP and the admin API still do).
    pub config_watch_ms: u64,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".into(),
            max_body_bytes: 10 * 1024 * 1024,
            request_timeout_ms: 120_000,
            shutdown_grace_ms: 30_000,
            require_api_keys: false,
            key_refresh_s: 30,
            reserve_output_tokens: 4_096,
            header_timeout_ms: 10_000,
            body_timeout_ms: 30_000,
            config_watch_ms: 2_000,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ResilienceConfig {
    /// Attempts on one model before falling back to the next (1 = no retry).
    pub max_attempts_per_model: u32,
    /// How many models a request may try in all (the chosen one included).
    pub max_models_per_request: u32,
    /// First backoff; doubles per attempt, with full jitter.
    pub backoff_base_ms: u64,
    pub backoff_max_ms: u64,
    /// Consecutive failures that open a model's circuit.
    pub breaker_failure_threshold: u32,
    /// How long an open circuit stays open before one half-open probe.
    pub breaker_cooldown_ms: u64,
}

impl Default for ResilienceConfig {
    fn default() -> Self {
        Self {
            max_attempts_per_model: 2,
            max_models_per_request: 3,
            backoff_base_ms: 100,
            backoff_max_ms: 2_000,
            breaker_failure_threshold: 5,
            breaker_cooldown_ms: 30_000,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ProviderKind {
    /// Any OpenAI-compatible API: OpenAI, vLLM, Ollama, Together, Groq, ...
    Openai,
    Anthropic,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderConfig {
    pub name: String,
    pub kind: ProviderKind,
    pub base_url: String,
    /// Environment variable holding the key; optional for local servers.
    #[serde(default)]
    pub api_key_env: Option<String>,
    /// File holding the key (a mounted secret); used when `api_key_env` is unset or empty.
    #[serde(default)]
    pub api_key_file: Option<String>,
    #[serde(default = "default_connect_timeout_ms")]
    pub connect_timeout_ms: u64,
    /// Longest silence allowed between two reads of an upstream response.
    #[serde(default = "default_read_timeout_ms")]
    pub read_timeout_ms: u64,
    /// Anthropic requires `max_tokens`; used when the client sent none.
    #[serde(default = "default_max_tokens")]
    pub default_max_tokens: u32,
}

fn default_connect_timeout_ms() -> u64 {
    5_000
}
fn default_read_timeout_ms() -> u64 {
    60_000
}
fn default_max_tokens() -> u32 {
    4_096
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    pub name: ModelName,
    pub provider: String,
    #[serde(default)]
    pub upstream_name: Option<String>,
    pub input_usd_per_mtok: f64,
    pub output_usd_per_mtok: f64,
    #[serde(default)]
    pub context_window: Option<u32>,
    /// What the model can do. Absent means "not declared": the model is not
    /// filtered on capabilities. A list means exactly those.
    #[serde(default)]
    pub capabilities: Option<Vec<Capability>>,
}

impl ModelConfig {
    pub fn upstream_name(&self) -> &str {
        self.upstream_name.as_deref().unwrap_or(self.name.as_str())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Capability {
    Tools,
    JsonSchema,
    Vision,
}

/// A route's selection rule: the bandit's own algorithm names.
pub use crate::bandit::Algorithm as PolicyKind;

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    pub name: ModelName,
    pub models: Vec<ModelName>,
    #[serde(default)]
    pub policy: PolicyKind,
    #[serde(default)]
    pub objective: ObjectiveConfig,
    #[serde(default)]
    pub budget: Option<BudgetConfig>,
    #[serde(default)]
    pub latency_slo_ms: Option<u64>,
    /// Hedge: after this long without a first byte (streams) or an answer
    /// (non-streaming), also ask the next-ranked model; the first to answer
    /// wins and the other is cancelled (`gateway::hedge`).
    #[serde(default)]
    pub ttft_deadline_ms: Option<u64>,
    /// When a stream fails or stalls after its first byte, continue the
    /// answer on the next-ranked model, with the partial output as an
    /// assistant prefix, in the same SSE stream (`gateway::continuation`).
    #[serde(default)]
    pub continue_stream_on_fallback: bool,
    #[serde(default)]
    pub exploration_cap: Option<f64>,
    /// Exploration caps per tier (`switchboard.tier` / `x-switchboard-tier`):
    /// e.g. `{ premium = 0.0 }` — a tier that must never be experimented on.
    #[serde(default)]
    pub tier_exploration_caps: std::collections::BTreeMap<String, f64>,
    /// Bandit parameters (alpha, ridge, forgetting, floors, priors, drift,
    /// pacing). The route's `policy` and `exploration_cap` take precedence
    /// over `algorithm` and `exploration_cap` here.
    #[serde(default)]
    pub bandit: Option<crate::bandit::PolicyConfig>,
    /// Exact-match response cache for this route (off when absent).
    #[serde(default)]
    pub cache: Option<CacheConfig>,
    /// How prompts become feature vectors for this route.
    #[serde(default)]
    pub features: Option<crate::features::FeatureSpec>,
    /// Models entering this route: prior and capped forced exploration.
    #[serde(default)]
    pub onboard: std::collections::BTreeMap<ModelName, crate::experiments::OnboardConfig>,
    /// Models leaving this route: share annealed to zero over a window.
    #[serde(default)]
    pub retire: std::collections::BTreeMap<ModelName, crate::experiments::RetireConfig>,
}

#[derive(Debug, Clone, Copy, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CacheConfig {
    pub ttl_s: u64,
    /// Also cache requests that sample (temperature absent or non-zero).
    #[serde(default)]
    pub cache_sampled: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ObjectiveConfig {
    pub cost_weight: f64,
    pub latency_weight: f64,
}

impl Default for ObjectiveConfig {
    fn default() -> Self {
        Self {
            cost_weight: 100.0,
            latency_weight: 0.0,
        }
    }
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BudgetConfig {
    pub target_usd_per_request: f64,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// Events buffered in memory before the writer; past it, events spill to disk.
    pub outbox_capacity: usize,
    /// Most rows one batch insert carries.
    pub batch_size: usize,
    /// Longest an event waits in memory before its batch is written.
    pub flush_interval_ms: u64,
    /// Append-only file that holds events while the database is unreachable.
    pub spill_path: String,
    /// Requests and feedback older than this many days are deleted (whole
    /// monthly partitions dropped on Postgres); unset keeps everything.
    pub retention_days: Option<u32>,
    /// Hourly rollups (the dashboards' history) older than this many days are
    /// deleted; unset keeps them (they are small).
    pub rollup_retention_days: Option<u32>,
    /// Write batches at `SCHED_IDLE` while the writer keeps up, so that a
    /// request never waits for the CPU behind one (Linux, with
    /// `CAP_SYS_NICE`). For a router with its core to itself (pinned, or a
    /// dedicated host): where other processes keep every CPU busy, idle
    /// writes wait for them, and rows appear late (by at most 250 ms a
    /// batch: `outbox::LOWERED_AT_MOST`). The learner's re-inversions
    /// yield the same way (by at most 50 ms each: `gateway::learning`).
    pub writer_yields: bool,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            outbox_capacity: 65_536,
            batch_size: 1_000,
            flush_interval_ms: 200,
            spill_path: "switchboard-spill.jsonl".into(),
            retention_days: None,
            rollup_retention_days: None,
            writer_yields: false,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ScaleConfig {
    /// Ship and merge learning deltas and share key budgets through
    /// Postgres. Ignored on SQLite, which serves one process.
    pub enabled: bool,
    /// This replica's name in `replicas` and `/admin/replicas`;
    /// `SWITCHBOARD_REPLICA_ID` overrides it. Default: hostname-pid-random.
    pub replica_id: Option<String>,
    /// How often a replica ships its deltas, pulls the others' and
    /// heartbeats. Bounds what a replica that dies loses (its unshipped
    /// updates) and how stale the others' view of it is.
    pub delta_flush_ms: u64,
    /// A replica whose heartbeat is older than this is not live: it no
    /// longer holds back compaction and is shown as stale.
    pub stale_after_ms: u64,
    /// How often the merged state is checkpointed to `policy_state` and
    /// deltas every live replica has merged are deleted.
    pub checkpoint_ms: u64,
    /// Share of a key's budget one replica leases at a time (shared budgets).
    pub budget_lease_fraction: f64,
}

impl Default for ScaleConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            replica_id: None,
            delta_flush_ms: 2_000,
            stale_after_ms: 10_000,
            checkpoint_ms: 10_000,
            budget_lease_fraction: 0.05,
        }
    }
}
