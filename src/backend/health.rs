//! Waiting for an agent-server that ohrun started (a local process, a container) to answer `/health`,
//! failing fast when it dies first, when the deadline passes, or when ohrun is cancelled.

use super::{Error, ErrorKind};
use crate::agent::http::AgentClient;
use crate::cancel::Cancel;
use std::time::{Duration, Instant};

/// How often `/health` is asked while a server starts: each poll costs a refused connection (and for
/// docker an inspect), and the server's readiness is seen at most this late.
const POLL: Duration = Duration::from_millis(100);

/// Polls until healthy. `died` is asked before each poll and returns the error to report when the server
/// is gone; `on_timeout` builds the error when `deadline` passes (with the server's log, say).
pub async fn wait<D, DF, T, TF>(
    client: &AgentClient,
    deadline: Instant,
    cancel: &mut Cancel,
    mut died: D,
    on_timeout: T,
) -> Result<(), Error>
where
    D: FnMut() -> DF,
    DF: std::future::Future<Output = Option<Error>>,
    T: FnOnce() -> TF,
    TF: std::future::Future<Output = Error>,
{
    loop {
        if let Some(e) = died().await {
            return Err(e);
        }
        if client.healthy().await {
            return Ok(());
        }
        if Instant::now() >= deadline {
            let mut e = on_timeout().await;
            e.kind = ErrorKind::NotReady;
            return Err(e);
        }
        if cancel.sleep(POLL).await {
            return Err(Error::interrupted());
        }
    }
}
