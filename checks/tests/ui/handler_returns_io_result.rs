// A closure handler that returns `io::Result<()>` where handlers return `anyhow::Result<()>`.
use std::io::Write;

use socketserver::{Server, StreamRequest, Tcp, Threading};

fn main() -> std::io::Result<()> {
    let handler = |req: &mut StreamRequest| -> std::io::Result<()> { req.wfile.write_all(b"hello\n") };
    let _server = Server::new(Threading::new(), Tcp::bind("127.0.0.1:0")?, handler)?;
    Ok(())
}
