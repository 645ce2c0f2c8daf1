//! One integration-test binary: every test drives the real `ohrun` executable.

mod docker;
mod emulators;
mod golden;
mod jobs;
mod parser_fuzz;
mod provider_apis;
mod run_local;
mod support;
