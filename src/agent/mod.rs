//! Talking to an agent-server: REST (`http`), the event WebSocket (`events`), and the session that runs
//! setup commands and steps with the completion rule (`session`).

pub mod events;
pub mod http;
pub mod session;
