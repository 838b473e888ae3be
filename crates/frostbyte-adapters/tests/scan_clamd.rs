//! The clamd adapter against a small in-test server that speaks clamd's INSTREAM protocol (over TCP and over a
//! Unix socket) and flags the EICAR test string, plus the fail-closed cases: nothing listening, a stalled
//! server, an error reply. No ClamAV signature database is available offline, so the server stands in for it.

use std::time::Duration;

use frostbyte_adapters::scan::ClamdScanner;
use frostbyte_core::scan::{ScanError, ScanResult, ScanVerdict, Scanner, check};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

const EICAR: &[u8] = br"X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*";

/// What the stand-in does with a session.
#[derive(Clone, Copy)]
enum Mode {
    /// Scan: `FOUND` for EICAR, `OK` otherwise. Also checks the framing (chunks never exceed 64 KiB).
    Scan,
    /// Refuse like clamd past `StreamMaxLength`.
    SizeLimit,
    /// Accept and never answer.
    Stall,
}

async fn session<S: AsyncRead + AsyncWrite + Unpin>(mut sock: S, mode: Mode) {
    let mut cmd = [0u8; 10];
    if sock.read_exact(&mut cmd).await.is_err() || &cmd != b"zINSTREAM\0" {
        let _ = sock.write_all(b"UNKNOWN COMMAND\0").await;
        return;
    }
    if let Mode::Stall = mode {
        tokio::time::sleep(Duration::from_secs(60)).await;
        return;
    }
    let mut data = Vec::new();
    loop {
        let mut len = [0u8; 4];
        if sock.read_exact(&mut len).await.is_err() {
            return;
        }
        let n = u32::from_be_bytes(len) as usize;
        if n == 0 {
            break;
        }
        assert!(n <= 64 * 1024, "chunks are at most 64 KiB");
        let mut chunk = vec![0u8; n];
        if sock.read_exact(&mut chunk).await.is_err() {
            return;
        }
        data.extend_from_slice(&chunk);
    }
    let reply: Vec<u8> = match mode {
        Mode::SizeLimit => b"INSTREAM size limit exceeded. ERROR\0".to_vec(),
        _ if data.windows(EICAR.len()).any(|w| w == EICAR) => b"stream: Eicar-Test-Signature FOUND\0".to_vec(),
        _ => b"stream: OK\0".to_vec(),
    };
    let _ = sock.write_all(&reply).await;
}

async fn tcp_server(mode: Mode) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((sock, _)) = listener.accept().await {
            tokio::spawn(session(sock, mode));
        }
    });
    format!("clamd://{addr}")
}

fn scanner(url: &str, timeout: Duration) -> ClamdScanner {
    ClamdScanner::from_url(url, timeout).expect("valid clamd url")
}

#[tokio::test]
async fn tcp_clean_and_infected() {
    let s = scanner(&tcp_server(Mode::Scan).await, Duration::from_secs(5));
    assert_eq!(s.scan(b"just some text").await, Ok(ScanVerdict::Clean));
    assert_eq!(s.scan(EICAR).await, Ok(ScanVerdict::Infected { signature: "Eicar-Test-Signature".into() }));
    // Spread over several chunks, with the signature straddling a chunk boundary.
    let mut big = vec![b'x'; 64 * 1024 - 10];
    big.extend_from_slice(EICAR);
    big.extend(vec![b'y'; 200_000]);
    assert!(matches!(s.scan(&big).await, Ok(ScanVerdict::Infected { .. })));
    assert_eq!(s.scan(&vec![b'z'; 300_000]).await, Ok(ScanVerdict::Clean));
    assert_eq!(s.scan(b"").await, Ok(ScanVerdict::Clean), "an empty stream is just the terminator");
    assert_eq!(check(&s, EICAR).await.unwrap().result, ScanResult::Quarantined);
    assert_eq!(check(&s, b"fine").await.unwrap().result, ScanResult::Clean);
}

#[cfg(unix)]
#[tokio::test]
async fn unix_socket_clean_and_infected() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("clamd.sock");
    let listener = tokio::net::UnixListener::bind(&path).unwrap();
    tokio::spawn(async move {
        while let Ok((sock, _)) = listener.accept().await {
            tokio::spawn(session(sock, Mode::Scan));
        }
    });
    let s = scanner(&format!("clamd+unix://{}", path.display()), Duration::from_secs(5));
    assert_eq!(s.scan(b"hello").await, Ok(ScanVerdict::Clean));
    assert!(
        matches!(s.scan(EICAR).await, Ok(ScanVerdict::Infected { signature }) if signature == "Eicar-Test-Signature")
    );
}

#[tokio::test]
async fn nothing_listening_fails_closed() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let s = scanner(&format!("clamd://127.0.0.1:{port}"), Duration::from_secs(5));
    assert!(matches!(s.scan(b"hello").await, Err(ScanError::Unavailable(_))));
    assert!(check(&s, b"hello").await.is_err(), "never clean");
    let s = scanner("clamd+unix:///nonexistent/frostbyte/clamd.sock", Duration::from_secs(5));
    assert!(matches!(s.scan(b"hello").await, Err(ScanError::Unavailable(_))));
}

#[tokio::test]
async fn a_stalled_scanner_times_out_and_an_error_reply_is_an_error() {
    let s = scanner(&tcp_server(Mode::Stall).await, Duration::from_millis(300));
    assert!(matches!(s.scan(b"hello").await, Err(ScanError::Timeout(_))));
    let s = scanner(&tcp_server(Mode::SizeLimit).await, Duration::from_secs(5));
    assert!(matches!(s.scan(b"hello").await, Err(ScanError::Refused(r)) if r.contains("size limit")));
}

#[test]
fn the_resolver_picks_the_adapter_from_config() {
    let t = Duration::from_secs(1);
    assert_eq!(frostbyte_adapters::resolve::scanner("none", t).unwrap().name(), "none");
    assert!(!frostbyte_adapters::resolve::scanner("none", t).unwrap().inspects());
    assert_eq!(frostbyte_adapters::resolve::scanner("clamd://127.0.0.1:3310", t).unwrap().name(), "clamd");
    assert_eq!(frostbyte_adapters::resolve::scanner("clamd+unix:///run/clamd.sock", t).unwrap().name(), "clamd");
    for bad in ["", "clean", "clamd://nohost", "icap://av:1344"] {
        assert!(frostbyte_adapters::resolve::scanner(bad, t).is_err(), "{bad}");
    }
}
