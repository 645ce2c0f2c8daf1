//! `ohrun rehearse [SCRIPT]`: serve the scripted OpenAI-compatible endpoint on loopback until Ctrl-C, for
//! jobs whose `llm.base_url` points at it or for any other client (an SDK script, curl).

use super::RehearseArgs;
use crate::exit_code::ExitCode;
use crate::rehearse::Rehearsal;
use crate::rehearse::script::Script;

pub fn run(args: &RehearseArgs) -> i32 {
    let script = match &args.script {
        Some(path) => match super::run::load_script(path) {
            Ok(s) => s,
            Err(code) => return code,
        },
        None => Script::default(),
    };
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::INFRA;
        }
    };
    runtime.block_on(async {
        let rehearsal = match Rehearsal::start_on(script, std::net::Ipv4Addr::LOCALHOST.into(), args.port).await {
            Ok(r) => r,
            Err(e) => {
                eprintln!("error: cannot listen on 127.0.0.1:{}: {e}", args.port);
                return ExitCode::INFRA;
            }
        };
        // The URL on stdout (for scripts), the rest on stderr.
        println!("{}", rehearsal.base_url("127.0.0.1"));
        eprintln!(
            "serving the rehearsal LLM; set base_url to the URL above and model to `{}`; Ctrl-C stops",
            crate::rehearse::MODEL
        );
        let _ = tokio::signal::ctrl_c().await;
        let calls = rehearsal.calls();
        eprintln!(
            "answered {} agent calls ({} beyond the script) and {} side calls",
            calls.scripted, calls.beyond_script, calls.side
        );
        ExitCode::SUCCESS
    })
}
