//! `ohrun compare BASE NEW`: the comparison as a table on stdout (or `--json`), compare.html in `--out`
//! (default NEW's directory), prose on stderr; exit 1 only when `--fail-on` says so.

use super::CompareArgs;
use crate::compare::{self, Comparison, Error};
use crate::exit_code::ExitCode;
use crate::report::writer::create_dir;
use std::io::Write;

pub fn run(args: &CompareArgs, quiet: bool) -> i32 {
    match compare_and_write(args) {
        Ok(done) => {
            print(args, &done, quiet);
            ExitCode::for_comparison(done.0.gate.failed)
        }
        Err(e) => {
            eprintln!("error: {e}");
            eprintln!("  hint: {}", e.hint());
            ExitCode::for_compare_error(&e)
        }
    }
}

fn compare_and_write(args: &CompareArgs) -> Result<(Comparison, std::path::PathBuf), Error> {
    let base = compare::load(&args.base)?;
    let new = compare::load(&args.new)?;
    let c = compare::compare((&args.base, &base), (&args.new, &new), args.alpha, args.fail_on)?;
    let out = args.out.clone().unwrap_or_else(|| compare::html::batch_dir(&args.new).to_path_buf());
    let write_error = |source| Error::Write { path: out.clone(), source };
    create_dir(&out).map_err(write_error)?;
    let page = compare::html::write(&out, &c, &args.base, &args.new).map_err(write_error)?;
    Ok((c, page))
}

fn print(args: &CompareArgs, (c, page): &(Comparison, std::path::PathBuf), quiet: bool) {
    let mut stdout = std::io::stdout().lock();
    if args.json {
        let _ = serde_json::to_writer_pretty(&mut stdout, c);
        let _ = writeln!(stdout);
    } else if !quiet {
        let _ = stdout.write_all(compare::table::render(c).as_bytes());
    }
    let _ = stdout.flush();
    if c.counts.regressed + c.counts.fixed + c.counts.both_passed + c.counts.both_failed == 0 {
        eprintln!("warning: no pair is comparable: no run id (and trial) passed or failed in both batches");
    }
    if quiet {
        return;
    }
    eprintln!("wrote {}", page.display());
    if let Some(line) = compare::table::gate_line(c) {
        eprintln!("{line}");
    }
}
