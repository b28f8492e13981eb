//! The `socksify-server` binary: parse the command line, run the server.

use socksify_server::cli::{self, Command};

fn main() {
    match cli::parse(std::env::args().skip(1)) {
        Ok(Command::Help) => print!("{}", cli::HELP),
        Ok(Command::Run(cfg)) => {
            if let Err(e) = socksify_server::server::run(*cfg) {
                eprintln!("socksify-server: {e}");
                std::process::exit(1);
            }
        }
        Err(e) => {
            eprintln!("socksify-server: {e}");
            std::process::exit(2);
        }
    }
}
