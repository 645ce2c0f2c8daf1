//! One integration-test binary: every test drives the real `ohrun` executable.

mod batch;
mod budget;
mod checkpoints;
mod ci_examples;
mod diffs;
mod docker;
mod emulators;
mod faults;
mod gc;
mod golden;
mod job_files;
mod jobs;
mod junit;
mod leaks;
mod parser_fuzz;
mod protocol;
mod provider_apis;
mod proxy;
mod rehearse;
mod run_local;
mod secrets;
mod server;
mod share;
mod step_summary;
mod support;
mod view;
