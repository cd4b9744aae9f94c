//! Admission of a keyed request (DESIGN.md step 1): may this key call this
//! route or model, is it within its request and token rates, and can its
//! budget hold the request's worst-case cost. The reservation travels with
//! the request's `Draft` and is settled with the real cost when the outcome
//! is recorded (or released on drop).
//!
//! Worst case = prompt tokens (local count) × the highest input price plus
//! `max_completion_tokens` / `max_tokens` (else `reserve_output_tokens`) ×
//! the highest output price, over the models this request may try; one
//! more prompt on a hedged route, one more prompt and answer on a route
//! that continues broken streams (`Extra`).
//! With shared budgets (scale-out), a request that does not fit this
//! replica's lease waits for one grant of the shared ledger (`auth/lease.rs`).

use http::StatusCode;
use serde_json::{Map, Value};

use super::catalog::Catalog;
use super::options::RouterOptions;
use super::Gateway;
use crate::auth::budget::{BudgetExhausted, Refusal};
use crate::auth::{Caller, KeyRing, Limited, Reservation};
use crate::error::ApiError;
use crate::providers::tokens;

/// A key's part in one request, carried by the `Draft`.
pub struct KeyUse {
    pub caller: Caller,
    pub reservation: Option<Reservation>,
}

impl KeyUse {
    /// Books the real cost and the completion's tokens.
    pub fn settle(mut self, cost_usd: f64, completion_tokens: u32) {
        if let Some(r) = self.reservation.take() {
            r.settle(cost_usd);
        }
        self.caller.state.charge_tokens(completion_tokens);
    }
}

/// Access and rate checks, before any decision is made. Returns the
/// prompt's token count for the reservation.
pub fn admit(
    caller: &Caller,
    requested: &str,
    is_route: bool,
    body: &Map<String, Value>,
) -> Result<u32, ApiError> {
    let key = &caller.key;
    if !(key.allowed_routes.is_empty() && key.allowed_models.is_empty()) {
        let list = if is_route {
            &key.allowed_routes
        } else {
            &key.allowed_models
        };
        if !list.iter().any(|n| n == requested) {
            let what = if is_route { "route" } else { "model" };
            return Err(ApiError {
                status: StatusCode::FORBIDDEN,
                kind: "permission_error",
                code: Some("model_not_allowed"),
                ..ApiError::unauthorized(format!(
                    "This API key may not use the {what} `{requested}`."
                ))
            }
            .with_param("model"));
        }
    }
    caller.state.check_request().map_err(limited)?;
    if key.tokens_per_minute.is_none() && !has_budget(caller) {
        // Nothing needs the count: skip the tokenizer on the hot path.
        return Ok(0);
    }
    let prompt = tokens::count_messages(body.get("messages"));
    caller.state.check_tokens(prompt).map_err(limited)?;
    Ok(prompt)
}

pub fn has_budget(caller: &Caller) -> bool {
    caller.key.budget_usd_per_day.is_some() || caller.key.budget_usd_per_month.is_some()
}

/// The worst-case cost in USD of trying `models` (see the module docs).
pub fn worst_case(
    catalog: &Catalog,
    models: &[usize],
    body: &Map<String, Value>,
    prompt_tokens: u32,
    default_output_tokens: u32,
    extra: Extra,
) -> f64 {
    let output = ["max_completion_tokens", "max_tokens"]
        .iter()
        .find_map(|k| body.get(*k).and_then(Value::as_f64))
        .unwrap_or(f64::from(default_output_tokens))
        .max(0.0);
    let (mut input_price, mut output_price) = (0.0f64, 0.0f64);
    for m in models.iter().filter_map(|&i| catalog.models.get(i)) {
        input_price = input_price.max(m.prices.input_usd_per_mtok);
        output_price = output_price.max(m.prices.output_usd_per_mtok);
    }
    let prompts = 1.0 + f64::from(u8::from(extra.hedged)) + f64::from(u8::from(extra.continued));
    let outputs = 1.0 + f64::from(u8::from(extra.continued));
    (prompts * f64::from(prompt_tokens) * input_price + outputs * output * output_price)
        / 1_000_000.0
}

