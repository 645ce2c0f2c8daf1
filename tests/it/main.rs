//! One integration-test binary: every test drives the real `ohrun` executable.

mod docker;
mod emulators;
mod golden;
mod jobs;
mod parser_fuzz;
mod provider_apis;
mod rehearse;
mod run_local;
mod support;
