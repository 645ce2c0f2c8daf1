//! `ohrun setup local|docker`: prepare a sandbox kind now rather than on first use. `local` installs the
//! managed agent-server venv; `docker` builds the default agent-server image. Both are locked, so several
//! ohrun processes never do it twice, and both can be interrupted (nothing half-done is ever used).

use crate::backend::{docker, image, install};
use crate::cancel::Cancel;
use crate::exit_code::ExitCode;
use crate::runner::signal::Signals;

pub fn run(what: &str) -> i32 {
    let runtime = match super::runtime() {
        Ok(r) => r,
        Err(code) => return code,
    };
    let progress = |line: &str| eprintln!("  {}", crate::report::redact::apply(line));
    let result = runtime.block_on(async {
        let mut cancel: Cancel = Signals::install().cancel();
        match what {
            "local" => install::ensure_installed(&progress, &mut cancel)
                .await
                .map(|cmd| format!("agent-server {} is ready: {}", install::AGENT_SERVER_VERSION, cmd.join(" "))),
            _ => {
                let engine = docker::connect().await?;
                image::ensure(&engine, image::DEFAULT_IMAGE, image::HostPackages::MayInstall, &progress, &mut cancel)
                    .await?;
                Ok(format!("image {} is ready", image::DEFAULT_IMAGE))
            }
        }
    });
    match result {
        Ok(line) => {
            eprintln!("{line}");
            ExitCode::SUCCESS
        }
        Err(e) if e.kind.is_interrupted() => {
            eprintln!("interrupted; nothing half-done is kept");
            ExitCode::INTERRUPTED
        }
        Err(e) => {
            eprintln!("error: {}", e.message);
            if let Some(tail) = &e.log_tail {
                eprintln!("{tail}");
            }
            if let Some(h) = &e.hint {
                eprintln!("  hint: {h}");
            }
            ExitCode::INFRA
        }
    }
}
