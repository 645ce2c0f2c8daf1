//! The conversation's event WebSocket (`/sockets/events/{id}`, first-frame auth). A background task owns
//! the socket and reconnects with backoff when it drops; the session is told about each reconnect so it
//! can fill the gap from `events/search` (frames sent while disconnected are lost). Close codes 4001
//! (auth) and 4004 (no such conversation) are final. Every frame is stamped with the moment the task read
//! it off the socket, and the first frame of each connection is marked as the subscribe-time snapshot:
//! the session needs both to tell the end of a run from an old state. A frame ohrun cannot read (not
//! JSON, or binary) is passed on as an `ohrun.RawFrame` record for the event log, never dropped or fatal.

use super::http::AgentClient;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

#[derive(Debug)]
pub enum WsEvent {
    /// One server event, as sent. Boxed: the channel's slots are as large as its largest message, and a
    /// batch holds a channel per run.
    Frame(Box<Frame>),
    /// The socket dropped; ohrun is reconnecting (frames meanwhile are lost).
    Disconnected,
    /// The socket dropped and is back: frames in between were lost.
    Reconnected,
    /// The socket is gone for good.
    Closed(String),
}

#[derive(Debug)]
pub struct Frame {
    pub event: Value,
    /// When the reader task read it off the socket.
    pub received: Instant,
    /// The first frame of a (re)connection: the `full_state` snapshot of the state at subscription.
    pub snapshot: bool,
}

