//! A minimal WebSocket client (RFC 6455), enough for thousands of sockets
//! on a machine the server shares: text, ping, pong and close frames, whole
//! (unfragmented) messages, one small buffer per socket, and no copy of a
//! received frame. A full client library would cost the benchmark more CPU
//! and memory per socket than the server it measures.

use std::net::{IpAddr, SocketAddr};

use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::{TcpSocket, TcpStream},
};

/// The largest frame the benchmark accepts from the server.
const MAX_FRAME: usize = 1 << 20;
/// The largest upgrade response it reads.
const MAX_RESPONSE_HEAD: usize = 8 << 10;
/// What a socket's buffer starts at: a few events.
const BUFFER: usize = 2 << 10;
/// The mask of every client frame (any key does; the server checks that
/// frames are masked, not with what).
const MASK: [u8; 4] = [0x5a, 0x17, 0xc3, 0x2e];

/// A frame from the server; a text frame's bytes are read with
/// [`Socket::text`] until the next call to [`Socket::next`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// A text frame.
    Text,
    /// A ping, with its payload (answer with [`Socket::pong`]).
    Ping(Vec<u8>),
    /// A pong.
    Pong,
    /// A close frame: its code (0 if none) and reason.
    Close(u16, String),
}

/// One WebSocket connection.
pub struct Socket {
    stream: TcpStream,
    buffer: Vec<u8>,
    /// The start of unread bytes in `buffer`.
    start: usize,
    /// The current text frame's payload in `buffer`.
    text: (usize, usize),
    /// Bytes of the current frame, consumed at the next [`Socket::next`].
    consumed: usize,
}

