//! The floor: a minimal WebSocket fan-out server that the same subscribers
//! measure. It runs as a process of its own (this binary, started with
//! `--serve-baseline`), as the server does, so each has its own open-file
//! limit, memory and CPU time; the benchmark tells it to publish over a
//! line-based control connection.
//!
//! Per socket it does the least a fan-out can: the upgrade (no credentials
//! checked, no Sec-WebSocket-Accept computed: the benchmark's client does
//! not check it), one `subscribed` frame, then each event's frame, encoded
//! once per event and written to every socket by the socket's own task (one
//! write system call per socket and event, as the server does). No
//! authentication, sessions, queues, offsets, history, pings or shutdown.
//! What the server costs beyond it is the price of what it does beyond it;
//! what the baseline costs is the machine's.

use std::{
    net::SocketAddr,
    process::Stdio,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use tokio::{
    io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader, Lines},
    net::{TcpListener, TcpStream, tcp::OwnedReadHalf, tcp::OwnedWriteHalf},
    process::{Child, Command},
    sync::broadcast,
};

use crate::{cpu::Meter, server::Memory};

/// The flag that makes the benchmark's binary serve as the baseline.
pub const SERVE_FLAG: &str = "--serve-baseline";

/// Serves as the baseline until stdin closes (the benchmark ended): the
/// fan-out on 127.0.0.1, and the control connection, whose addresses it
/// prints on stdout as `baseline <fan-out addr> <control addr>`. A control
/// line `<n> <payload bytes> <topic>` publishes the `n`th event; the answer
/// is its offset.
pub async fn serve_forever() -> Result<(), String> {
    let baseline = Baseline::start(&tokio::runtime::Handle::current()).await?;
    let control = TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|error| format!("baseline control bind: {error}"))?;
    let control_addr = control.local_addr().map_err(|error| error.to_string())?;
    println!("baseline {} {control_addr}", baseline.addr);
    let baseline = Arc::new(baseline);
    tokio::spawn(async move {
        while let Ok((stream, _)) = control.accept().await {
            let baseline = baseline.clone();
            tokio::spawn(async move {
                let (read, mut write) = stream.into_split();
                let mut lines = BufReader::new(read).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    let answer = match parse_publish(&line) {
                        Some((n, bytes, topic)) => {
                            let filler = "x".repeat(bytes);
                            baseline.publish(topic, n, &filler).to_string()
                        }
                        None => format!("error: not `<n> <payload bytes> <topic>`: {line}"),
                    };
                    if write
                        .write_all(format!("{answer}\n").as_bytes())
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            });
        }
    });
    // The benchmark holds stdin open for as long as it needs the baseline.
    let mut stdin = tokio::io::stdin();
    let mut sink = [0u8; 64];
    while stdin.read(&mut sink).await.is_ok_and(|read| read > 0) {}
    Ok(())
}

/// A control line: `<n> <payload bytes> <topic>`.
fn parse_publish(line: &str) -> Option<(u64, usize, &str)> {
    let mut fields = line.splitn(3, ' ');
    let n = fields.next()?.parse().ok()?;
    let bytes = fields.next()?.parse().ok()?;
    let topic = fields.next().filter(|topic| !topic.is_empty())?;
    Some((n, bytes, topic))
}

/// The baseline process, as the benchmark drives it.
pub struct BaselineProcess {
    child: Child,
    /// Where its fan-out listens.
    pub addr: SocketAddr,
    control: tokio::sync::Mutex<(Lines<BufReader<OwnedReadHalf>>, OwnedWriteHalf)>,
}