/// Holds `worst` USD against the key's budget; with shared budgets, asks
/// the ledger for more lease when this replica's does not cover it.
pub async fn reserve(caller: &Caller, keys: &KeyRing, worst: f64) -> Result<Reservation, ApiError> {
    // Wait for the key's turn at the ledger, then at most a grant per
    // period (day, month), then one last try.
    let mut turn = None;
    for _ in 0..4 {
        match caller.state.reserve(worst) {
            Ok(r) => {
                drop(turn);
                if let Some(leases) = keys.leases() {
                    leases.top_up(&caller.key, &caller.state);
                }
                return Ok(r);
            }
            Err(Refusal::Exhausted(e)) => return Err(exhausted(&e)),
            Err(Refusal::NeedLease { period, short }) => {
                let Some(leases) = keys.leases() else { break };
                if turn.is_none() {
                    turn = Some(caller.state.lease_turn().await);
                    continue; // another request's grant may be enough
                }
                leases
                    .extend(&caller.key, &caller.state, period, short)
                    .await
                    .map_err(|_| {
                        ApiError::unavailable(
                            "budget_unavailable",
                            "This API key's shared budget cannot be checked right now (the database is unreachable); retry later.",
                        )
                    })?;
            }
        }
    }
    let mut err = ApiError::rate_limited(
        "This API key's budget is exhausted: other replicas hold the rest of it. Retry later or raise the key's budget.",
        None,
    );
    err.kind = "insufficient_quota";
    err.code = Some("budget_exceeded");
    Err(err)
}

fn exhausted(e: &BudgetExhausted) -> ApiError {
    let mut err = ApiError::rate_limited(
        format!(
            "This API key's budget is exhausted: {e}. Lower `max_tokens`, wait for the next period, or raise the key's budget."
        ),
        None,
    );
    err.kind = "insufficient_quota";
    err.code = Some("budget_exceeded");
    err
}

/// `admit` for an optional caller; applies the key's tier to `options`.
pub fn admit_caller(
    caller: Option<&Caller>,
    requested: &str,
    is_route: bool,
    body: &Map<String, Value>,
    options: &mut RouterOptions,
) -> Result<u32, ApiError> {
    let Some(c) = caller else {
        return Ok(0);
    };
    let prompt = admit(c, requested, is_route, body)?;
    if let Some(t) = &c.key.tier {
        options.tier = Some(t.clone());
    }
    options.key = Some(c.key.clone());
    Ok(prompt)
}

/// What a route's resilience options may add to a request's bill.
#[derive(Debug, Clone, Copy, Default)]
pub struct Extra {
    /// A hedge's loser is charged its prompt: one more prompt.
    pub hedged: bool,
    /// A broken stream is billed its partial answer before another model
    /// continues it: one more prompt and one more answer.
    pub continued: bool,
}

/// The caller's `KeyUse` for the `Draft`, holding the worst case of the
/// models this request may try when the key has a budget.
pub async fn hold(
    gw: &Gateway,
    caller: Option<Caller>,
    ranking: &[usize],
    body: &Map<String, Value>,
    prompt_tokens: u32,
    extra: Extra,
) -> Result<Option<KeyUse>, ApiError> {
    let Some(caller) = caller else {
        return Ok(None);
    };
    let reservation = if has_budget(&caller) {
        let max_models = gw.resilience.max_models_per_request as usize;
        let tried = &ranking[..ranking.len().min(max_models)];
        let worst = worst_case(
            &gw.catalog,
            tried,
            body,
            prompt_tokens,
            gw.reserve_output_tokens,
            extra,
        );
        Some(reserve(&caller, &gw.keys, worst).await?)
    } else {
        None
    };
    Ok(Some(KeyUse {
        caller,
        reservation,
    }))
}

fn limited(l: Limited) -> ApiError {
    let secs = l.retry_after.as_secs_f64().ceil().max(1.0) as u64;
    ApiError::rate_limited(
        format!(
            "This API key's rate limit of {} {} per minute is reached; retry in {secs} s.",
            l.per_minute, l.what
        ),
        Some(secs),
    )
}
