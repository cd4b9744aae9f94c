//! Configuration: the TOML schema, loading with environment overrides, and
//! validation whose messages name the file, the key and the reason.
//!
//! Loaded once and validated before a socket is bound; nothing here does I/O
//! beyond reading the file it is given.

mod load;
mod schema;
mod validate;

pub use load::{load, load_str, ConfigError, Env};
pub use schema::*;
