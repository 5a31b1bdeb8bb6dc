//! The real `sigil serve` binary on 127.0.0.1, end to end: keys, a template published over HTTP,
//! guarded calls, the incident, its webhook, and a delivery that survives `kill -9`.

use std::collections::BTreeSet;
use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use host_runtime::signer::{LocalSigner, Signer};
use serde_json::{json, Value};

/// One HTTP/1.1 request over a fresh connection; the status and the JSON body.
pub fn http(addr: &str, method: &str, path: &str, token: Option<&str>, body: Option<&Value>) -> (u16, Value) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let body = body.map(Value::to_string).unwrap_or_default();
    let mut request = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n", body.len());
    if !body.is_empty() {
        request.push_str("Content-Type: application/json\r\n");
    }
    if let Some(token) = token {
        request.push_str(&format!("Authorization: Bearer {token}\r\n"));
    }
    request.push_str("\r\n");
    request.push_str(&body);
    stream.write_all(request.as_bytes()).unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).unwrap();
    let text = String::from_utf8_lossy(&response);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, serde_json::from_str(body).unwrap_or(Value::String(body.to_string())))
}

/// A webhook receiver on 127.0.0.1 that records every delivery's event id, and either answers
/// at once or holds the request without answering (a receiver that hangs).
pub struct Receiver {
    pub addr: String,
    pub hold: Arc<AtomicBool>,
    pub deliveries: Arc<Mutex<Vec<(String, Value)>>>,
}

impl Receiver {
    pub fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let hold = Arc::new(AtomicBool::new(false));
        let deliveries = Arc::new(Mutex::new(Vec::new()));
        let (h, d) = (hold.clone(), deliveries.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let (h, d) = (h.clone(), d.clone());
                std::thread::spawn(move || serve_one(stream, &h, &d));
            }
        });
        Receiver { addr, hold, deliveries }
    }

    pub fn event_ids(&self) -> Vec<String> {
        self.deliveries.lock().unwrap().iter().map(|(id, _)| id.clone()).collect()
    }
}

fn serve_one(stream: TcpStream, hold: &AtomicBool, deliveries: &Mutex<Vec<(String, Value)>>) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut length = 0usize;
    let mut event_id = String::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            match name.trim().to_ascii_lowercase().as_str() {
                "content-length" => length = value.trim().parse().unwrap_or(0),
                "x-sigil-event-id" => event_id = value.trim().to_string(),
                _ => {}
            }
        }
    }
    let mut body = vec![0u8; length];
    if reader.read_exact(&mut body).is_err() {
        return;
    }
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    deliveries.lock().unwrap().push((event_id, body));
    if hold.load(Ordering::SeqCst) {
        // Never answers: the sender is killed while it waits.
        std::thread::sleep(Duration::from_secs(600));
        return;
    }
    let mut stream = stream;
    let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok");
}

/// Waits (polling) until `done` holds; panics after a minute, a bound for a hang, not a
/// measurement.
pub fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < Duration::from_secs(120), "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn sigil() -> Command {
    Command::new(env!("CARGO_BIN_EXE_sigil"))
}

fn apikey(data: &Path, role: &str) -> String {
    let out = sigil()
        .args(["apikey", "create", "--role", role, "--name", role, "--data-dir"])
        .arg(data)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// `sigil serve` with a config file; answers once `/healthz` does.
fn serve(config: &Path, addr: &str) -> Child {
    let child = sigil()
        .arg("serve")
        .arg("--config")
        .arg(config)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    wait_for("the service to answer", || {
        TcpStream::connect(addr).is_ok() && http(addr, "GET", "/healthz", None, None).0 == 200
    });
    child
}