impl Socket {
    /// Connects from `local` (any port) to `server`, upgrades on `path` with
    /// `authorization: Bearer <token>`, and checks for 101 Switching
    /// Protocols.
    pub async fn connect(
        local: IpAddr,
        server: SocketAddr,
        path: &str,
        token: &str,
    ) -> Result<Self, String> {
        let socket = match local {
            IpAddr::V4(_) => TcpSocket::new_v4(),
            IpAddr::V6(_) => TcpSocket::new_v6(),
        }
        .map_err(|error| format!("socket: {error}"))?;
        socket
            .bind(SocketAddr::new(local, 0))
            .map_err(|error| format!("bind {local}: {error}"))?;
        let mut stream = socket
            .connect(server)
            .await
            .map_err(|error| format!("connect {local} → {server}: {error}"))?;
        stream
            .set_nodelay(true)
            .map_err(|error| format!("TCP_NODELAY: {error}"))?;
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {server}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nAuthorization: Bearer {token}\r\n\r\n"
        );
        stream
            .write_all(request.as_bytes())
            .await
            .map_err(|error| format!("upgrade request: {error}"))?;
        let mut buffer = Vec::with_capacity(BUFFER);
        let head = loop {
            if let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
                break end + 4;
            }
            if buffer.len() > MAX_RESPONSE_HEAD {
                return Err("the upgrade response head is too long".into());
            }
            let read = stream
                .read_buf(&mut buffer)
                .await
                .map_err(|error| format!("upgrade response: {error}"))?;
            if read == 0 {
                return Err("the server closed the connection during the upgrade".into());
            }
        };
        let status_line = String::from_utf8_lossy(&buffer[..head]);
        let status_line = status_line.lines().next().unwrap_or_default();
        if !status_line.starts_with("HTTP/1.1 101") {
            return Err(format!("upgrade refused: {status_line}"));
        }
        Ok(Self {
            stream,
            buffer,
            start: head,
            text: (0, 0),
            consumed: 0,
        })
    }

    /// The next frame. Cancel-safe: a frame only partly received stays in
    /// the buffer.
    pub async fn next(&mut self) -> Result<Frame, String> {
        self.start += std::mem::take(&mut self.consumed);
        loop {
            if let Some(frame) = self.parse()? {
                return Ok(frame);
            }
            // Move the unread bytes to the front before reading more.
            if self.start > 0 {
                self.buffer.drain(..self.start);
                self.start = 0;
            }
            if self.buffer.capacity() - self.buffer.len() < 512 {
                self.buffer.reserve(BUFFER);
            }
            let read = self
                .stream
                .read_buf(&mut self.buffer)
                .await
                .map_err(|error| format!("read: {error}"))?;
            if read == 0 {
                return Err("the server closed the connection without a close frame".into());
            }
        }
    }

    /// The next text frame's payload, answering pings and passing over
    /// pongs on the way; a close frame is an error that gives its code and
    /// reason. Cancel-safe but while a pong is being written.
    pub async fn next_text(&mut self) -> Result<&[u8], String> {
        loop {
            match self.next().await? {
                Frame::Text => return Ok(self.text()),
                Frame::Ping(payload) => self.pong(&payload).await?,
                Frame::Pong => {}
                Frame::Close(code, reason) => return Err(format!("closed: {code} {reason}")),
            }
        }
    }

    /// The payload of the text frame [`Socket::next`] returned last.
    pub fn text(&self) -> &[u8] {
        &self.buffer[self.text.0..self.text.1]
    }

    /// A frame from the unread bytes, if a whole one is there.
    fn parse(&mut self) -> Result<Option<Frame>, String> {
        let bytes = &self.buffer[self.start..];
        let [first, second, ..] = *bytes else {
            return Ok(None);
        };
        if first & 0x80 == 0 {
            return Err("the server sent a fragmented message".into());
        }
        if second & 0x80 != 0 {
            return Err("the server sent a masked frame".into());
        }
        let (length, header) = match second & 0x7f {
            126 => match bytes.get(2..4) {
                Some(b) => (usize::from(u16::from_be_bytes([b[0], b[1]])), 4),
                None => return Ok(None),
            },
            127 => match bytes.get(2..10) {
                Some(b) => {
                    let length = u64::from_be_bytes(b.try_into().expect("8 bytes"));
                    (usize::try_from(length).unwrap_or(usize::MAX), 10)
                }
                None => return Ok(None),
            },
            length => (usize::from(length), 2),
        };
        if length > MAX_FRAME {
            return Err(format!("the server sent a frame of {length} bytes"));
        }
        if bytes.len() < header + length {
            return Ok(None);
        }
        let payload = &bytes[header..header + length];
        let frame = match first & 0x0f {
            0x1 => {
                self.text = (self.start + header, self.start + header + length);
                Frame::Text
            }
            0x9 => Frame::Ping(payload.to_vec()),
            0xa => Frame::Pong,
            0x8 => {
                let code = payload
                    .get(..2)
                    .map_or(0, |code| u16::from_be_bytes([code[0], code[1]]));
                let reason = String::from_utf8_lossy(payload.get(2..).unwrap_or_default());
                Frame::Close(code, reason.into_owned())
            }
            opcode => return Err(format!("the server sent a frame with opcode {opcode:#x}")),
        };
        self.consumed = header + length;
        Ok(Some(frame))
    }

    /// Sends a text frame.
    pub async fn send_text(&mut self, text: &str) -> Result<(), String> {
        self.send(0x1, text.as_bytes()).await
    }

    /// Answers a ping.
    pub async fn pong(&mut self, payload: &[u8]) -> Result<(), String> {
        self.send(0xa, payload).await
    }

    async fn send(&mut self, opcode: u8, payload: &[u8]) -> Result<(), String> {
        let mut frame = Vec::with_capacity(payload.len() + 8);
        frame.push(0x80 | opcode);
        match u16::try_from(payload.len()) {
            Ok(length @ 0..=125) => frame.push(0x80 | u8::try_from(length).expect("≤ 125")),
            Ok(length) => {
                frame.push(0x80 | 126);
                frame.extend_from_slice(&length.to_be_bytes());
            }
            Err(_) => return Err("a client frame over 64 KiB".into()),
        }
        frame.extend_from_slice(&MASK);
        frame.extend(
            payload
                .iter()
                .zip(MASK.iter().cycle())
                .map(|(byte, mask)| byte ^ mask),
        );
        self.stream
            .write_all(&frame)
            .await
            .map_err(|error| format!("write: {error}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    /// A server that answers the upgrade, then writes `frames` and reads
    /// what the client sends until it closes.
    async fn server(frames: Vec<u8>) -> (SocketAddr, tokio::task::JoinHandle<Vec<u8>>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            let mut request = Vec::new();
            while !request.ends_with(b"\r\n\r\n") {
                let mut byte = [0u8; 1];
                stream.read_exact(&mut byte).await.unwrap();
                request.push(byte[0]);
            }
            assert!(String::from_utf8_lossy(&request).contains("Authorization: Bearer t0k\r\n"));
            let mut answer =
                b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n".to_vec();
            answer.extend_from_slice(&frames);
            // Written in pieces, so frames arrive split across reads.
            for piece in answer.chunks(3) {
                stream.write_all(piece).await.unwrap();
                stream.flush().await.unwrap();
            }
            let mut received = Vec::new();
            let _ = stream.read_to_end(&mut received).await;
            received
        });
        (addr, task)
    }

    #[tokio::test]
    async fn frames_are_read_whole_and_answers_are_masked() {
        let long = "x".repeat(300);
        let mut frames = vec![0x81, 5];
        frames.extend_from_slice(b"hello");
        frames.extend_from_slice(&[0x81, 126, 0x01, 0x2c]);
        frames.extend_from_slice(long.as_bytes());
        frames.extend_from_slice(&[0x89, 2, b'p', b'!']);
        frames.extend_from_slice(&[0x88, 4, 0x0f, 0xa0, b'b', b'y']);
        let (addr, task) = server(frames).await;
        let mut socket = Socket::connect("127.0.0.1".parse().unwrap(), addr, "/ws", "t0k")
            .await
            .unwrap();
        assert_eq!(socket.next().await, Ok(Frame::Text));
        assert_eq!(socket.text(), b"hello");
        assert_eq!(socket.next().await, Ok(Frame::Text));
        assert_eq!(socket.text(), long.as_bytes());
        assert_eq!(socket.next().await, Ok(Frame::Ping(b"p!".to_vec())));
        socket.pong(b"p!").await.unwrap();
        assert_eq!(socket.next().await, Ok(Frame::Close(4000, "by".into())));
        drop(socket);
        let sent = task.await.unwrap();
        let unmasked: Vec<u8> = sent[6..]
            .iter()
            .zip(MASK.iter().cycle())
            .map(|(byte, mask)| byte ^ mask)
            .collect();
        assert_eq!(&sent[..2], &[0x8a, 0x82]);
        assert_eq!(&sent[2..6], &MASK);
        assert_eq!(unmasked, b"p!");
    }

    #[tokio::test]
    async fn text_frames_come_with_pings_answered_and_a_close_as_an_error() {
        let mut frames = vec![0x89, 1, b'p', 0x8a, 0];
        frames.extend_from_slice(&[0x81, 2, b'h', b'i']);
        frames.extend_from_slice(&[0x88, 5, 0x03, 0xe8, b'b', b'y', b'e']);
        let (addr, task) = server(frames).await;
        let mut socket = Socket::connect("127.0.0.1".parse().unwrap(), addr, "/ws", "t0k")
            .await
            .unwrap();
        assert_eq!(socket.next_text().await, Ok(&b"hi"[..]));
        assert_eq!(socket.next_text().await, Err("closed: 1000 bye".to_owned()));
        drop(socket);
        let sent = task.await.unwrap();
        assert_eq!(&sent[..2], &[0x8a, 0x81], "the ping was answered");
    }

    #[tokio::test]
    async fn a_refused_upgrade_says_what_the_server_answered() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            let mut buffer = [0u8; 1024];
            let _ = stream.read(&mut buffer).await;
            stream
                .write_all(b"HTTP/1.1 401 Unauthorized\r\ncontent-length: 0\r\n\r\n")
                .await
                .unwrap();
        });
        let refused = Socket::connect("127.0.0.1".parse().unwrap(), addr, "/ws", "t0k").await;
        assert_eq!(
            refused.err().as_deref(),
            Some("upgrade refused: HTTP/1.1 401 Unauthorized")
        );
    }
}
