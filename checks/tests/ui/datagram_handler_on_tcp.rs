// A `DatagramHandler` served on a stream transport.
use socketserver::{DatagramHandler, DatagramRequest, Server, Tcp, Threading};

struct Echo;

impl DatagramHandler for Echo {
    fn handle(&self, req: &mut DatagramRequest) -> anyhow::Result<()> {
        req.wfile = req.data().to_vec();
        Ok(())
    }
}

fn main() -> std::io::Result<()> {
    let _server = Server::new(Threading::new(), Tcp::bind("127.0.0.1:0")?, Echo)?;
    Ok(())
}
