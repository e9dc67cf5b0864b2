//! A TCP proxy the test can cut and restore (the idea of crates.io's ChaosProxy): a
//! dependency "goes down" for the service while the shared server keeps running.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::io::copy_bidirectional;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

pub struct ChaosProxy {
    pub addr: SocketAddr,
    up: watch::Sender<bool>,
}

impl ChaosProxy {
    /// Listens on a free port and forwards every connection to `upstream`.
    pub async fn start(upstream: SocketAddr) -> Arc<ChaosProxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("proxy address");
        let (up, _) = watch::channel(true);
        let proxy = Arc::new(ChaosProxy { addr, up });
        let state = proxy.up.clone();
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                if !*state.borrow() {
                    // Down: refuse by closing at once.
                    drop(client);
                    continue;
                }
                let mut down = state.subscribe();
                tokio::spawn(async move {
                    let Ok(mut server) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    // Forward until either side closes or the proxy is cut.
                    tokio::select! {
                        _ = copy_bidirectional(&mut client, &mut server) => {}
                        _ = down.wait_for(|up| !*up) => {}
                    }
                });
            }
        });
        proxy
    }

    /// Closes every open connection and refuses new ones.
    pub fn cut(&self) {
        self.up.send_replace(false);
    }

    pub fn restore(&self) {
        self.up.send_replace(true);
    }
}
