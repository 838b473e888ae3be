//! The `clamd` adapter: ClamAV's daemon, spoken to with `zINSTREAM` over TCP or a Unix socket.
//!
//! Protocol (clamd(8)): send `zINSTREAM\0`, then the file as chunks, each prefixed with its length as a 4-byte
//! big-endian integer, then a zero-length chunk. clamd answers one NUL-terminated line: `stream: OK`,
//! `stream: <signature> FOUND`, or `<reason> ERROR` (for example `INSTREAM size limit exceeded. ERROR`).
//!
//! Every step runs under one deadline: a scanner that cannot be reached, stalls or answers something else is an
//! error (fail closed), never a clean verdict. One connection per file: clamd closes INSTREAM sessions after
//! the reply anyway.

use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;
use frostbyte_core::scan::{ScanError, ScanVerdict, Scanner};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Bytes per INSTREAM chunk.
const CHUNK_BYTES: usize = 64 * 1024;
/// Longest reply read before giving up on it.
const MAX_REPLY_BYTES: usize = 4096;

/// Where clamd listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClamdAddress {
    /// `host:port`.
    Tcp(String),
    Unix(PathBuf),
}

/// A clamd client.
#[derive(Debug, Clone)]
pub struct ClamdScanner {
    address: ClamdAddress,
    timeout: Duration,
}

impl ClamdScanner {
    pub fn new(address: ClamdAddress, timeout: Duration) -> Self {
        ClamdScanner { address, timeout }
    }

    /// Parses `clamd://host:port` or `clamd+unix:///path`; `Err` says what is expected.
    pub fn from_url(url: &str, timeout: Duration) -> Result<Self, String> {
        if let Some(rest) = url.strip_prefix("clamd+unix://") {
            if !rest.starts_with('/') {
                return Err("expected clamd+unix:///absolute/path/to/clamd.sock".into());
            }
            return Ok(ClamdScanner::new(ClamdAddress::Unix(PathBuf::from(rest)), timeout));
        }
        if let Some(rest) = url.strip_prefix("clamd://") {
            let hostport = rest.trim_end_matches('/');
            let valid = hostport
                .rsplit_once(':')
                .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0));
            if !valid || hostport.contains('/') {
                return Err("expected clamd://host:port".into());
            }
            return Ok(ClamdScanner::new(ClamdAddress::Tcp(hostport.to_owned()), timeout));
        }
        Err("expected clamd://host:port or clamd+unix:///path".into())
    }

    pub fn address(&self) -> &ClamdAddress {
        &self.address
    }

    async fn scan_inner(&self, bytes: &[u8]) -> Result<ScanVerdict, ScanError> {
        match &self.address {
            ClamdAddress::Tcp(addr) => {
                let stream = tokio::net::TcpStream::connect(addr)
                    .await
                    .map_err(|e| ScanError::Unavailable(format!("cannot connect to clamd at {addr}: {}", e.kind())))?;
                instream(stream, bytes).await
            }
            ClamdAddress::Unix(path) => {
                #[cfg(unix)]
                {
                    let stream = tokio::net::UnixStream::connect(path).await.map_err(|e| {
                        ScanError::Unavailable(format!("cannot connect to clamd at {}: {}", path.display(), e.kind()))
                    })?;
                    instream(stream, bytes).await
                }
                #[cfg(not(unix))]
                {
                    Err(ScanError::Unavailable(format!("unix sockets are not supported here ({})", path.display())))
                }
            }
        }
    }
}

/// Runs one INSTREAM session on a connected stream.
async fn instream<S: AsyncRead + AsyncWrite + Unpin>(mut stream: S, bytes: &[u8]) -> Result<ScanVerdict, ScanError> {
    let io = |e: std::io::Error| ScanError::Unavailable(format!("clamd connection failed: {}", e.kind()));
    stream.write_all(b"zINSTREAM\0").await.map_err(io)?;
    for chunk in bytes.chunks(CHUNK_BYTES) {
        let len = u32::try_from(chunk.len()).expect("chunks are 64 KiB");
        stream.write_all(&len.to_be_bytes()).await.map_err(io)?;
        if let Err(e) = stream.write_all(chunk).await {
            // clamd closes the connection mid-stream when a size limit is passed; its reply says why.
            return match read_reply(&mut stream).await {
                Ok(reply) if !reply.is_empty() => parse_reply(&reply),
                _ => Err(io(e)),
            };
        }
    }
    stream.write_all(&0u32.to_be_bytes()).await.map_err(io)?;
    stream.flush().await.map_err(io)?;
    let reply = read_reply(&mut stream).await.map_err(io)?;
    parse_reply(&reply)
}

