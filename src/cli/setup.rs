//! `ohrun setup local`: install the managed agent-server now rather than on first use.

use crate::backend::install;
use crate::exit_code::ExitCode;

pub fn run_local() -> i32 {
    match install::ensure_installed(&|line| eprintln!("  {line}")) {
        Ok(cmd) => {
            eprintln!("agent-server {} is ready: {}", install::AGENT_SERVER_VERSION, cmd.join(" "));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {}\n  hint: {}", e.message, e.hint);
            ExitCode::INFRA
        }
    }
}