pub struct EventSocket {
    rx: mpsc::UnboundedReceiver<WsEvent>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for EventSocket {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// `http(s)://host/prefix` → `ws(s)://host/prefix/sockets/events/{cid}`, keeping any path prefix.
pub fn socket_url(base: &str, cid: &str) -> String {
    let ws = if let Some(rest) = base.strip_prefix("https://") {
        format!("wss://{rest}")
    } else if let Some(rest) = base.strip_prefix("http://") {
        format!("ws://{rest}")
    } else {
        base.to_string()
    };
    // The id is the server's: one path segment, encoded, so it can never add a segment or a query.
    let cid = if cid.chars().all(|c| c == '.') { format!("%{cid}") } else { cid.to_string() };
    let cid = percent_encoding::utf8_percent_encode(&cid, SEGMENT);
    format!("{}/sockets/events/{cid}", ws.trim_end_matches('/'))
}

/// What a path segment cannot hold as it is.
const SEGMENT: &percent_encoding::AsciiSet =
    &percent_encoding::NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

impl EventSocket {
    /// Connects and waits (up to `ready_timeout`) for the server's first frame, the subscribe-time
    /// `full_state` snapshot, which is returned separately: it describes the past, not this run.
    pub async fn connect(
        client: &AgentClient,
        cid: &str,
        ready_timeout: Duration,
    ) -> Result<(EventSocket, Value), String> {
        let url = socket_url(client.base_url(), cid);
        let (tx, mut rx) = mpsc::unbounded_channel();
        let (first_tx, first_rx) = tokio::sync::oneshot::channel::<Result<(), String>>();
        let task = tokio::spawn(socket_loop(url, client.clone(), tx, first_tx));
        // Owned from here: an early return aborts the task.
        let mut socket = EventSocket { rx: mpsc::unbounded_channel().1, task };
        match tokio::time::timeout(ready_timeout, first_rx).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => return Err(e),
            Ok(Err(_)) => return Err("the event socket task ended".into()),
            Err(_) => return Err(format!("no answer on the event socket within {}s", ready_timeout.as_secs())),
        }
        let first = match tokio::time::timeout(ready_timeout, rx.recv()).await {
            Ok(Some(WsEvent::Frame(f))) => f.event,
            Ok(Some(other)) => return Err(format!("unexpected first socket message: {other:?}")),
            Ok(None) => return Err("the event socket closed before its first frame".into()),
            Err(_) => return Err(format!("no state snapshot on the event socket within {}s", ready_timeout.as_secs())),
        };
        socket.rx = rx;
        Ok((socket, first))
    }

    /// The next socket event; `None` once the task has ended and everything was read.
    pub async fn recv(&mut self) -> Option<WsEvent> {
        self.rx.recv().await
    }

    /// A socket event already received, without waiting.
    pub fn try_recv(&mut self) -> Option<WsEvent> {
        self.rx.try_recv().ok()
    }
}

/// The `kind` of the record a frame ohrun could not read becomes in the event log.
pub const RAW_FRAME: &str = "ohrun.RawFrame";

/// A text frame as an event: the JSON the server sent, whatever its kind (kept as sent, known or not), or,
/// when it is not JSON, a raw record of it. Nothing a server sends ends a step or goes unlogged.
pub fn decode_text(text: &str) -> Result<Value, Value> {
    serde_json::from_str(text).map_err(|e| raw_record("text", text.to_string(), format!("not JSON: {e}")))
}

/// A binary frame (the server sends only text) as a raw record, its bytes in base64: the redactor masks
/// secrets in base64 too.
pub fn decode_binary(bytes: &[u8]) -> Value {
    use base64::Engine;
    let data = base64::engine::general_purpose::STANDARD.encode(bytes);
    raw_record("binary", data, format!("a binary frame of {} bytes, not a JSON text frame", bytes.len()))
}

/// No `id` and no `timestamp`: a raw record is never deduplicated, nor moves where reconciles start
/// (`received_at` says when it came).
fn raw_record(frame: &str, raw: String, error: String) -> Value {
    let received_at = crate::report::writer::now_rfc3339();
    json!({"kind": RAW_FRAME, "frame": frame, "raw": raw, "error": error, "received_at": received_at})
}

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn open(url: &str, key: Option<&str>) -> Result<Ws, String> {
    // Small buffers: ohrun reads events (a few KB each; a larger frame grows the buffer to its size) and
    // writes one auth message, and a batch holds a socket per run — the 128 KiB defaults made each run
    // cost ~0.25 MB at 500 runs, 8 KiB still ~7 KB per run at 1,000 (heaptrack).
    let config = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
        .read_buffer_size(2 * 1024)
        .write_buffer_size(0);
    let (mut ws, _) = tokio_tungstenite::connect_async_with_config(url, Some(config), true)
        .await
        .map_err(|e| format!("cannot open {url}: {e}"))?;
    if let Some(k) = key {
        let auth = json!({"type": "auth", "session_api_key": k}).to_string();
        ws.send(Message::text(auth)).await.map_err(|e| format!("cannot authenticate on {url}: {e}"))?;
    }
    Ok(ws)
}

/// The event socket for the life of a conversation: connect (the first failure is the caller's),
/// forward every frame, reconnect with backoff after a drop and say so.
// Long on purpose: one loop over connect, read and reconnect, since each decides what the next does.
async fn socket_loop(
    url: String,
    client: AgentClient,
    tx: mpsc::UnboundedSender<WsEvent>,
    first: tokio::sync::oneshot::Sender<Result<(), String>>,
) {
    let mut first = Some(first);
    let policy = crate::net::RetryPolicy::EVENT_SOCKET;
    let mut failed = 0;
    loop {
        // The key is read on every attempt: a resumed sandbox may have a new one. Boxed: the handshake's
        // state is large and lives only while connecting, not inline in this task for its whole life.
        let mut ws = match Box::pin(open(&url, client.session_key().as_deref())).await {
            Ok(ws) => ws,
            Err(e) => {
                if let Some(f) = first.take() {
                    let _ = f.send(Err(e));
                    return;
                }
                failed += 1;
                let wait = policy.backoff(failed);
                tracing::debug!("event socket: {e}; retrying in {wait:?}");
                tokio::time::sleep(wait).await;
                continue;
            }
        };
        match first.take() {
            Some(f) => {
                let _ = f.send(Ok(()));
            }
            None => {
                tracing::info!("event socket reconnected");
                if tx.send(WsEvent::Reconnected).is_err() {
                    return;
                }
            }
        }
        failed = 0;
        let mut snapshot = true;
        while let Some(msg) = ws.next().await {
            let decoded = match msg {
                Ok(Message::Text(text)) => decode_text(&text),
                Ok(Message::Binary(bytes)) => Err(decode_binary(&bytes)),
                Ok(Message::Close(frame)) => {
                    if let Some(f) = &frame {
                        let code = u16::from(f.code);
                        if code == 4001 || code == 4004 {
                            let why = if code == 4001 { "authentication failed" } else { "conversation not found" };
                            let _ =
                                tx.send(WsEvent::Closed(format!("the server closed the event socket: {why} ({code})")));
                            return;
                        }
                        if f.code == CloseCode::Normal {
                            tracing::debug!("event socket closed normally");
                        }
                    }
                    break;
                }
                Ok(_) => continue,
                Err(e) => {
                    tracing::debug!("event socket error: {e}");
                    break;
                }
            };
            let frame = match decoded {
                Ok(event) => Frame { event, received: Instant::now(), snapshot: std::mem::take(&mut snapshot) },
                // Logged, never fatal; and not the snapshot, which is still to come.
                Err(raw) => {
                    tracing::warn!("event socket: {}; kept in the event log as {RAW_FRAME}", raw["error"]);
                    Frame { event: raw, received: Instant::now(), snapshot: false }
                }
            };
            if tx.send(WsEvent::Frame(Box::new(frame))).is_err() {
                return;
            }
        }
        if tx.send(WsEvent::Disconnected).is_err() {
            return;
        }
        tokio::time::sleep(policy.backoff(1)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_that_are_not_json_become_raw_records() {
        assert_eq!(decode_text(r#"{"kind": "NewKind", "id": "a"}"#).unwrap()["kind"], "NewKind");
        let raw = decode_text("not JSON").unwrap_err();
        assert_eq!((&raw["kind"], &raw["frame"], &raw["raw"]), (&json!(RAW_FRAME), &json!("text"), &json!("not JSON")));
        // Without these it can neither be deduplicated against nor move where reconciles start.
        assert!(raw.get("id").is_none() && raw.get("timestamp").is_none());
        assert_eq!(decode_binary(&[0, 255])["raw"], "AP8=");
    }
}
