//! A small HTTP/WebSocket fault proxy on loopback, in front of a real agent-server: it passes requests
//! through one at a time (each on its own upstream connection), records them, and injects faults on
//! demand — a canned answer instead of the server's, a request whose answer is lost after the server
//! acted on it, event sockets cut now or right after a given text went by, new sockets refused, frames of
//! its own put into an event socket between two of the server's.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// What to do with the next `times` requests whose request line (`GET /path?query HTTP/1.1`) matches.
#[derive(Clone, Debug)]
pub struct Rule {
    pub matches: fn(&str) -> bool,
    pub times: u32,
    pub action: Action,
}

#[derive(Clone, Debug)]
pub enum Action {
    /// Answer with this status and JSON body; the server never sees the request.
    Respond(u16, String),
    /// The same, with a `Retry-After: SECONDS` header.
    RespondRetryAfter(u16, u64, String),
    /// Let the server act on it, then close the client's connection without an answer.
    LoseAnswer,
    /// Pass it on after this long.
    Delay(std::time::Duration),
}

/// One event socket passed through: both its ends, and whether a server frame has gone through it yet.
struct Tunnel {
    id: usize,
    ends: [TcpStream; 2],
    talking: bool,
}

#[derive(Default)]
struct Shared {
    rules: Mutex<Vec<Rule>>,
    /// Request lines seen ("POST /api/...").
    requests: Mutex<Vec<String>>,
    /// Every request as sent: its head (line and headers) and body.
    traffic: Mutex<Vec<String>>,
    /// Open socket tunnels, for `cut`.
    tunnels: Mutex<Vec<Tunnel>>,
    next_tunnel: AtomicUsize,
    refuse_sockets: AtomicBool,
    /// A frozen server: nothing is answered (connections are closed at once) until unblocked.
    blocked: AtomicBool,
    /// Cut every socket tunnel right after the server sent this text (once), then add these rules.
    cut_after: Mutex<Option<String>>,
    after_cut: Mutex<Vec<Rule>>,
    cuts: Mutex<u32>,
    /// Once the server sent this text, put these frames into the socket at the next message boundary.
    inject_after: Mutex<Option<(String, Vec<Vec<u8>>)>>,
    injections: Mutex<u32>,
}

/// WebSocket opcodes, for [`server_frame`].
pub const TEXT: u8 = 1;
pub const BINARY: u8 = 2;

/// One whole (FIN) server-to-client WebSocket frame: unmasked, as servers send them.
pub fn server_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![0x80 | opcode];
    match payload.len() {
        n if n < 126 => f.push(n as u8),
        n if n <= 0xffff => {
            f.push(126);
            f.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            f.push(127);
            f.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    f.extend_from_slice(payload);
    f
}

/// The length of the whole frame at the start of `p`, once all of it is there (RFC 6455 §5.2).
fn frame_len(p: &[u8]) -> Option<usize> {
    let b1 = *p.get(1)?;
    let (len, header) = match b1 & 0x7f {
        126 => (u16::from_be_bytes(p.get(2..4)?.try_into().ok()?) as usize, 4),
        127 => (u64::from_be_bytes(p.get(2..10)?.try_into().ok()?) as usize, 10),
        n => (n as usize, 2),
    };
    let mask = if b1 & 0x80 != 0 { 4 } else { 0 };
    let total = header + mask + len;
    (p.len() >= total).then_some(total)
}

pub struct Proxy {
    pub port: u16,
    shared: Arc<Shared>,
}

impl Proxy {
    /// Proxies to `upstream` (`host:port`).
    pub fn start(upstream: &str) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let shared = Arc::new(Shared::default());
        let (s, up) = (shared.clone(), upstream.to_string());
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let (s, up) = (s.clone(), up.clone());
                std::thread::spawn(move || serve(client, &up, &s));
            }
        });
        Proxy { port, shared }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn add_rule(&self, rule: Rule) {
        self.shared.rules.lock().unwrap().push(rule);
    }

    /// Request lines seen so far that contain `text`.
    /// The requests (head and body, as sent) that contain `text` anywhere.
    pub fn traffic_containing(&self, text: &str) -> Vec<String> {
        self.shared.traffic.lock().unwrap().iter().filter(|r| r.contains(text)).cloned().collect()
    }

    pub fn requests_matching(&self, text: &str) -> Vec<String> {
        self.shared.requests.lock().unwrap().iter().filter(|r| r.contains(text)).cloned().collect()
    }

    /// Cuts every open event socket now (new ones are still accepted unless refused).
    pub fn cut(&self) {
        cut_all(&self.shared);
    }

    /// A frozen server: close every connection without an answer, and cut the sockets (or thaw it).
    pub fn set_blocked(&self, blocked: bool) {
        self.shared.blocked.store(blocked, Ordering::SeqCst);
        if blocked {
            cut_all(&self.shared);
        }
    }

    /// From now on, refuse new event sockets (or accept them again).
    pub fn refuse_sockets(&self, refuse: bool) {
        self.shared.refuse_sockets.store(refuse, Ordering::SeqCst);
    }

    /// Cuts the sockets as soon as the server has sent `text` through them, and from then on applies `rules`.
    pub fn cut_after(&self, text: &str, rules: Vec<Rule>) {
        *self.shared.after_cut.lock().unwrap() = rules;
        *self.shared.cut_after.lock().unwrap() = Some(text.to_string());
    }

    /// Event sockets open through the proxy now that the server has talked on (a frame after the
    /// handshake went through): one cut before that is a failed connect to the client, not a lost socket.
    pub fn open_sockets(&self) -> usize {
        self.shared.tunnels.lock().unwrap().iter().filter(|t| t.talking).count()
    }

    pub fn cuts(&self) -> u32 {
        *self.shared.cuts.lock().unwrap()
    }

    /// Once the server has sent `text` through an event socket, puts `frames` (see [`server_frame`]) into
    /// it right after the frame that completed the server's message, before the server's next frame.
    pub fn inject_after(&self, text: &str, frames: Vec<Vec<u8>>) {
        *self.shared.inject_after.lock().unwrap() = Some((text.to_string(), frames));
    }

    /// How many times frames were injected.
    pub fn injections(&self) -> u32 {
        *self.shared.injections.lock().unwrap()
    }
}

