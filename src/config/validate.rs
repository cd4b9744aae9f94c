//! Cross-field checks that serde cannot express: references between
//! providers, models and routes, unique names, finite non-negative prices.

use std::collections::HashSet;
use std::net::SocketAddr;

use super::load::ConfigError;
use super::schema::Config;

pub(super) fn validate(c: &Config, file: &str) -> Result<(), ConfigError> {
    let bad = |key: String, reason: String| Err(ConfigError::invalid(file, key, reason));

    if c.server.listen.parse::<SocketAddr>().is_err() {
        return bad(
            "server.listen".into(),
            format!(
                "{:?} is not an address like 127.0.0.1:8080",
                c.server.listen
            ),
        );
    }
    if c.server.max_body_bytes == 0 {
        return bad("server.max_body_bytes".into(), "must be positive".into());
    }
    if c.resilience.max_attempts_per_model == 0 || c.resilience.max_models_per_request == 0 {
        return bad(
            "resilience".into(),
            "max_attempts_per_model and max_models_per_request must be at least 1".into(),
        );
    }
    if c.store.batch_size == 0 || c.store.outbox_capacity == 0 {
        return bad(
            "store".into(),
            "batch_size and outbox_capacity must be positive".into(),
        );
    }
    if c.store.retention_days == Some(0) || c.store.rollup_retention_days == Some(0) {
        return bad(
            "store".into(),
            "retention_days and rollup_retention_days must be at least 1 (leave them out to keep everything)".into(),
        );
    }

    validate_scale(&c.scale).map_err(|(key, reason)| ConfigError::invalid(file, key, reason))?;

    let mut providers = HashSet::new();
    for (i, p) in c.providers.iter().enumerate() {
        if !providers.insert(p.name.as_str()) {
            return bad(
                format!("providers[{i}].name"),
                format!("duplicate provider {:?}", p.name),
            );
        }
        let url_ok = (p.base_url.starts_with("http://") || p.base_url.starts_with("https://"))
            && reqwest::Url::parse(&p.base_url).is_ok();
        if !url_ok {
            return bad(
                format!("providers[{i}].base_url"),
                format!("{:?} is not an http(s) URL", p.base_url),
            );
        }
        if p.api_key_env.as_deref() == Some("") {
            return bad(
                format!("providers[{i}].api_key_env"),
                "must name an environment variable".into(),
            );
        }
    }

    let mut models = HashSet::new();
    for (i, m) in c.models.iter().enumerate() {
        if !models.insert(m.name.as_str()) {
            return bad(
                format!("models[{i}].name"),
                format!("duplicate model {:?}", m.name.as_str()),
            );
        }
        if !providers.contains(m.provider.as_str()) {
            return bad(
                format!("models[{i}].provider"),
                format!("unknown provider {:?}", m.provider),
            );
        }
        for (key, v) in [
            ("input_usd_per_mtok", m.input_usd_per_mtok),
            ("output_usd_per_mtok", m.output_usd_per_mtok),
        ] {
            if !v.is_finite() || v < 0.0 {
                return bad(
                    format!("models[{i}].{key}"),
                    format!("{v} must be a finite, non-negative price"),
                );
            }
        }
    }

    let mut routes = HashSet::new();
    for (i, r) in c.routes.iter().enumerate() {
        let name = r.name.as_str();
        if !routes.insert(name) {
            return bad(
                format!("routes[{i}].name"),
                format!("duplicate route {name:?}"),
            );
        }
        if models.contains(name) {
            return bad(
                format!("routes[{i}].name"),
                format!("{name:?} is already a model name; a client could not tell them apart"),
            );
        }
        if r.models.is_empty() {
            return bad(
                format!("routes[{i}].models"),
                "a route needs at least one model".into(),
            );
        }
        let mut seen = HashSet::new();
        for (j, m) in r.models.iter().enumerate() {
            if !models.contains(m.as_str()) {
                return bad(
                    format!("routes[{i}].models[{j}]"),
                    format!("unknown model {:?}", m.as_str()),
                );
            }
            if !seen.insert(m.as_str()) {
                return bad(
                    format!("routes[{i}].models[{j}]"),
                    format!("model {:?} listed twice", m.as_str()),
                );
            }
        }
        for (key, v) in [
            ("objective.cost_weight", r.objective.cost_weight),
            ("objective.latency_weight", r.objective.latency_weight),
        ] {
            if !v.is_finite() || v < 0.0 {
                return bad(
                    format!("routes[{i}].{key}"),
                    format!("{v} must be finite and non-negative"),
                );
            }
        }
        if let Some(b) = &r.budget {
            if !b.target_usd_per_request.is_finite() || b.target_usd_per_request <= 0.0 {
                return bad(
                    format!("routes[{i}].budget.target_usd_per_request"),
                    "must be a positive number of USD".into(),
                );
            }
        }
        if let Some(b) = &r.bandit {
            if let Err(e) = b.validate() {
                return bad(format!("routes[{i}].bandit"), e.0);
            }
            if let Some(f) = &b.fixed_arm {
                if !seen.contains(f.as_str()) {
                    return bad(
                        format!("routes[{i}].bandit.fixed_arm"),
                        format!("{:?} is not a model of this route", f.as_str()),
                    );
                }
            }
        }
        if let Some(f) = &r.features {
            if let Err(e) = f.validate() {
                return bad(format!("routes[{i}].features"), e.to_string());
            }
        }
        for (tier, cap) in &r.tier_exploration_caps {
            if !(0.0..=1.0).contains(cap) {
                return bad(
                    format!("routes[{i}].tier_exploration_caps.{tier}"),
                    format!("{cap} must be in [0, 1]"),
                );
            }
        }
        if let Some(cap) = r.exploration_cap {
            if !(0.0..=1.0).contains(&cap) {
                return bad(
                    format!("routes[{i}].exploration_cap"),
                    format!("{cap} must be in [0, 1]"),
                );
            }
        }
        if r.ttft_deadline_ms == Some(0) {
            return bad(
                format!("routes[{i}].ttft_deadline_ms"),
                "must be a positive number of milliseconds".into(),
            );
        }
    }
    for (i, rule) in c.rules.iter().enumerate() {
        if let Some(route) = &rule.route {
            if !routes.contains(route.as_str()) {
                return bad(
                    format!("rules[{i}].route"),
                    format!("unknown route {:?}", route.as_str()),
                );
            }
        }
        if let Some(pin) = &rule.pin {
            if !models.contains(pin.as_str()) {
                return bad(
                    format!("rules[{i}].pin"),
                    format!("unknown model {:?}", pin.as_str()),
                );
            }
        }
        for (j, m) in rule.models.iter().flatten().enumerate() {
            if !models.contains(m.as_str()) {
                return bad(
                    format!("rules[{i}].models[{j}]"),
                    format!("unknown model {:?}", m.as_str()),
                );
            }
        }
        if rule.pin.is_some() && rule.models.is_some() {
            return bad(
                format!("rules[{i}]"),
                "use either `pin` or `models`, not both".into(),
            );
        }
        if let Some(o) = &rule.objective {
            if !(o.cost_weight.is_finite()
                && o.cost_weight >= 0.0
                && o.latency_weight.is_finite()
                && o.latency_weight >= 0.0)
            {
                return bad(
                    format!("rules[{i}].objective"),
                    "weights must be finite and non-negative".into(),
                );
            }
        }
        if let Some(b) = &rule.budget {
            if !(b.max_cost_usd.is_finite() && b.max_cost_usd > 0.0) {
                return bad(
                    format!("rules[{i}].budget.max_cost_usd"),
                    "must be a positive number of USD".into(),
                );
            }
        }
        if let Err(err) = crate::auth::issue::check_flags(&rule.matches.flags) {
            return bad(format!("rules[{i}].match.flags"), err.to_string());
        }
    }
    validate_lifecycles(c, file)?;
    validate_experiments(c, file, &models, &routes)
}

