//! Rebuild when a migration is added or edited: `sqlx::migrate!` embeds the
//! `migrations/` folders at compile time (as sqlx's documentation advises).
fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
