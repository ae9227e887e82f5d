//! A TCP proxy with weather: in front of the emulator it passes bytes
//! untouched, or, while a test says so, cuts requests or responses after a
//! random number of bytes, swallows everything in silence and then resets,
//! or refuses connections. It knows nothing of HTTP, so it breaks calls
//! where real networks do: anywhere. A cut request may or may not have
//! reached the service; a cut response leaves the client unsure whether a
//! call it sent took effect.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;

/// What the proxy does to traffic, from now until told otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Weather {
    /// Everything passes.
    Clear,
    /// A third of the chunks clients send are cut: a random prefix is
    /// forwarded, then both connections are reset.
    CutRequests,
    /// The same, for what the service answers.
    CutResponses,
    /// Connections are accepted and nothing passes either way; when the
    /// weather changes, every connection that went silent is reset.
    Silent,
    /// New connections are closed at once; open ones are reset.
    Refuse,
    /// A black hole: connections are accepted and nothing passes either
    /// way, and a connection caught in it stays so after the weather
    /// changes, as when packets are dropped and no reset ever comes: only
    /// the client's own timeout ends it.
    BlackHole,
}

/// What the proxy has done, for a test's report.
#[derive(Debug, Default)]
pub struct TransportStats {
    pub connections: AtomicU64,
    pub cut_requests: AtomicU64,
    pub cut_responses: AtomicU64,
    /// Connections that went silent (and were reset afterwards).
    pub silenced: AtomicU64,
    pub refused: AtomicU64,
    /// Connections caught in a black hole (never answered nor reset).
    pub black_holed: AtomicU64,
}

impl TransportStats {
    /// One line: how many of each fault.
    pub fn summary(&self) -> String {
        let n = |c: &AtomicU64| c.load(Ordering::Relaxed);
        format!(
            "{} connections: {} requests cut, {} responses cut, {} silenced then reset, {} refused, {} black-holed",
            n(&self.connections),
            n(&self.cut_requests),
            n(&self.cut_responses),
            n(&self.silenced),
            n(&self.refused),
            n(&self.black_holed)
        )
    }
}

/// The proxy; dropped, it stops accepting connections.
#[derive(Debug)]
pub struct TransportProxy {
    addr: SocketAddr,
    weather: watch::Sender<Weather>,
    pub stats: Arc<TransportStats>,
    task: tokio::task::JoinHandle<()>,
}

impl TransportProxy {
    /// Starts a proxy on a free loopback port forwarding to `upstream`
    /// (`http://127.0.0.1:PORT`), in clear weather. `seed` makes the cut
    /// points repeatable.
    pub async fn start(upstream: &str, seed: u64) -> Self {
        let target: SocketAddr = upstream
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .parse()
            .unwrap_or_else(|e| panic!("the proxy's upstream {upstream}: {e}"));
        let (listener, addr) = super::loopback::bind_loopback().await;
        let (weather, watching) = watch::channel(Weather::Clear);
        let stats = Arc::new(TransportStats::default());
        let counting = stats.clone();
        let task = tokio::spawn(async move {
            let mut n = 0u64;
            while let Ok((inbound, _)) = listener.accept().await {
                n += 1;
                counting.connections.fetch_add(1, Ordering::Relaxed);
                if *watching.borrow() == Weather::Refuse {
                    counting.refused.fetch_add(1, Ordering::Relaxed);
                    reset(&inbound);
                    continue;
                }
                let connection = Connection {
                    weather: watching.clone(),
                    stats: counting.clone(),
                    rng: fastrand::Rng::with_seed(seed ^ n.wrapping_mul(0x9E37_79B9_7F4A_7C15)),
                    silenced: false,
                };
                tokio::spawn(connection.run(inbound, target));
            }
        });
        Self {
            addr,
            weather,
            stats,
            task,
        }
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn set(&self, weather: Weather) {
        self.weather.send_replace(weather);
    }
}

impl Drop for TransportProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Drops the connection with a TCP reset rather than a clean close.
fn reset(stream: &TcpStream) {
    let _ = stream.set_zero_linger();
}

/// How a connection ended.
enum End {
    Closed,
    Reset,
}

struct Connection {
    weather: watch::Receiver<Weather>,
    stats: Arc<TransportStats>,
    rng: fastrand::Rng,
    silenced: bool,
}

impl Connection {
    async fn run(mut self, mut client: TcpStream, target: SocketAddr) {
        let Ok(mut upstream) = TcpStream::connect(target).await else {
            reset(&client);
            return;
        };
        if let End::Reset = self.pump(&mut client, &mut upstream).await {
            reset(&client);
            reset(&upstream);
        }
    }

