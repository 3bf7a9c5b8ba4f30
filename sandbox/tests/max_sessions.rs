//! `SandboxOptions::max_sessions` (`serve --max-sessions`): connections past the cap wait in the
//! accept queue until a session ends.

use std::time::Duration;

use sandbox::{Sandbox, SandboxOptions};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::TcpStream;
use tokio::time::timeout;

async fn greeting(r: &mut BufReader<TcpStream>, wait: Duration) -> Option<String> {
    let mut line = String::new();
    match timeout(wait, r.read_line(&mut line)).await {
        Ok(Ok(n)) if n > 0 => Some(line),
        _ => None,
    }
}

#[tokio::test]
async fn sessions_past_the_cap_wait_for_a_free_slot() {
    let sb = Sandbox::start(SandboxOptions {
        max_sessions: 1,
        ..Default::default()
    })
    .await
    .unwrap();
    let addr = sb.pop3_starttls_addr();
    let mut first = BufReader::new(TcpStream::connect(addr).await.unwrap());
    let g = greeting(&mut first, Duration::from_secs(5)).await;
    assert!(g.is_some_and(|l| l.starts_with("+OK")));
    let mut second = BufReader::new(TcpStream::connect(addr).await.unwrap());
    assert!(
        greeting(&mut second, Duration::from_millis(300))
            .await
            .is_none(),
        "a second session must wait while the only slot is taken"
    );
    drop(first);
    let g = greeting(&mut second, Duration::from_secs(5)).await;
    assert!(g.is_some_and(|l| l.starts_with("+OK")));
}

/// A burst of connections nobody has accepted yet (a proxy opening its upstream sessions at
/// once) must all complete: with std's backlog of 128 the 130th connect hangs.
#[tokio::test]
async fn listeners_queue_a_burst_of_connections() {
    let sb = Sandbox::start(SandboxOptions {
        max_sessions: 1,
        ..Default::default()
    })
    .await
    .unwrap();
    let addr = sb.pop3_starttls_addr();
    // The only slot is taken, so the sandbox accepts nothing more while we connect.
    let mut first = BufReader::new(TcpStream::connect(addr).await.unwrap());
    assert!(greeting(&mut first, Duration::from_secs(5)).await.is_some());
    let mut clients = Vec::new();
    for i in 0..200 {
        let c = timeout(Duration::from_secs(1), TcpStream::connect(addr))
            .await
            .unwrap_or_else(|_| panic!("connect {i} timed out: accept queue full"))
            .unwrap();
        clients.push(c);
    }
}
