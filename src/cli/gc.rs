//! `ohrun gc [--dry-run] [--older-than D] [--json]`: removes what ohrun processes that are gone left
//! behind (the work is in `gc.rs`); exit 5 when something could not be removed or checked, or (`--dry-run`)
//! is left to remove.

use super::GcArgs;
use crate::exit_code::ExitCode;
use crate::gc::{Item, Options, State};
use std::fmt::Write;

pub fn run(args: &GcArgs, quiet: bool) -> i32 {
    let runtime = match super::runtime() {
        Ok(r) => r,
        Err(code) => return code,
    };
    let opts = Options {
        dry_run: args.dry_run,
        older_than: args.older_than.map(Into::into),
        dir: crate::ledger::dir(),
        procfs: crate::liveness::Procfs::system(),
        force_dead: args.force_dead.clone(),
    };
    let _lock = match (!args.dry_run).then(|| lock(&opts.dir)).transpose() {
        Ok(lock) => lock,
        Err(e) => {
            eprintln!("error: cannot lock the sandbox ledger in {}: {e}", opts.dir.display());
            return ExitCode::INFRA;
        }
    };
    let outcome = runtime.block_on(crate::gc::collect(&opts));
    let text = if args.json {
        serde_json::to_string_pretty(&outcome).unwrap_or_default() + "\n"
    } else {
        human(&outcome.items, args.dry_run, quiet)
    };
    let text = crate::report::redact::apply(&text);
    if args.json {
        print!("{text}");
    } else {
        eprint!("{text}");
    }
    if outcome.left_behind() { ExitCode::LEFT_BEHIND } else { ExitCode::SUCCESS }
}

/// One gc at a time per ledger directory (it rewrites the files of processes that are gone).
fn lock(dir: &std::path::Path) -> std::io::Result<std::fs::File> {
    crate::report::writer::create_dir(dir)?;
    let file = std::fs::File::create(dir.join(".gc.lock"))?;
    file.lock()?;
    Ok(file)
}

fn human(items: &[Item], dry_run: bool, quiet: bool) -> String {
    let mut out = String::new();
    for item in items.iter().filter(|i| !quiet || i.state == State::Failed) {
        let verb = match item.state {
            State::Removed => "removed",
            State::Left => "left behind",
            State::Failed => "error: could not remove",
            State::Gone => "already gone",
            State::InUse => "in use",
            State::Kept => "kept on purpose",
            State::Younger => "too recent",
            State::Unidentified => "unidentified",
        };
        let id = item.id.as_deref().map(|i| format!(" {}", &i[..i.len().min(12)])).unwrap_or_default();
        let detail = if item.detail.is_empty() { String::new() } else { format!(": {}", item.detail) };
        let _ = writeln!(out, "{verb}: {}{id} of run {}{detail}", item.backend, item.run_id);
    }
    if quiet {
        return out;
    }
    let count = |s: State| items.iter().filter(|i| i.state == s).count();
    let summary = if dry_run {
        format!("{} left behind (run `ohrun gc` to remove)", count(State::Left))
    } else {
        format!("{} removed, {} could not be removed", count(State::Removed), count(State::Failed))
    };
    let _ = writeln!(
        out,
        "gc: {summary}; {} already gone, {} in use by a running ohrun, {} kept on purpose",
        count(State::Gone),
        count(State::InUse),
        count(State::Kept)
    );
    out
}
