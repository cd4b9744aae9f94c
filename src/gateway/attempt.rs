//! Getting an answer out of the ranked models: retries with full-jitter
//! exponential backoff on retryable failures (honouring `Retry-After`), then
//! fallback to the next model, all inside the request's deadline. A stream
//! counts as answered once its first chunk has arrived; before that, a
//! failure falls back like any other.

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use rand::Rng;
use tracing::Instrument;

use super::breaker::Breakers;
use super::catalog::Catalog;
use crate::config::ResilienceConfig;
use crate::providers::{
    Chunk, ChunkStream, ClientBody, Completion, FailureKind, Reply, UpstreamError, UpstreamRequest,
    Usage,
};
use crate::store::AttemptRecord;
use crate::telemetry::{names, spans};

pub enum Answer {
    Complete {
        model: usize,
        body: Completion,
        usage: Option<Usage>,
    },
    Stream {
        model: usize,
        first: Chunk,
        rest: ChunkStream,
        ttft: Duration,
    },
}

#[derive(Debug)]
pub enum Failure {
    /// The request itself is at fault; the upstream's message goes back.
    Client(UpstreamError),
    /// The deadline passed.
    Deadline,
    /// Every model tried failed; the last error.
    Exhausted(UpstreamError),
    /// No model could even be tried (all circuits open).
    NoneAvailable,
}

pub struct Attempts<'a> {
    pub catalog: &'a Catalog,
    pub breakers: &'a Breakers,
    pub resilience: &'a ResilienceConfig,
}

/// What one model's turn (its attempts, retries included) came to.
pub enum Turn {
    Answered(Answer),
    /// The model failed for good (or its circuit opened): try the next one.
    Failed(UpstreamError),
    /// The request itself is at fault: stop.
    Client(UpstreamError),
    /// The request's deadline passed.
    Deadline,
}

/// The attempts made so far, in order. Behind a mutex, locked for one push
/// and never across an await, so that two racing turns (`hedge`) can each
/// write to their own log while a shared reference is held.
pub type AttemptLog = std::sync::Mutex<Vec<AttemptRecord>>;

pub fn push(log: &AttemptLog, rec: AttemptRecord) {
    log.lock().unwrap_or_else(|p| p.into_inner()).push(rec);
}

pub fn take(log: AttemptLog) -> Vec<AttemptRecord> {
    log.into_inner().unwrap_or_else(|p| p.into_inner())
}