impl BaselineProcess {
    /// Starts this binary as the baseline and connects to its control port.
    pub async fn start() -> Result<Self, String> {
        let binary =
            std::env::current_exe().map_err(|error| format!("cannot find this binary: {error}"))?;
        let mut child = Command::new(binary)
            .arg(SERVE_FLAG)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .map_err(|error| format!("cannot start the baseline: {error}"))?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let line = tokio::time::timeout(
            Duration::from_secs(10),
            BufReader::new(stdout).lines().next_line(),
        )
        .await
        .map_err(|_| "the baseline did not start within 10s")?
        .map_err(|error| error.to_string())?
        .ok_or("the baseline exited before listening")?;
        let mut fields = line.split(' ').skip(1);
        let mut addr = || -> Result<SocketAddr, String> {
            fields
                .next()
                .and_then(|addr| addr.parse().ok())
                .ok_or_else(|| format!("unexpected line from the baseline: {line}"))
        };
        let (addr, control_addr) = (addr()?, addr()?);
        let control = TcpStream::connect(control_addr)
            .await
            .map_err(|error| format!("baseline control: {error}"))?;
        control
            .set_nodelay(true)
            .map_err(|error| error.to_string())?;
        let (read, write) = control.into_split();
        Ok(Self {
            child,
            addr,
            control: tokio::sync::Mutex::new((BufReader::new(read).lines(), write)),
        })
    }

    /// Publishes the `n`th event to `topic`; answers its offset.
    pub async fn publish(&self, topic: &str, n: u64, payload_bytes: usize) -> Result<u64, String> {
        let mut control = self.control.lock().await;
        let (lines, write) = &mut *control;
        write
            .write_all(format!("{n} {payload_bytes} {topic}\n").as_bytes())
            .await
            .map_err(|error| format!("baseline control: {error}"))?;
        let answer = lines
            .next_line()
            .await
            .map_err(|error| format!("baseline control: {error}"))?
            .ok_or("the baseline closed its control connection")?;
        answer
            .parse()
            .map_err(|_| format!("the baseline answered {answer}"))
    }

    /// Its resident memory.
    pub fn memory(&self) -> Option<Memory> {
        Memory::of(self.child.id()?)
    }

    /// Its CPU time.
    pub fn meter(&self) -> Meter {
        Meter::Process(self.child.id().unwrap_or_default())
    }
}

/// Events a slow socket may fall behind by before it misses some.
const BACKLOG: usize = 1024;

/// The baseline's fan-out, running.
pub struct Baseline {
    /// Where it listens.
    pub addr: SocketAddr,
    events: broadcast::Sender<Arc<[u8]>>,
    offset: AtomicU64,
    task: tokio::task::JoinHandle<()>,
}

impl Baseline {
    /// Starts listening on 127.0.0.1 on `runtime`.
    pub async fn start(runtime: &tokio::runtime::Handle) -> Result<Self, String> {
        let listener = runtime
            .spawn(TcpListener::bind("127.0.0.1:0"))
            .await
            .map_err(|error| error.to_string())?
            .map_err(|error| format!("baseline bind: {error}"))?;
        let addr = listener.local_addr().map_err(|error| error.to_string())?;
        let (events, _) = broadcast::channel(BACKLOG);
        let sender = events.clone();
        let task = runtime.spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let _ = stream.set_nodelay(true);
                // Subscribed from the accept on, so no event is missed.
                tokio::spawn(serve(stream, sender.subscribe()));
            }
        });
        Ok(Self {
            addr,
            events,
            offset: AtomicU64::new(0),
            task,
        })
    }

    /// Publishes the `n`th event to `topic` to every socket; answers its
    /// offset.
    pub fn publish(&self, topic: &str, n: u64, filler: &str) -> u64 {
        let offset = self.offset.fetch_add(1, Ordering::Relaxed) + 1;
        // The shape, field order and size of the server's event frame.
        let string = |text: &str| serde_json::to_string(text).unwrap_or_default();
        let json = format!(
            r#"{{"type":"event","id":"t","event":{{"channel":{},"namespace":"NAMESPACE_NOTIFICATIONS","offset":"{offset}","epoch":"0123456789abcdef","type":"bench.tick","payload":{{"n":{n},"text":{}}},"time":"2026-11-26T00:00:00.000000Z"}}}}"#,
            string(topic),
            string(filler),
        );
        let _ = self.events.send(text_frame(json.as_bytes()).into());
        offset
    }
}

