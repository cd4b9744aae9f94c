//! Routing rules (DESIGN.md `[[rules]]`): evaluated in order before the
//! policy; the first rule whose `match` fits the request applies. A rule can
//! pin a model, restrict the arms, or override the objective and the
//! per-request cost ceiling. Pure: no I/O, no HTTP types.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::config::{Capability, ObjectiveConfig};
use crate::domain::ModelName;

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RuleMatch {
    /// The client key's id or name.
    pub key: Option<String>,
    pub tenant: Option<String>,
    /// Every listed feature flag must be set on the client key.
    #[serde(default)]
    pub flags: Vec<String>,
    pub tier: Option<String>,
    /// Every listed tag must be present with this value.
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    pub min_prompt_tokens: Option<u32>,
    pub max_prompt_tokens: Option<u32>,
    /// Every listed capability must be needed by the request.
    #[serde(default)]
    pub needs: Vec<Capability>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RuleBudget {
    /// A per-request cost ceiling for matching requests.
    pub max_cost_usd: f64,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    #[serde(rename = "match", default)]
    pub matches: RuleMatch,
    /// The route the rule applies to; absent = every route.
    pub route: Option<ModelName>,
    /// Send matching requests to this model, bypassing the policy.
    pub pin: Option<ModelName>,
    /// Restrict the route's arms to these models.
    pub models: Option<Vec<ModelName>>,
    pub objective: Option<ObjectiveConfig>,
    pub budget: Option<RuleBudget>,
}

/// What the rules look at in a request.
#[derive(Debug, Clone, Default)]
pub struct RuleContext<'a> {
    pub key_id: Option<&'a str>,
    pub key_name: Option<&'a str>,
    pub tenant: Option<&'a str>,
    pub flags: &'a [String],
    pub tier: Option<&'a str>,
    pub tags: Option<&'a BTreeMap<String, String>>,
    pub prompt_tokens: u32,
    pub needs: &'a [Capability],
}

impl RuleMatch {
    pub fn fits(&self, cx: &RuleContext<'_>) -> bool {
        let eq = |want: &Option<String>, got: Option<&str>| {
            want.as_deref().is_none_or(|w| got == Some(w))
        };
        let key = self
            .key
            .as_deref()
            .is_none_or(|k| cx.key_id == Some(k) || cx.key_name == Some(k));
        key && eq(&self.tenant, cx.tenant)
            && self.flags.iter().all(|f| cx.flags.contains(f))
            && eq(&self.tier, cx.tier)
            && self
                .tags
                .iter()
                .all(|(k, v)| cx.tags.and_then(|t| t.get(k)) == Some(v))
            && self.min_prompt_tokens.is_none_or(|m| cx.prompt_tokens >= m)
            && self.max_prompt_tokens.is_none_or(|m| cx.prompt_tokens <= m)
            && self.needs.iter().all(|n| cx.needs.contains(n))
    }
}

/// The first rule for `route` that fits, with its position.
pub fn first_match<'r>(
    rules: &'r [RuleConfig],
    route: &str,
    cx: &RuleContext<'_>,
) -> Option<(usize, &'r RuleConfig)> {
    rules
        .iter()
        .enumerate()
        .find(|(_, r)| r.route.as_ref().is_none_or(|n| n.as_str() == route) && r.matches.fits(cx))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(text: &str) -> RuleConfig {
        toml::from_str(text).unwrap()
    }

    #[test]
    fn first_matching_rule_wins_and_route_scopes_it() {
        let rules = vec![
            rule("route = \"other\"\npin = \"x\"\n[match]\ntier = \"premium\""),
            rule("route = \"auto\"\npin = \"big\"\n[match]\ntier = \"premium\""),
            rule("models = [\"small\"]\n[match]\ntier = \"premium\""),
        ];
        let cx = RuleContext {
            tier: Some("premium"),
            ..Default::default()
        };
        let (i, r) = first_match(&rules, "auto", &cx).unwrap();
        assert_eq!(i, 1);
        assert_eq!(r.pin.as_ref().unwrap().as_str(), "big");
        let free = RuleContext {
            tier: Some("free"),
            ..Default::default()
        };
        assert!(first_match(&rules, "auto", &free).is_none());
    }

    #[test]
    fn key_tenant_and_flags_come_from_the_client_key() {
        let r = rule("pin = \"m\"\n[match]\nkey = \"ci\"\nflags = [\"beta\"]");
        let flags = ["beta".to_owned(), "other".to_owned()];
        let mut cx = RuleContext {
            key_id: Some("key_1"),
            key_name: Some("ci"),
            flags: &flags,
            ..Default::default()
        };
        assert!(r.matches.fits(&cx), "by name, with the flag among others");
        cx.key_name = None;
        assert!(!r.matches.fits(&cx), "neither id nor name is `ci`");
        cx.key_id = Some("ci");
        assert!(r.matches.fits(&cx), "by id");
        cx.flags = &[];
        assert!(!r.matches.fits(&cx), "the flag is missing");
        let anonymous = RuleContext::default();
        assert!(!rule("pin = \"m\"\n[match]\ntenant = \"acme\"")
            .matches
            .fits(&anonymous));
    }

    #[test]
    fn tags_tokens_and_needs_must_all_fit() {
        let r = rule("pin = \"m\"\n[match]\nmin_prompt_tokens = 100\nneeds = [\"tools\"]\ntags = { team = \"search\" }");
        let tags: BTreeMap<String, String> = [("team".to_owned(), "search".to_owned())].into();
        let needs = [Capability::Tools];
        let mut cx = RuleContext {
            tags: Some(&tags),
            prompt_tokens: 150,
            needs: &needs,
            ..Default::default()
        };
        assert!(r.matches.fits(&cx));
        cx.prompt_tokens = 50;
        assert!(!r.matches.fits(&cx));
        cx.prompt_tokens = 150;
        cx.needs = &[];
        assert!(!r.matches.fits(&cx));
    }
}