fn cut_all(shared: &Shared) {
    let mut tunnels = shared.tunnels.lock().unwrap();
    if !tunnels.is_empty() {
        *shared.cuts.lock().unwrap() += 1;
    }
    for s in tunnels.drain(..).flat_map(|t| t.ends) {
        let _ = s.shutdown(Shutdown::Both);
    }
}

/// One request: its head (request line and headers, as received) and body.
struct Request {
    head: String,
    body: Vec<u8>,
}

impl Request {
    fn line(&self) -> &str {
        self.head.lines().next().unwrap_or_default()
    }

    fn is_upgrade(&self) -> bool {
        self.head.to_ascii_lowercase().contains("upgrade: websocket")
    }
}

fn read_request(reader: &mut BufReader<TcpStream>) -> Option<Request> {
    let mut head = String::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).ok()? == 0 {
            return None;
        }
        head.push_str(&line);
        if line == "\r\n" {
            break;
        }
    }
    let length = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse::<usize>().unwrap_or(0))
        })
        .unwrap_or(0);
    let mut body = vec![0; length];
    reader.read_exact(&mut body).ok()?;
    Some(Request { head, body })
}

fn serve(client: TcpStream, upstream: &str, shared: &Arc<Shared>) {
    let mut reader = BufReader::new(client.try_clone().unwrap());
    let mut client = client;
    while let Some(req) = read_request(&mut reader) {
        shared.requests.lock().unwrap().push(req.line().split(" HTTP/").next().unwrap_or_default().to_string());
        shared.traffic.lock().unwrap().push(format!("{}\n{}", req.head, String::from_utf8_lossy(&req.body)));
        if shared.blocked.load(Ordering::SeqCst) {
            let _ = client.shutdown(Shutdown::Both);
            return;
        }
        if req.is_upgrade() {
            if shared.refuse_sockets.load(Ordering::SeqCst) {
                let _ = client
                    .write_all(b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
                return;
            }
            tunnel(client, reader, &req, upstream, shared);
            return;
        }
        let rule = take_rule(shared, req.line());
        match rule.map(|r| r.action) {
            Some(action @ (Action::Respond(..) | Action::RespondRetryAfter(..))) => {
                let (status, retry_after, body) = match action {
                    Action::RespondRetryAfter(status, secs, body) => (status, format!("retry-after: {secs}\r\n"), body),
                    Action::Respond(status, body) => (status, String::new(), body),
                    _ => unreachable!("matched above"),
                };
                let resp = format!(
                    "HTTP/1.1 {status} Injected\r\ncontent-type: application/json\r\n{retry_after}content-length: {}\r\n\r\n{body}",
                    body.len()
                );
                if client.write_all(resp.as_bytes()).is_err() {
                    return;
                }
            }
            Some(Action::Delay(d)) => {
                std::thread::sleep(d);
                match forward(&req, upstream) {
                    Some(resp) if client.write_all(&resp).is_ok() => {}
                    _ => return,
                }
            }
            Some(Action::LoseAnswer) => {
                let _ = forward(&req, upstream);
                let _ = client.shutdown(Shutdown::Both);
                return;
            }
            None => match forward(&req, upstream) {
                Some(resp) if client.write_all(&resp).is_ok() => {}
                _ => return,
            },
        }
    }
}

fn take_rule(shared: &Shared, line: &str) -> Option<Rule> {
    let mut rules = shared.rules.lock().unwrap();
    let i = rules.iter().position(|r| r.times > 0 && (r.matches)(line))?;
    rules[i].times -= 1;
    Some(rules[i].clone())
}

/// Sends one request upstream on a fresh connection and returns the whole response (the server closes
/// the connection after it: `connection: close`, which the client sees too).
fn forward(req: &Request, upstream: &str) -> Option<Vec<u8>> {
    let mut up = TcpStream::connect(upstream).ok()?;
    let head: String = req
        .head
        .lines()
        .filter(|l| !l.to_ascii_lowercase().starts_with("connection:") && !l.is_empty())
        .map(|l| format!("{l}\r\n"))
        .collect();
    up.write_all(format!("{head}connection: close\r\n\r\n").as_bytes()).ok()?;
    up.write_all(&req.body).ok()?;
    let mut resp = Vec::new();
    up.read_to_end(&mut resp).ok()?;
    Some(resp)
}

/// Passes an event socket through both ways, watching what the server sends for `cut_after`.
fn tunnel(client: TcpStream, reader: BufReader<TcpStream>, req: &Request, upstream: &str, shared: &Arc<Shared>) {
    let Ok(mut up) = TcpStream::connect(upstream) else { return };
    if up.write_all(req.head.as_bytes()).and_then(|()| up.write_all(&req.body)).is_err() {
        return;
    }
    let id = shared.next_tunnel.fetch_add(1, Ordering::SeqCst);
    let ends = [client.try_clone().unwrap(), up.try_clone().unwrap()];
    shared.tunnels.lock().unwrap().push(Tunnel { id, ends, talking: false });
    // Bytes the reader already buffered from the client go first.
    let buffered = reader.buffer().to_vec();
    let _ = up.write_all(&buffered);
    let (mut up_read, mut client_write) = (up.try_clone().unwrap(), client.try_clone().unwrap());
    let s = shared.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 16384];
        let mut seen: Vec<u8> = Vec::new();
        // The server's bytes are passed on in whole units — the handshake's head, then whole frames — so
        // injected frames land between two of the server's. A refused upgrade is passed on as it comes.
        let mut pending: Vec<u8> = Vec::new();
        let (mut handshake, mut frames, mut talking) = (true, false, false);
        // Inside a fragmented message nothing may go in between (only control frames).
        let mut in_message = false;
        'read: loop {
            let n = match up_read.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            pending.extend_from_slice(&buf[..n]);
            loop {
                let unit = if handshake {
                    pending.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4)
                } else if frames {
                    frame_len(&pending)
                } else {
                    Some(pending.len()).filter(|&n| n > 0)
                };
                let Some(len) = unit else { break };
                let unit: Vec<u8> = pending.drain(..len).collect();
                if handshake {
                    handshake = false;
                    frames = unit.starts_with(b"HTTP/1.1 101");
                } else if frames && unit[0] & 0x0f < 8 {
                    in_message = unit[0] & 0x80 == 0;
                }
                if client_write.write_all(&unit).is_err() {
                    break 'read;
                }
                // The first frame after the handshake: the socket is open for the client too.
                if frames && !talking && !unit.starts_with(b"HTTP/") {
                    talking = true;
                    mark_talking(&s, id);
                }
                seen.extend_from_slice(&unit);
                if frames && !in_message && !inject(&s, &seen, &mut client_write) {
                    break 'read;
                }
                let trigger = s.cut_after.lock().unwrap().clone();
                if let Some(text) = trigger
                    && seen.windows(text.len()).any(|w| w == text.as_bytes())
                {
                    *s.cut_after.lock().unwrap() = None;
                    let after: Vec<Rule> = std::mem::take(&mut *s.after_cut.lock().unwrap());
                    s.rules.lock().unwrap().extend(after);
                    cut_all(&s);
                    break 'read;
                }
                if seen.len() > 1 << 20 {
                    seen.drain(..seen.len() - 4096);
                }
            }
        }
        let _ = client_write.shutdown(Shutdown::Both);
    });
    let mut client_read = reader.into_inner();
    let _ = std::io::copy(&mut client_read, &mut up);
    let _ = up.shutdown(Shutdown::Both);
}

fn mark_talking(shared: &Shared, id: usize) {
    if let Some(t) = shared.tunnels.lock().unwrap().iter_mut().find(|t| t.id == id) {
        t.talking = true;
    }
}

/// Writes the frames to inject once `seen` holds their trigger; false when the client is gone.
fn inject(shared: &Shared, seen: &[u8], client: &mut TcpStream) -> bool {
    let mut pending = shared.inject_after.lock().unwrap();
    let Some((text, _)) = pending.as_ref() else { return true };
    if !seen.windows(text.len()).any(|w| w == text.as_bytes()) {
        return true;
    }
    let (_, frames) = pending.take().unwrap();
    *shared.injections.lock().unwrap() += 1;
    frames.iter().all(|f| client.write_all(f).is_ok())
}