impl Drop for Baseline {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// An unmasked text frame, as a server sends it.
fn text_frame(payload: &[u8]) -> Vec<u8> {
    let mut frame = Vec::with_capacity(payload.len() + 10);
    frame.push(0x81);
    match payload.len() {
        length @ 0..=125 => frame.push(u8::try_from(length).expect("≤ 125")),
        length @ 126..=0xffff => {
            frame.push(126);
            frame.extend_from_slice(&u16::try_from(length).expect("≤ 65535").to_be_bytes());
        }
        length => {
            frame.push(127);
            frame.extend_from_slice(&(length as u64).to_be_bytes());
        }
    }
    frame.extend_from_slice(payload);
    frame
}

/// One socket: the upgrade, the subscribe frame answered, then events.
async fn serve(mut stream: TcpStream, mut events: broadcast::Receiver<Arc<[u8]>>) {
    let mut buffer = Vec::with_capacity(1024);
    // The upgrade request.
    let head = loop {
        if let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            break end + 4;
        }
        match stream.read_buf(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    };
    buffer.drain(..head);
    let upgraded = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n";
    if stream.write_all(upgraded).await.is_err() {
        return;
    }
    // The subscribe frame: masked, short (under 126 bytes of payload).
    while buffer.len() < 2 || buffer.len() < 6 + usize::from(buffer[1] & 0x7f) {
        match stream.read_buf(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
    let subscribed = text_frame(br#"{"type":"subscribed","id":"t","subscribed":{}}"#);
    if stream.write_all(&subscribed).await.is_err() {
        return;
    }
    drop(buffer);
    loop {
        match events.recv().await {
            Ok(frame) => {
                if stream.write_all(&frame).await.is_err() {
                    return;
                }
            }
            // Counted as lost by the benchmark.
            Err(broadcast::error::RecvError::Lagged(_)) => {}
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fanout::ws::{Frame, Socket};

    #[test]
    fn control_lines_name_the_event_its_size_and_topic() {
        assert_eq!(parse_publish("7 64 topic:a b"), Some((7, 64, "topic:a b")));
        assert_eq!(parse_publish("7 64"), None);
        assert_eq!(parse_publish("x 64 topic:a"), None);
        assert_eq!(parse_publish("7 64 "), None);
    }

    #[test]
    fn frames_have_the_right_length_encoding() {
        assert_eq!(text_frame(b"hi"), [0x81, 2, b'h', b'i']);
        let medium = text_frame(&[b'x'; 300]);
        assert_eq!(&medium[..4], &[0x81, 126, 0x01, 0x2c]);
        assert_eq!(medium.len(), 304);
        let long = text_frame(&vec![b'x'; 70_000]);
        assert_eq!(&long[..2], &[0x81, 127]);
        assert_eq!(long.len(), 70_010);
    }

    #[tokio::test]
    async fn the_benchmark_client_subscribes_and_receives_events() {
        let baseline = Baseline::start(&tokio::runtime::Handle::current())
            .await
            .unwrap();
        let mut socket = Socket::connect(
            "127.0.0.1".parse().unwrap(),
            baseline.addr,
            "/api/v1/ws",
            "any",
        )
        .await
        .unwrap();
        socket
            .send_text(r#"{"type":"subscribe","id":"t","channel":"topic:x"}"#)
            .await
            .unwrap();
        assert_eq!(socket.next().await, Ok(Frame::Text));
        assert!(
            socket
                .text()
                .starts_with(br#"{"type":"subscribed","id":"t""#)
        );
        assert_eq!(baseline.publish("topic:x", 0, "filler"), 1);
        assert_eq!(socket.next().await, Ok(Frame::Text));
        assert_eq!(crate::fanout::event_offset(socket.text()), Some(1));
    }
}
