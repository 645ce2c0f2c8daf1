//! ohrun runs OpenHands agent jobs declared in YAML. See README.md for the manual and
//! docs/architecture.md for how the pieces fit.

pub mod cli;
pub mod diagnostic;
pub mod exit_code;
pub mod job;
pub mod schema;
pub mod style;
