//! JSON Schemas generated from the Rust types; `schemas/*.schema.json` are these, checked in.

use crate::job::model::JobSpec;

/// The schemas ohrun publishes, by the name `ohrun schema NAME` takes.
pub const NAMES: [&str; 5] = ["job", "report", "rehearsal", "summary", "compare"];

pub fn generate(name: &str) -> Option<String> {
    let schema = match name {
        "job" => schemars::schema_for!(JobSpec),
        "report" => schemars::schema_for!(crate::report::RunReport),
        "rehearsal" => schemars::schema_for!(crate::rehearse::script::Script),
        "summary" => schemars::schema_for!(crate::report::summary::Summary),
        "compare" => schemars::schema_for!(crate::compare::Comparison),
        _ => return None,
    };
    let mut text = serde_json::to_string_pretty(&schema).ok()?;
    text.push('\n');
    Some(text)
}
