//! A minimal blocking HTTP/1.1 client for loopback benchmarks: one request per
//! connection (`Connection: close`), JSON in and out.

use anyhow::{anyhow, bail, Context, Result};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// POSTs `body` to `path`; returns the status and the JSON body.
pub fn post_json(
    addr: SocketAddr,
    path: &str,
    body: &serde_json::Value,
    timeout: Duration,
) -> Result<(u16, serde_json::Value)> {
    let payload = body.to_string();
    let mut conn = TcpStream::connect_timeout(&addr, timeout)
        .with_context(|| format!("cannot connect to {addr}"))?;
    conn.set_read_timeout(Some(timeout))?;
    conn.set_write_timeout(Some(timeout))?;
    write!(
        conn,
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{payload}",
        payload.len()
    )?;
    let mut raw = Vec::new();
    conn.read_to_end(&mut raw)?;
    parse_response(&raw)
}

/// Status and JSON body of a whole response with a `Content-Length` body.
fn parse_response(raw: &[u8]) -> Result<(u16, serde_json::Value)> {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| anyhow!("the response has no header end"))?;
    let head = String::from_utf8_lossy(&raw[..split]);
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| anyhow!("bad status line: {head:?}"))?;
    let body = &raw[split + 4..];
    if body.is_empty() {
        bail!("HTTP {status} with an empty body");
    }
    Ok((status, serde_json::from_slice(body)?))
}

#[cfg(test)]
mod tests {
    #[test]
    fn parses_status_and_body() {
        let raw = b"HTTP/1.1 400 Bad Request\r\ncontent-length: 2\r\n\r\n{}";
        let (status, body) = super::parse_response(raw).unwrap();
        assert_eq!(status, 400);
        assert!(body.is_object());
    }
}
