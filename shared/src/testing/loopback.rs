//! Ports on loopback: a free one for a binary's metrics address, and a
//! bound listener for the test proxies.

/// A free port on loopback, for a binary's metrics address.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("finding a free port: {e}"))
}

/// A listener on a free loopback port, for the test proxies.
pub(super) async fn bind_loopback() -> (tokio::net::TcpListener, std::net::SocketAddr) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap_or_else(|e| panic!("binding a proxy port: {e}"));
    let addr = listener
        .local_addr()
        .unwrap_or_else(|e| panic!("proxy address: {e}"));
    (listener, addr)
}
