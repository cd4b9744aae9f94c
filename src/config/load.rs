//! Reading a config file (or the built-in defaults) and applying the
//! environment on top. The environment is passed in as a map so tests can
//! supply their own.

use std::collections::HashMap;
use std::path::Path;

use super::schema::Config;
use super::validate::validate;

/// The process environment, or a test's stand-in for it.
pub type Env = HashMap<String, String>;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{file}: cannot read: {reason}")]
    Read { file: String, reason: String },
    #[error("{file}: {key}: {reason}")]
    Invalid {
        file: String,
        key: String,
        reason: String,
    },
}

impl ConfigError {
    pub(super) fn invalid(file: &str, key: impl Into<String>, reason: impl Into<String>) -> Self {
        ConfigError::Invalid {
            file: file.to_owned(),
            key: key.into(),
            reason: reason.into(),
        }
    }
}

/// Loads `path` if given; else `./switchboard.toml` if it exists; else the
/// built-in defaults. `SWITCHBOARD_CONFIG` stands in for a missing `path`.
pub fn load(path: Option<&Path>, env: &Env) -> Result<Config, ConfigError> {
    let from_env = env.get("SWITCHBOARD_CONFIG").map(Path::new);
    let default = Path::new("switchboard.toml");
    let chosen = path
        .or(from_env)
        .or_else(|| default.exists().then_some(default));
    match chosen {
        Some(file) => {
            let name = file.display().to_string();
            let text = std::fs::read_to_string(file).map_err(|e| ConfigError::Read {
                file: name.clone(),
                reason: e.to_string(),
            })?;
            let mut config = load_str(&text, &name, env)?;
            config.source = Some(file.to_path_buf());
            Ok(config)
        }
        None => load_str("", "<built-in defaults>", env),
    }
}

/// Parses and validates TOML text; `file` is only used in messages.
pub fn load_str(text: &str, file: &str, env: &Env) -> Result<Config, ConfigError> {
    let de = toml::Deserializer::new(text);
    let mut config: Config = serde_path_to_error::deserialize(de).map_err(|e| {
        let key = e.path().to_string();
        let inner = e.into_inner();
        // toml's own message repeats the line with a caret; keep only the reason.
        let reason = inner.message().trim().to_owned();
        let key = if key == "." { "<document>".into() } else { key };
        ConfigError::invalid(file, key, reason)
    })?;
    apply_env(&mut config, env);
    validate(&config, file)?;
    Ok(config)
}