impl Attempts<'_> {
    pub async fn run(
        &self,
        ranking: &[usize],
        body: ClientBody<'_>,
        stream: bool,
        deadline: tokio::time::Instant,
        chain: &mut Vec<AttemptRecord>,
    ) -> Result<Answer, Failure> {
        let started = tokio::time::Instant::now();
        let log = AttemptLog::new(std::mem::take(chain));
        let mut last: Option<UpstreamError> = None;
        let max_models = self.resilience.max_models_per_request as usize;
        let mut result = None;
        for &model in ranking.iter().take(max_models) {
            if !self.breakers.try_acquire(model, Instant::now()) {
                continue;
            }
            match self
                .turn(model, body, stream, deadline, started, &log)
                .await
            {
                Turn::Answered(a) => result = Some(Ok(a)),
                Turn::Failed(e) => last = Some(e),
                Turn::Client(e) => result = Some(Err(Failure::Client(e))),
                Turn::Deadline => result = Some(Err(Failure::Deadline)),
            }
            if result.is_some() {
                break;
            }
        }
        *chain = take(log);
        result.unwrap_or_else(|| {
            Err(match last {
                Some(e) => Failure::Exhausted(e),
                None => Failure::NoneAvailable,
            })
        })
    }

    /// One model's turn: attempts with retries until it answers, fails for
    /// good, or the deadline passes. The caller has acquired its breaker.
    /// `started` is when the request began asking, for the TTFT.
    pub async fn turn(
        &self,
        model: usize,
        body: ClientBody<'_>,
        stream: bool,
        deadline: tokio::time::Instant,
        started: tokio::time::Instant,
        log: &AttemptLog,
    ) -> Turn {
        let entry = &self.catalog.models[model];
        let mut last = None;
        for attempt in 1..=self.resilience.max_attempts_per_model {
            let req = UpstreamRequest {
                body,
                upstream_model: &entry.upstream_name,
                stream,
            };
            let call = entry.provider.call(req).instrument(spans::upstream(
                entry.name.as_str(),
                &entry.upstream_name,
                entry.provider.kind,
            ));
            let result = match tokio::time::timeout_at(deadline, call).await {
                Err(_) => {
                    self.breakers.on_neutral(model, Instant::now());
                    push(log, record(entry.name.as_str(), Some("deadline"), None));
                    return Turn::Deadline;
                }
                Ok(r) => r,
            };
            let outcome = match result {
                Ok(Reply::Complete { body, usage }) => Ok(Answer::Complete { model, body, usage }),
                Ok(Reply::Stream(mut rest)) => {
                    match tokio::time::timeout_at(deadline, rest.next()).await {
                        Err(_) => {
                            self.breakers.on_neutral(model, Instant::now());
                            push(log, record(entry.name.as_str(), Some("deadline"), None));
                            return Turn::Deadline;
                        }
                        Ok(Some(Ok(first))) => Ok(Answer::Stream {
                            model,
                            first,
                            rest,
                            ttft: started.elapsed(),
                        }),
                        Ok(Some(Err(e))) => Err(e),
                        Ok(None) => Err(UpstreamError::new(
                            FailureKind::Protocol,
                            "upstream stream ended before its first chunk",
                        )),
                    }
                }
                Err(e) => Err(e),
            };
            let e = match outcome {
                Ok(answer) => {
                    self.breakers.on_success(model);
                    push(log, record(entry.name.as_str(), None, None));
                    return Turn::Answered(answer);
                }
                Err(e) => e,
            };
            metrics::counter!(names::UPSTREAM_ERRORS,
                "model" => entry.name.as_str().to_owned(),
                "provider" => entry.provider.name.clone(),
                "kind" => e.kind.as_str())
            .increment(1);
            push(
                log,
                record(entry.name.as_str(), Some(e.kind.as_str()), e.status),
            );
            tracing::warn!(model = entry.name.as_str(), attempt, kind = e.kind.as_str(),
                status = e.status, error = %e.message, "An upstream attempt failed.");
            if e.kind.is_client_fault() {
                self.breakers.on_neutral(model, Instant::now());
                return Turn::Client(e);
            }
            if self.breakers.on_failure(model, Instant::now()) {
                tracing::warn!(
                    model = entry.name.as_str(),
                    "The circuit for this model is now open."
                );
                return Turn::Failed(e);
            }
            let retry = e.kind.retryable() && attempt < self.resilience.max_attempts_per_model;
            let wait = self.backoff(attempt, e.retry_after);
            last = Some(e);
            if !retry || tokio::time::Instant::now() + wait >= deadline {
                // Not worth another try, or waiting would spend the whole
                // deadline: the next model, now.
                break;
            }
            tokio::time::sleep(wait).await;
            if !self.breakers.try_acquire(model, Instant::now()) {
                break;
            }
        }
        match last {
            Some(e) => Turn::Failed(e),
            // max_attempts_per_model = 0 is refused by validation; be safe anyway.
            None => Turn::Failed(UpstreamError::new(
                FailureKind::Protocol,
                "no attempt was made on this model",
            )),
        }
    }

    /// Full jitter: uniform in [0, min(max, base * 2^(attempt-1))], but never
    /// shorter than the upstream's `Retry-After`.
    fn backoff(&self, attempt: u32, retry_after: Option<Duration>) -> Duration {
        let base = self.resilience.backoff_base_ms as f64;
        let cap = (base * 2f64.powi(attempt.saturating_sub(1) as i32))
            .min(self.resilience.backoff_max_ms as f64);
        let jittered =
            Duration::from_secs_f64(rand::rng().random_range(0.0..=cap.max(0.0)) / 1000.0);
        retry_after.map_or(jittered, |r| r.max(jittered))
    }
}

fn record(model: &str, error: Option<&str>, status: Option<u16>) -> AttemptRecord {
    AttemptRecord::new(model, error, status)
}
