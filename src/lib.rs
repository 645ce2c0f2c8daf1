//! ohrun runs OpenHands agent jobs declared in YAML. See README.md for the manual and
//! docs/architecture.md for how the pieces fit.

pub mod agent;
pub mod artifacts;
pub mod backend;
pub mod cancel;
pub mod cli;
pub mod compare;
pub mod console;
pub mod deliver;
pub mod diagnostic;
pub mod error;
pub mod exit_code;
pub mod fd_limit;
pub mod gc;
pub mod job;
pub mod ledger;
pub mod liveness;
pub mod money;
pub mod net;
pub mod paths;
pub mod rehearse;
pub mod repo;
pub mod report;
pub mod runner;
pub mod schema;
pub mod settings;
pub mod stats;
pub mod style;
pub mod text;
pub mod verify;