fn apply_env(config: &mut Config, env: &Env) {
    if let Some(listen) = env.get("SWITCHBOARD_LISTEN").filter(|v| !v.is_empty()) {
        config.server.listen = listen.clone();
    }
    if let Some(id) = env.get("SWITCHBOARD_REPLICA_ID").filter(|v| !v.is_empty()) {
        config.scale.replica_id = Some(id.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> String {
        match load_str(text, "test.toml", &Env::new()) {
            Ok(_) => String::from("<accepted>"),
            Err(e) => e.to_string(),
        }
    }

    const BASE: &str = r#"
[[providers]]
name = "openai"
kind = "openai"
base_url = "http://127.0.0.1:9/v1"

[[models]]
name = "small"
provider = "openai"
input_usd_per_mtok = 0.1
output_usd_per_mtok = 0.2

[[models]]
name = "large"
provider = "openai"
input_usd_per_mtok = 1.0
output_usd_per_mtok = 2.0

[[routes]]
name = "auto"
models = ["small", "large"]
"#;

    #[test]
    fn accepts_the_design_example() {
        let c = load_str(BASE, "test.toml", &Env::new()).unwrap();
        assert_eq!(c.routes[0].models.len(), 2);
        assert_eq!(c.models[0].upstream_name(), "small");
    }

    #[test]
    fn empty_text_is_the_defaults() {
        let c = load_str("", "x", &Env::new()).unwrap();
        assert_eq!(c.server.listen, "127.0.0.1:8080");
    }

    #[test]
    fn unknown_key_names_file_and_key() {
        let e = err(&format!(
            "{BASE}\n[server]\nlisten = \"127.0.0.1:1\"\nlisten_port = 3\n"
        ));
        assert!(
            e.starts_with("test.toml: server.listen_port: unknown field `listen_port`"),
            "{e}"
        );
    }

    #[test]
    fn wrong_type_names_the_nested_key() {
        let e = err(&BASE.replace("input_usd_per_mtok = 0.1", "input_usd_per_mtok = \"cheap\""));
        assert!(e.contains("models[0].input_usd_per_mtok"), "{e}");
    }

    #[test]
    fn route_naming_an_unknown_model_is_refused() {
        let e = err(&BASE.replace("[\"small\", \"large\"]", "[\"small\", \"huge\"]"));
        assert_eq!(e, "test.toml: routes[0].models[1]: unknown model \"huge\"");
    }

    #[test]
    fn experiments_and_lifecycles_are_checked() {
        let exp = |body: &str| format!("{BASE}\n[[experiments]]\n{body}\n");
        let ok = exp("name = \"c\"\nroute = \"auto\"\nkind = \"canary\"\ncandidate = \"large\"\nshare = 0.05\nsticky_by = \"user\"");
        assert_eq!(err(&ok), "<accepted>");
        let e = err(&exp("name = \"c\"\nroute = \"nope\"\nkind = \"canary\"\ncandidate = \"large\"\nshare = 0.05"));
        assert_eq!(e, "test.toml: experiments[0].route: unknown route \"nope\"");
        let e = err(&exp(
            "name = \"c\"\nroute = \"auto\"\nkind = \"canary\"\ncandidate = \"large\"\nshare = 1.5",
        ));
        assert_eq!(e, "test.toml: experiments[0].share: 1.5 must be in [0, 1]");
        let e = err(&exp(
            "name = \"c\"\nroute = \"auto\"\nkind = \"shadow\"\ncandidate = \"huge\"\nshare = 0.5",
        ));
        assert_eq!(
            e,
            "test.toml: experiments[0].candidate: unknown model \"huge\""
        );
        let e = err(&exp(
            "name = \"c\"\nroute = \"auto\"\nkind = \"fancy\"\ncandidate = \"large\"\nshare = 0.5",
        ));
        assert!(
            e.starts_with("test.toml: experiments[0].kind: unknown variant `fancy`"),
            "{e}"
        );
        let two = format!(
            "{ok}\n[[experiments]]\nname = \"d\"\nroute = \"auto\"\nkind = \"ab\"\ncandidate = \"v3\"\nshare = 0.5\n"
        );
        assert_eq!(
            err(&two),
            "test.toml: experiments[1].kind: route \"auto\" already has a canary or A/B experiment"
        );

        let route = |extra: &str| {
            BASE.replace(
                "models = [\"small\", \"large\"]\n",
                &format!("models = [\"small\", \"large\"]\n{extra}\n"),
            )
        };
        assert_eq!(
            err(&route("[routes.retire.large]\nwindow_s = 600")),
            "<accepted>"
        );
        assert_eq!(
            err(&route(
                "[routes.onboard.large]\nprior_quality = 0.9\nexplore_quota = 100"
            )),
            "<accepted>"
        );
        assert_eq!(
            err(&route("[routes.retire.huge]\nwindow_s = 600")),
            "test.toml: routes[0].retire.huge: is not one of the route's models"
        );
        assert_eq!(
            err(&route(
                "[routes.retire.large]\nwindow_s = 600\n[routes.retire.small]\nwindow_s = 600"
            )),
            "test.toml: routes[0].retire: would retire every model of the route"
        );
        assert_eq!(
            err(&route("[routes.onboard.large]\nexplore_share = 2.0")),
            "test.toml: routes[0].onboard.large.explore_share: 2 must be in [0, 1]"
        );
    }

    #[test]
    fn env_overrides_listen() {
        let mut env = Env::new();
        env.insert("SWITCHBOARD_LISTEN".into(), "127.0.0.1:9999".into());
        let c = load_str(BASE, "t", &env).unwrap();
        assert_eq!(c.server.listen, "127.0.0.1:9999");
    }

    #[test]
    fn scale_settings_are_checked_and_the_replica_id_comes_from_the_env() {
        let e = err(&format!("{BASE}\n[scale]\ndelta_flush_ms = 6000\n"));
        assert!(
            e.starts_with("test.toml: scale.stale_after_ms: must be at least twice"),
            "{e}"
        );
        let e = err(&format!("{BASE}\n[scale]\nreplica_id = \"a b\"\n"));
        assert!(e.starts_with("test.toml: scale.replica_id:"), "{e}");
        let e = err(&format!("{BASE}\n[scale]\nbudget_lease_fraction = 0.0\n"));
        assert!(e.contains("scale.budget_lease_fraction"), "{e}");
        let mut env = Env::new();
        env.insert("SWITCHBOARD_REPLICA_ID".into(), "router-2".into());
        let c = load_str(BASE, "t", &env).unwrap();
        assert_eq!(c.scale.replica_id.as_deref(), Some("router-2"));
        assert!(c.scale.enabled);
    }
}
