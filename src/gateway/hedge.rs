//! Time-to-first-token hedging (route key `ttft_deadline_ms`).
//!
//! The ranked models are tried as `attempt::Attempts::run` would, one turn
//! (retries included) per model — except that when a turn has gone
//! `ttft_deadline_ms` without an answer (a stream's first chunk, or a whole
//! non-streaming response), the next-ranked available model starts a turn
//! of its own beside it. The first of the two to answer wins; the other is
//! dropped, which drops its upstream request and closes its connection. A
//! turn that fails leaves the other running; with none left running the
//! next model starts, as in a plain fallback. At most two turns run at once
//! and `max_models_per_request` bounds the total.
//!
//! The loser is recorded in the fallback chain with what it probably cost
//! and how long it ran:
//! - `ttft_deadline`: it had waited past the deadline and the hedge
//!   overtook it. Its time to first token is censored (longer than it
//!   ran, unknown by how much). A lower bound would bias the latency
//!   regression low, so it is not fed to it; the route declared the
//!   deadline as a requirement, so the miss is taught as a failure
//!   (quality 0 for this context, as a timeout is), and the latency-SLO
//!   statistics count it at its censoring time (`pipeline`).
//! - `hedge_cancelled`: a hedge cancelled because the turn it hedged
//!   answered first. Censored below the deadline itself, it says nothing
//!   about the model and teaches nothing.
//!
//! Billing: providers generally bill a prompt once they have started on it,
//! cancelled or not, and no output was received from a loser. So a loser
//! is charged its prompt (local token count × input price) — added to the
//! request's cost, the key's spend and the cost metric. A provider that does
//! not bill cancelled requests makes this an overstatement by that amount.

use std::time::Duration;

use futures_util::stream::{FuturesUnordered, StreamExt};

use super::attempt::{push, take, Answer, AttemptLog, Attempts, Failure, Turn};
use crate::providers::{tokens, ClientBody, UpstreamError, Usage};
use crate::store::AttemptRecord;
use crate::telemetry::names;

/// Chain error of a turn overtaken by its hedge after missing the deadline.
pub const OVERTAKEN: &str = "ttft_deadline";
/// Chain error of a hedge cancelled because the turn it hedged answered.
pub const CANCELLED_HEDGE: &str = "hedge_cancelled";

/// A route's hedging: its name (for metrics) and the deadline.
pub struct Hedging<'a> {
    pub route: &'a str,
    pub after: Duration,
}

/// `Attempts::run`, hedged when the route asks for it.
pub async fn answer(
    attempts: &Attempts<'_>,
    hedging: Option<Hedging<'_>>,
    ranking: &[usize],
    body: ClientBody<'_>,
    stream: bool,
    deadline: tokio::time::Instant,
    chain: &mut Vec<AttemptRecord>,
) -> Result<Answer, Failure> {
    match hedging {
        None => attempts.run(ranking, body, stream, deadline, chain).await,
        Some(h) => race(attempts, &h, ranking, body, stream, deadline, chain).await,
    }
}

/// A turn in flight.
struct Running {
    slot: usize,
    model: usize,
    since: tokio::time::Instant,
    /// Started by the deadline (not because the turn before it failed).
    hedge: bool,
}

