// A `StreamHandler` served on a datagram transport.
use std::io::Write;

use socketserver::{Server, StreamHandler, StreamRequest, Threading, Udp};

struct Echo;

impl StreamHandler for Echo {
    fn handle(&self, req: &mut StreamRequest) -> anyhow::Result<()> {
        std::io::copy(&mut req.rfile, &mut req.wfile)?;
        req.wfile.flush()?;
        Ok(())
    }
}

fn main() -> std::io::Result<()> {
    let _server = Server::new(Threading::new(), Udp::bind("127.0.0.1:0")?, Echo)?;
    Ok(())
}
