//! `kind: remote`: an agent-server that already runs (the SDK's RemoteWorkspace). Nothing is created or
//! released; provisioning checks that it answers and that the session key is accepted, so a wrong key is
//! reported before anything else, with the variable it came from.

use super::{Backend, BoxFuture, Context, Error, Probe, Ready, Record, Released, SandboxProbe};
use crate::agent::http::AgentClient;
use crate::cancel::Cancel;
use std::time::Duration;

#[derive(Clone, Debug)]
pub struct RemoteSettings {
    pub url: String,
    pub session_key: Option<String>,
    /// The variable the key came from, for hints.
    pub key_var: Option<String>,
    pub working_dir: String,
    pub api_timeout: Duration,
}

pub struct Remote {
    settings: RemoteSettings,
    client: Option<AgentClient>,
}

/// `/health` answers within three tries a second apart: a server that thousands of runs of one batch
/// reach at once answers some of them late, which is not a server that is down.
async fn healthy_soon(client: &AgentClient) -> bool {
    let policy = crate::net::RetryPolicy::every(3, std::time::Duration::from_secs(1));
    policy.first_some(|| async { client.healthy().await.then_some(()) }).await.is_some()
}

impl Remote {
    pub fn new(settings: RemoteSettings) -> Remote {
        Remote { settings, client: None }
    }

    async fn attach(&mut self, cancel: Cancel) -> Result<Ready, Error> {
        let s = &self.settings;
        let client = AgentClient::new(&s.url, s.session_key.clone(), s.api_timeout).with_cancel(cancel);
        if !healthy_soon(&client).await {
            return Err(Error::new(
                super::ErrorKind::Transient,
                format!("the agent-server at {} does not answer GET /health", s.url),
            )
            .hint("check that it runs and that `sandbox.url` is right"));
        }
        let server_info = client.server_info().await?;
        // /server_info needs no key: ask something that does, so a wrong key is caught here.
        if let Err(e) = client.conversation_count().await {
            let refused = matches!(e.status, Some(401 | 403));
            let mut err = Error::from(e);
            if refused {
                err = err.hint(match &s.key_var {
                    Some(var) => {
                        format!("the session key in {var} (`sandbox.session_key`) is not accepted by {}", s.url)
                    }
                    None => "the server wants a session key: set `sandbox.session_key: ${VAR}`".to_string(),
                });
            }
            return Err(err);
        }
        self.client = Some(client.clone());
        Ok(Ready { client, working_dir: s.working_dir.clone(), server_info })
    }
}

impl Backend for Remote {
    fn provision<'a>(&'a mut self, ctx: &'a Context<'a>) -> BoxFuture<'a, Result<Ready, Error>> {
        Box::pin(self.attach(ctx.cancel.clone()))
    }

    fn release(&mut self, _keep: bool) -> BoxFuture<'_, Released> {
        Box::pin(async { Released::Attached })
    }

    fn attach_hint(&self, working_dir: &str) -> String {
        format!("agent-server at {} (working dir {working_dir})", self.settings.url)
    }

    fn record(&self) -> Record {
        Record::default()
    }
}

impl SandboxProbe for Remote {
    fn probe(&self) -> BoxFuture<'_, Probe> {
        Box::pin(async { Probe::Alive })
    }
}
