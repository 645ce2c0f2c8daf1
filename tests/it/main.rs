//! One integration-test binary: every test drives the real `ohrun` executable.

mod docker;
mod golden;
mod jobs;
mod parser_fuzz;
mod run_local;
mod support;
