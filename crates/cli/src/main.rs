//! The `shieldcall` command (see `shieldcall --help`).

use clap::Parser;

fn main() {
    let cli = shieldcall::cli::Cli::parse();
    if let Some(filter) = &cli.log
        && let Err(e) = shieldcall::cli::start_log(filter)
    {
        eprintln!("error: --log {filter}: {e}");
        std::process::exit(2);
    }
    // One thread is plenty for one account, and keeps `listen` small.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            std::process::exit(1);
        }
    };
    let code = runtime.block_on(shieldcall::cli::run(cli));
    std::process::exit(code);
}
