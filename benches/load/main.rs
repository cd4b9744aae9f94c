//! The gateway load harness (`cargo bench --bench load`; docs/performance.md).
//!
//! One binary, several roles: without a role it is the driver, which starts
//! itself again as the mock upstream (`mock`), the zero-work proxy (`proxy`)
//! and the load generator (`loadgen`), each in its own pinned process, next to
//! switchboard and LiteLLM, and prints the comparison. Exits non-zero when a
//! side cannot run, never because a number is slow.

mod driver;
mod loadgen;
mod mock;
mod procs;
mod proxy;
mod report;
mod sides;

use std::process::ExitCode;

use clap::Parser;

#[derive(Parser)]
#[command(name = "load", about = "switchboard gateway load harness")]
enum Role {
    /// Run everything and print the report (the default).
    Run(driver::RunArgs),
    /// The mock OpenAI upstream.
    Mock(mock::MockArgs),
    /// The zero-work pass-through proxy.
    Proxy(proxy::ProxyArgs),
    /// One load generator run.
    Loadgen(loadgen::LoadArgs),
}

fn main() -> ExitCode {
    // `cargo bench` appends `--bench`; a missing role means `run`.
    let mut args: Vec<String> = std::env::args().filter(|a| a != "--bench").collect();
    let roles = ["run", "mock", "proxy", "loadgen", "help", "--help", "-h"];
    if args.get(1).is_none_or(|a| !roles.contains(&a.as_str())) {
        args.insert(1, "run".into());
    }
    let result = match Role::parse_from(args) {
        Role::Run(a) => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(anyhow::Error::from)
            .and_then(|rt| rt.block_on(driver::run(a))),
        Role::Mock(a) => mock::run(a),
        Role::Proxy(a) => proxy::run(a),
        Role::Loadgen(a) => loadgen::run(a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("load: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