    /// Copies both ways under the weather until either side closes or the
    /// weather breaks the connection.
    async fn pump(&mut self, client: &mut TcpStream, upstream: &mut TcpStream) -> End {
        let (mut from_client, mut to_client) = client.split();
        let (mut from_upstream, mut to_upstream) = upstream.split();
        let mut up = vec![0u8; 16 * 1024];
        let mut down = vec![0u8; 16 * 1024];
        loop {
            let (chunk, to, cuts) = tokio::select! {
                read = from_client.read(&mut up) => match read {
                    Ok(0) | Err(_) => return End::Closed,
                    Ok(n) => (&up[..n], &mut to_upstream, Weather::CutRequests),
                },
                read = from_upstream.read(&mut down) => match read {
                    Ok(0) | Err(_) => return End::Closed,
                    Ok(n) => (&down[..n], &mut to_client, Weather::CutResponses),
                },
                changed = self.weather.changed() => {
                    let now = *self.weather.borrow();
                    if changed.is_err() || now == Weather::Refuse
                        || (self.silenced && now != Weather::Silent) {
                        return End::Reset;
                    }
                    continue;
                }
            };
            let weather = *self.weather.borrow();
            match weather {
                Weather::BlackHole => {
                    self.stats.black_holed.fetch_add(1, Ordering::Relaxed);
                    return swallow(from_client).await;
                }
                Weather::Silent => {
                    if !self.silenced {
                        self.silenced = true;
                        self.stats.silenced.fetch_add(1, Ordering::Relaxed);
                    }
                }
                Weather::Refuse => return End::Reset,
                w if w == cuts && self.rng.u8(0..3) == 0 => {
                    let counter = match cuts {
                        Weather::CutRequests => &self.stats.cut_requests,
                        _ => &self.stats.cut_responses,
                    };
                    counter.fetch_add(1, Ordering::Relaxed);
                    let keep = self.rng.usize(0..chunk.len());
                    let _ = to.write_all(&chunk[..keep]).await;
                    let _ = to.flush().await;
                    return End::Reset;
                }
                _ => {
                    if to.write_all(chunk).await.is_err() {
                        return End::Reset;
                    }
                }
            }
        }
    }
}

/// Reads and drops what the client sends until it gives up.
async fn swallow(mut from_client: impl tokio::io::AsyncRead + Unpin) -> End {
    let mut sink = vec![0u8; 16 * 1024];
    while matches!(from_client.read(&mut sink).await, Ok(n) if n > 0) {}
    End::Closed
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    /// An echo server: what the proxy forwards comes back.
    async fn echo() -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let (mut r, mut w) = s.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                });
            }
        });
        format!("http://{addr}")
    }

    async fn round_trip(proxy: &TransportProxy, bytes: &[u8]) -> std::io::Result<Vec<u8>> {
        let addr = proxy.endpoint().trim_start_matches("http://").to_owned();
        let mut s = TcpStream::connect(addr).await?;
        let mut got = Vec::new();
        for _ in 0..30 {
            s.write_all(bytes).await?;
            let mut buf = vec![0u8; bytes.len()];
            let timeout = std::time::Duration::from_millis(300);
            match tokio::time::timeout(timeout, s.read_exact(&mut buf)).await {
                Ok(read) => read?,
                Err(_) => return Err(std::io::ErrorKind::TimedOut.into()),
            };
            got.extend_from_slice(&buf);
        }
        Ok(got)
    }

    #[tokio::test]
    async fn clear_weather_passes_everything_and_each_fault_breaks_connections() {
        let proxy = TransportProxy::start(&echo().await, 7).await;
        let ping = b"0123456789abcdef";
        assert_eq!(round_trip(&proxy, ping).await.unwrap(), ping.repeat(30));

        for weather in [Weather::CutRequests, Weather::CutResponses] {
            proxy.set(weather);
            assert!(round_trip(&proxy, ping).await.is_err(), "{weather:?}");
        }
        let s = &proxy.stats;
        assert!(s.cut_requests.load(Ordering::Relaxed) >= 1);
        assert!(s.cut_responses.load(Ordering::Relaxed) >= 1);

        proxy.set(Weather::Silent);
        let err = round_trip(&proxy, ping).await.unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::TimedOut);
        assert_eq!(s.silenced.load(Ordering::Relaxed), 1);

        proxy.set(Weather::Refuse);
        assert!(round_trip(&proxy, ping).await.is_err());
        assert!(s.refused.load(Ordering::Relaxed) >= 1);

        proxy.set(Weather::Clear);
        assert_eq!(round_trip(&proxy, ping).await.unwrap(), ping.repeat(30));
    }

    #[tokio::test]
    async fn a_silent_connection_is_reset_when_the_weather_clears() {
        let proxy = TransportProxy::start(&echo().await, 1).await;
        let addr = proxy.endpoint().trim_start_matches("http://").to_owned();
        proxy.set(Weather::Silent);
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"hello").await.unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        proxy.set(Weather::Clear);
        let mut buf = [0u8; 5];
        let read = tokio::time::timeout(std::time::Duration::from_secs(5), s.read(&mut buf))
            .await
            .expect("the silent connection ends when the weather clears");
        assert!(
            matches!(read, Err(_) | Ok(0)),
            "nothing of the swallowed bytes comes back: {read:?}"
        );
    }

    /// A connection caught in a black hole stays silent after the weather
    /// clears (only the client can end it), while new ones pass.
    #[tokio::test]
    async fn a_black_holed_connection_stays_silent_after_the_weather_clears() {
        let proxy = TransportProxy::start(&echo().await, 2).await;
        let addr = proxy.endpoint().trim_start_matches("http://").to_owned();
        proxy.set(Weather::BlackHole);
        let mut s = TcpStream::connect(&addr).await.unwrap();
        s.write_all(b"hello").await.unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        proxy.set(Weather::Clear);
        s.write_all(b"again").await.unwrap();
        let mut buf = [0u8; 5];
        let read =
            tokio::time::timeout(std::time::Duration::from_millis(500), s.read(&mut buf)).await;
        assert!(read.is_err(), "nothing comes back, nor a reset: {read:?}");
        assert_eq!(proxy.stats.black_holed.load(Ordering::Relaxed), 1);
        let ping = b"0123456789abcdef";
        assert_eq!(round_trip(&proxy, ping).await.unwrap(), ping.repeat(30));
    }
}