/// `[routes.onboard.<model>]` and `[routes.retire.<model>]`.
fn validate_lifecycles(c: &Config, file: &str) -> Result<(), ConfigError> {
    let bad = |key: String, reason: String| Err(ConfigError::invalid(file, key, reason));
    for (i, r) in c.routes.iter().enumerate() {
        for (m, o) in &r.onboard {
            let key = format!("routes[{i}].onboard.{}", m.as_str());
            if !r.models.contains(m) {
                return bad(key, "is not one of the route's models".into());
            }
            if let Some(q) = o.prior_quality {
                if !(0.0..=1.0).contains(&q) {
                    return bad(
                        format!("{key}.prior_quality"),
                        format!("{q} must be in [0, 1]"),
                    );
                }
            }
            if !(0.0..=1.0).contains(&o.explore_share) {
                return bad(
                    format!("{key}.explore_share"),
                    format!("{} must be in [0, 1]", o.explore_share),
                );
            }
        }
        for (m, t) in &r.retire {
            let key = format!("routes[{i}].retire.{}", m.as_str());
            if !r.models.contains(m) {
                return bad(key, "is not one of the route's models".into());
            }
            if r.onboard.contains_key(m) {
                return bad(
                    key,
                    "a model cannot be onboarded and retired at once".into(),
                );
            }
            if t.window_s == 0 {
                return bad(
                    format!("{key}.window_s"),
                    "must be at least 1 second".into(),
                );
            }
        }
        if !r.retire.is_empty() && r.models.iter().all(|m| r.retire.contains_key(m)) {
            return bad(
                format!("routes[{i}].retire"),
                "would retire every model of the route".into(),
            );
        }
    }
    Ok(())
}

