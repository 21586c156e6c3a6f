// A `StreamHandler` under `Reactor`, which calls a `MessageHandler`.
use socketserver::{Reactor, Server, StreamHandler, StreamRequest, Tcp};

struct Echo;

impl StreamHandler for Echo {
    fn handle(&self, req: &mut StreamRequest) -> anyhow::Result<()> {
        std::io::copy(&mut req.rfile, &mut req.wfile)?;
        Ok(())
    }
}

fn main() -> std::io::Result<()> {
    let _server = Server::new(Reactor::new(), Tcp::bind("127.0.0.1:0")?, Echo)?;
    Ok(())
}
