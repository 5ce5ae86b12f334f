//! The reference async echo server that echo-lab's models are compared
//! with: tokio's current-thread runtime (one thread, like our `async` model),
//! the idiomatic tokio echo loop. Dev-only: tokio is a dev-dependency.
//!
//! ```sh
//! cargo build --release --example tokio_echo
//! echo-lab compare --also 'tokio=target/release/examples/tokio_echo {port}'
//! ```

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpSocket;

/// The listen backlog echo-lab's own servers use (`serve --backlog`'s
/// default), so that a burst of connects meets the same queue.
const BACKLOG: u32 = 4096;

fn main() -> std::io::Result<()> {
    let port: u16 = match std::env::args().nth(1).map(|p| p.parse()) {
        Some(Ok(port)) => port,
        _ => {
            eprintln!("usage: tokio_echo PORT");
            std::process::exit(2);
        }
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()?;
    runtime.block_on(async move {
        let socket = TcpSocket::new_v4()?;
        socket.set_reuseaddr(true)?;
        socket.bind(([127, 0, 0, 1], port).into())?;
        let listener = socket.listen(BACKLOG)?;
        println!("listening on {}", listener.local_addr()?);
        loop {
            let (mut stream, _) = listener.accept().await?;
            stream.set_nodelay(true)?;
            tokio::spawn(async move {
                let mut buffer = [0; 4096];
                loop {
                    match stream.read(&mut buffer).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => {
                            if stream.write_all(&buffer[..n]).await.is_err() {
                                return;
                            }
                        }
                    }
                }
            });
        }
    })
}
