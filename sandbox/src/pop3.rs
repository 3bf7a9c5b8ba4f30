//! Fake Exchange pop3 (in progress).

use std::sync::Arc;

use tokio::net::TcpStream;

use crate::Shared;

pub(crate) async fn serve(shared: Arc<Shared>, tcp: TcpStream, implicit_tls: bool) {
    let _ = (shared, tcp, implicit_tls);
}