/// Reads up to the terminating NUL (or the end of the stream).
async fn read_reply<S: AsyncRead + Unpin>(stream: &mut S) -> std::io::Result<String> {
    let mut reply = Vec::new();
    let mut buf = [0u8; 512];
    loop {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        reply.extend_from_slice(&buf[..n]);
        if let Some(end) = reply.iter().position(|&b| b == 0) {
            reply.truncate(end);
            break;
        }
        if reply.len() > MAX_REPLY_BYTES {
            break;
        }
    }
    Ok(String::from_utf8_lossy(&reply).into_owned())
}

/// Interprets clamd's reply to INSTREAM.
pub fn parse_reply(reply: &str) -> Result<ScanVerdict, ScanError> {
    let line = reply.trim_end_matches(['\0', '\n', '\r']).trim();
    if line.is_empty() {
        return Err(ScanError::Protocol("clamd closed the connection without a reply".into()));
    }
    if let Some(reason) = line.strip_suffix(" ERROR") {
        let reason = reason.strip_prefix("stream: ").unwrap_or(reason).trim_end_matches('.');
        return Err(ScanError::Refused(reason.chars().take(200).collect()));
    }
    let Some(result) = line.strip_prefix("stream: ") else {
        return Err(ScanError::Protocol(format!("unexpected reply {:?}", line.chars().take(80).collect::<String>())));
    };
    if result == "OK" {
        return Ok(ScanVerdict::Clean);
    }
    if let Some(signature) = result.strip_suffix(" FOUND")
        && !signature.trim().is_empty()
    {
        return Ok(ScanVerdict::Infected { signature: signature.trim().chars().take(200).collect() });
    }
    Err(ScanError::Protocol(format!("unexpected reply {:?}", line.chars().take(80).collect::<String>())))
}

#[async_trait]
impl Scanner for ClamdScanner {
    fn name(&self) -> &'static str {
        "clamd"
    }

    async fn scan(&self, bytes: &[u8]) -> Result<ScanVerdict, ScanError> {
        match tokio::time::timeout(self.timeout, self.scan_inner(bytes)).await {
            Ok(result) => result,
            Err(_) => Err(ScanError::Timeout(self.timeout.as_secs().max(1))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_are_parsed() {
        assert_eq!(parse_reply("stream: OK\0"), Ok(ScanVerdict::Clean));
        assert_eq!(
            parse_reply("stream: Eicar-Test-Signature FOUND"),
            Ok(ScanVerdict::Infected { signature: "Eicar-Test-Signature".into() })
        );
        assert!(
            matches!(parse_reply("INSTREAM size limit exceeded. ERROR"), Err(ScanError::Refused(r)) if r == "INSTREAM size limit exceeded")
        );
        assert!(matches!(parse_reply(""), Err(ScanError::Protocol(_))));
        assert!(matches!(parse_reply("PONG"), Err(ScanError::Protocol(_))));
        assert!(matches!(parse_reply("stream:  FOUND"), Err(ScanError::Protocol(_))));
    }

    #[test]
    fn urls_are_parsed() {
        let t = Duration::from_secs(1);
        assert_eq!(
            ClamdScanner::from_url("clamd://127.0.0.1:3310", t).unwrap().address(),
            &ClamdAddress::Tcp("127.0.0.1:3310".into())
        );
        assert_eq!(
            ClamdScanner::from_url("clamd+unix:///run/clamd.sock", t).unwrap().address(),
            &ClamdAddress::Unix("/run/clamd.sock".into())
        );
        for bad in ["clamd://", "clamd://host", "clamd://host:notaport", "clamd+unix://relative", "http://x:1"] {
            assert!(ClamdScanner::from_url(bad, t).is_err(), "{bad}");
        }
    }
}
