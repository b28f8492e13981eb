//! `socksify-cli`: what the `socksify` wrapper needs and a shell script
//! cannot do, one subcommand per module. The wrapper runs it for
//! `socksify --check` and `socksify --version`; it is installed next to
//! the library (`PREFIX/lib/socksify/`), not on the PATH.

mod check;
mod supervise;

const USAGE: &str = "\
usage: socksify-cli check [HOST:PORT]   check the configured proxies (socksify --check)
       socksify-cli version             print the version (socksify --version)
       socksify-cli validate            exit 2 with the error on stdout if the
                                        SOCKSIFY_* configuration is malformed
       socksify-cli supervise [--] PROGRAM [ARGS...]
                                        run PROGRAM under the seccomp supervisor (socksify --supervise)";

/// `validate`: the configuration as the library will read it. The error
/// goes to stdout, for the wrapper to name the option the user typed.
fn validate() -> i32 {
    match socksify_proto::config::Config::from_lookup(|name| std::env::var(name).ok()) {
        Ok(_) => 0,
        Err(e) => {
            println!("{e}");
            2
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let code = match args.first().map(String::as_str) {
        Some("check") => check::main(&args[1..]),
        Some("supervise") => supervise::main(&args[1..]),
        Some("validate") if args.len() == 1 => validate(),
        Some("version") if args.len() == 1 => {
            println!("socksify {}", env!("CARGO_PKG_VERSION"));
            0
        }
        Some("-h" | "--help") => {
            println!("{USAGE}");
            0
        }
        _ => {
            eprintln!("{USAGE}");
            2
        }
    };
    std::process::exit(code);
}