fn validate_experiments(
    c: &Config,
    file: &str,
    models: &HashSet<&str>,
    routes: &HashSet<&str>,
) -> Result<(), ConfigError> {
    use crate::experiments::ExperimentKind;
    let bad = |key: String, reason: String| Err(ConfigError::invalid(file, key, reason));
    let mut names = HashSet::new();
    let mut slots = HashSet::new();
    for (i, e) in c.experiments.iter().enumerate() {
        let key = |k: &str| format!("experiments[{i}].{k}");
        if e.name.is_empty() || e.name.len() > 128 {
            return bad(key("name"), "must be 1 to 128 characters".into());
        }
        if !names.insert(e.name.as_str()) {
            return bad(key("name"), format!("duplicate experiment {:?}", e.name));
        }
        if !routes.contains(e.route.as_str()) {
            return bad(
                key("route"),
                format!("unknown route {:?}", e.route.as_str()),
            );
        }
        if !(e.share.is_finite() && (0.0..=1.0).contains(&e.share)) {
            return bad(key("share"), format!("{} must be in [0, 1]", e.share));
        }
        if e.candidate.is_empty() {
            return bad(
                key("candidate"),
                "must name a model, a route or a policy version".into(),
            );
        }
        match e.kind {
            ExperimentKind::Shadow if !models.contains(e.candidate.as_str()) => {
                return bad(key("candidate"), format!("unknown model {:?}", e.candidate));
            }
            ExperimentKind::Ab if e.candidate == e.route.as_str() => {
                return bad(
                    key("candidate"),
                    "a route cannot be its own candidate".into(),
                );
            }
            _ => {}
        }
        // One acting experiment (canary or A/B) per route; one of each
        // shadow kind.
        let slot = if e.kind.acts() {
            "acting"
        } else {
            e.kind.as_str()
        };
        if !slots.insert((e.route.as_str(), slot)) {
            return bad(
                key("kind"),
                format!(
                    "route {:?} already has a {} experiment",
                    e.route.as_str(),
                    if e.kind.acts() {
                        "canary or A/B"
                    } else {
                        e.kind.as_str()
                    }
                ),
            );
        }
        if let Some(a) = &e.auto_promote {
            if !(0.5..1.0).contains(&a.confidence) {
                return bad(
                    key("auto_promote.confidence"),
                    format!("{} must be in [0.5, 1)", a.confidence),
                );
            }
        }
        if let Some(f) = &e.key_flag {
            if let Err(err) = crate::auth::issue::check_flags(std::slice::from_ref(f)) {
                return bad(key("key_flag"), err.to_string());
            }
        }
    }
    Ok(())
}

fn validate_scale(s: &super::schema::ScaleConfig) -> Result<(), (String, String)> {
    let bad = |key: &str, reason: &str| Err((format!("scale.{key}"), reason.to_owned()));
    if !(50..=600_000).contains(&s.delta_flush_ms) {
        return bad("delta_flush_ms", "must be between 50 and 600000 ms");
    }
    if s.stale_after_ms < 2 * s.delta_flush_ms {
        return bad(
            "stale_after_ms",
            "must be at least twice delta_flush_ms (a live replica heartbeats once per flush)",
        );
    }
    if s.checkpoint_ms < s.delta_flush_ms {
        return bad("checkpoint_ms", "must be at least delta_flush_ms");
    }
    let f = s.budget_lease_fraction;
    if !(f.is_finite() && f > 0.0 && f <= 1.0) {
        return bad("budget_lease_fraction", "must be a number in (0, 1]");
    }
    if let Some(id) = &s.replica_id {
        let ok = !id.is_empty()
            && id.len() <= 128
            && id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.:".contains(c));
        if !ok {
            return bad(
                "replica_id",
                "must be 1 to 128 characters of letters, digits, '-', '_', '.', ':'",
            );
        }
    }
    Ok(())
}
