// A closure handler that holds an `Rc`, so it cannot be shared with the serving threads.
use std::cell::Cell;
use std::rc::Rc;

use socketserver::{Server, StreamRequest, Tcp, Threading};

fn main() -> std::io::Result<()> {
    let served = Rc::new(Cell::new(0_u64));
    let handler = move |_req: &mut StreamRequest| -> anyhow::Result<()> {
        served.set(served.get() + 1);
        Ok(())
    };
    let _server = Server::new(Threading::new(), Tcp::bind("127.0.0.1:0")?, handler)?;
    Ok(())
}
