//! Simulated providers and traffic, for `switchboard demo`, tests and
//! benches: the embedded routing dataset, an OpenAI-compatible fake upstream
//! driven by it, a traffic generator that sends its prompts and feedback,
//! the tallies and the terminal report.

pub mod answer;
pub mod dataset;
pub mod demo;
pub mod replay;
pub mod report;
pub mod stats;
pub mod traffic;
pub mod upstream;