async fn race(
    attempts: &Attempts<'_>,
    h: &Hedging<'_>,
    ranking: &[usize],
    body: ClientBody<'_>,
    stream: bool,
    deadline: tokio::time::Instant,
    chain: &mut Vec<AttemptRecord>,
) -> Result<Answer, Failure> {
    let started = tokio::time::Instant::now();
    let max_models = attempts.resilience.max_models_per_request as usize;
    let models: Vec<usize> = ranking.iter().copied().take(max_models).collect();
    // One log per turn, in start order, so the chain reads in that order.
    let logs: Vec<AttemptLog> = models.iter().map(|_| AttemptLog::default()).collect();
    let start = |slot: usize, model: usize| {
        let log = &logs[slot];
        async move {
            let turn = attempts
                .turn(model, body, stream, deadline, started, log)
                .await;
            (slot, turn)
        }
    };
    let mut queue = models.iter().copied();
    let mut next_model =
        || queue.find(|&m| attempts.breakers.try_acquire(m, std::time::Instant::now()));
    let mut turns = FuturesUnordered::new();
    let mut running: Vec<Running> = Vec::new();
    let mut slots = 0;
    let mut last: Option<UpstreamError> = None;
    let mut no_more_models = false;
    let ended = loop {
        if running.is_empty() {
            let Some(model) = next_model() else {
                break Err(last
                    .take()
                    .map_or(Failure::NoneAvailable, Failure::Exhausted));
            };
            turns.push(start(slots, model));
            running.push(Running {
                slot: slots,
                model,
                since: tokio::time::Instant::now(),
                hedge: false,
            });
            slots += 1;
        }
        let hedge_at = match running.as_slice() {
            [only] if !no_more_models => Some(only.since + h.after),
            _ => None,
        };
        tokio::select! {
            Some((slot, turn)) = turns.next() => {
                let Some(at) = running.iter().position(|r| r.slot == slot) else {
                    continue;
                };
                let done = running.swap_remove(at);
                match turn {
                    Turn::Answered(a) => break Ok((done, a)),
                    Turn::Failed(e) => last = Some(e),
                    Turn::Client(e) => break Err(Failure::Client(e)),
                    Turn::Deadline => break Err(Failure::Deadline),
                }
            }
            () = tokio::time::sleep_until(hedge_at.unwrap_or(deadline)), if hedge_at.is_some() => {
                match next_model() {
                    Some(model) => {
                        let entry = &attempts.catalog.models[model];
                        metrics::counter!(names::HEDGES, "route" => h.route.to_owned(),
                            "model" => entry.name.as_str().to_owned())
                        .increment(1);
                        tracing::info!(model = entry.name.as_str(),
                            "No answer within the route's TTFT deadline; hedging to the next model.");
                        turns.push(start(slots, model));
                        running.push(Running { slot: slots, model, since: tokio::time::Instant::now(), hedge: true });
                        slots += 1;
                    }
                    None => no_more_models = true,
                }
            }
            // Unreachable (a turn always runs here); ends the loop rather than panic.
            else => break Err(last.take().map_or(Failure::NoneAvailable, Failure::Exhausted)),
        }
    };
    // Dropping the turns still in flight drops their upstream requests.
    drop(turns);
    let winner = ended.as_ref().ok().map(|(w, _)| w.slot);
    let mut prompt_tokens = None;
    for loser in &running {
        let error = match (&ended, winner) {
            (Ok(_), Some(w)) if w > loser.slot => OVERTAKEN,
            (Err(Failure::Deadline), _) => "deadline",
            _ => CANCELLED_HEDGE,
        };
        let tokens =
            *prompt_tokens.get_or_insert_with(|| tokens::count_messages(body.tree.get("messages")));
        push(
            &logs[loser.slot],
            lost(attempts, h.route, loser, error, tokens),
        );
        attempts
            .breakers
            .on_neutral(loser.model, std::time::Instant::now());
    }
    chain.extend(logs.into_iter().take(slots).flat_map(take));
    let (done, answer) = ended?;
    if done.hedge {
        let entry = &attempts.catalog.models[done.model];
        metrics::counter!(names::HEDGE_WINS, "route" => h.route.to_owned(),
            "model" => entry.name.as_str().to_owned())
        .increment(1);
    }
    Ok(answer)
}

/// The record of a cancelled turn, charged its prompt.
fn lost(
    attempts: &Attempts<'_>,
    route: &str,
    loser: &Running,
    error: &str,
    prompt_tokens: u32,
) -> AttemptRecord {
    let entry = &attempts.catalog.models[loser.model];
    let cost = entry.prices.cost_usd(&Usage {
        prompt_tokens,
        completion_tokens: 0,
        counted_locally: true,
    });
    if cost > 0.0 {
        metrics::counter!(names::COST_USD, "route" => route.to_owned(),
            "model" => entry.name.as_str().to_owned(), "provider" => entry.provider.name.clone())
        .increment((cost * 1e6).round() as u64);
    }
    AttemptRecord {
        cost_usd: Some(cost),
        elapsed_ms: Some(loser.since.elapsed().as_secs_f64() * 1000.0),
        ..AttemptRecord::new(entry.name.as_str(), Some(error), None)
    }
}
